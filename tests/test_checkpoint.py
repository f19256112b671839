import pytest
import torch

from elf_pipeline.artifacts.checkpoint import REQUIRED, load_checkpoint, load_model, save_checkpoint
from elf_pipeline.infra.io import ArtifactError
from elf_pipeline.models import build


class Payload:
    """An arbitrary picklable object: a weights-only loader must refuse it."""

    def __init__(self):
        self.value = 42


class Exploit:
    """Unpickling this with full pickle would create ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _save_model(path, arch="convnet-w4-d2", **meta):
    model = build(arch, 1, 3, 8)
    save_checkpoint(path, model, arch, 1, 3, 8, **meta)
    return model


def test_round_trip_restores_weights_and_metadata(tmp_path):
    path = tmp_path / "m.pt"
    original = _save_model(path, epoch=2, test_acc=0.5).eval()
    payload = load_checkpoint(path)
    assert all(key in payload for key in REQUIRED)
    assert payload["arch"] == "convnet-w4-d2" and payload["epoch"] == 2 and payload["test_acc"] == 0.5
    model, meta = load_model(path)
    assert not model.training and meta["num_classes"] == 3
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), original(x))
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_arbitrary_pickled_object_is_refused(tmp_path):
    path = tmp_path / "object.pt"
    torch.save({"state_dict": Payload(), "arch": "convnet"}, path)
    with pytest.raises(ArtifactError, match="not a loadable weights-only checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_pickle_payload_is_never_executed(tmp_path):
    path, marker = tmp_path / "evil.pt", tmp_path / "pwned"
    torch.save(Exploit(marker), path)
    with pytest.raises(ArtifactError, match="weights-only"):
        load_checkpoint(path)
    assert not marker.exists()


def test_missing_keys_are_listed(tmp_path):
    path = tmp_path / "partial.pt"
    torch.save({"state_dict": {}, "arch": "convnet"}, path)
    with pytest.raises(ArtifactError, match="lacks channels, num_classes, image_size"):
        load_checkpoint(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(ArtifactError, match="lacks state_dict, arch"):
        load_checkpoint(path)


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(ArtifactError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "absent.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01 definitely not a torch file")
    with pytest.raises(ArtifactError, match="garbage.pt: not a loadable"):
        load_checkpoint(garbage)


def test_weights_that_do_not_fit_the_architecture(tmp_path):
    path = tmp_path / "m.pt"
    model = build("convnet-w4-d2", 1, 3, 8)
    save_checkpoint(path, model, "convnet-w8-d2", 1, 3, 8)
    with pytest.raises(ArtifactError, match="do not fit architecture 'convnet-w8-d2'"):
        load_model(path)

"""Bad data and artifacts: each stage refuses with one clear line naming the file and the problem,
exits with status 2, and leaves previously finished outputs untouched."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import assert_accuracy_of

from elf_pipeline.cli import main
from elf_pipeline.stages.data import prepare_data
from elf_pipeline.stages.distill import run_distill
from elf_pipeline.stages.features import extract_features
from elf_pipeline.stages.students import train_students
from elf_pipeline.stages.teachers import train_teacher

TRAIN = {"epochs": 1, "batch_size": 64, "dsa": False, "eval_batch_size": 512}
ELF = {"loss_mode": "front_rear_task", "feature_loss": "ce"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A tiny finished study: data, synthetic set, teacher, features, one student result."""
    root = tmp_path_factory.mktemp("finished")
    prepare_data("digits", root / "data.h5", image_size=16, resize="interpolate", train_limit=200)
    run_distill(root / "data.h5", root / "synset.h5", "random", 2, {}, seed=0, device="cpu")
    train_teacher(root / "data.h5", root / "teacher.pt", root / "history.json", "convnet-w16", TRAIN, device="cpu")
    extract_features(root / "synset.h5", root / "teacher.pt", root / "features.h5", device="cpu")
    train_students(root / "data.h5", root / "synset.h5", root / "features.h5", "convnet-w16", ELF, TRAIN, [0],
                   root / "student.parquet", {"evaluation": "elf"}, device="cpu")
    return root


@pytest.fixture()
def study(finished: Path, tmp_path: Path) -> Path:
    workdir = tmp_path / "study"
    shutil.copytree(finished, workdir)
    return workdir


def digests(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir()) if p.is_file()}


def run_cli(capsys, *argv: str) -> str:
    code = main(["--log-level", "ERROR", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1, err
    return err[0]


def student_settings(**changes) -> str:
    evaluation = {**ELF, **changes.pop("evaluation", {})}
    return json.dumps({"arch": "convnet-w16", "evaluation": evaluation, "train": TRAIN, "seeds": [0], **changes})


def student_args(study: Path, synset: Path | None = None, features: Path | None = None, **evaluation) -> list[str]:
    return ["students", "--data", str(study / "data.h5"), "--synset", str(synset or study / "synset.h5"),
            "--features", str(features or study / "features.h5"), "--settings", student_settings(evaluation=evaluation),
            "--device", "cpu", "--out", str(study / "student.parquet")]


def features_args(study: Path, synset: Path | None = None, teacher: Path | None = None) -> list[str]:
    return ["features", "--synset", str(synset or study / "synset.h5"), "--teacher",
            str(teacher or study / "teacher.pt"), "--device", "cpu", "--out", str(study / "features.h5")]


def edit_h5(path: Path, name: str, change) -> None:
    with h5py.File(path, "r+") as h5:
        data = change(h5[name][()])
        del h5[name]
        h5.create_dataset(name, data=data)


def test_missing_dataset_root(study, capsys):
    before = digests(study)
    settings = {"source": "fashion_mnist", "root": str(study / "nowhere"), "image_size": 32}
    line = run_cli(capsys, "data", "--settings", json.dumps(settings), "--out", str(study / "data.h5"))
    assert str(study / "nowhere") in line and "apt-get install dataset-fashion-mnist" in line
    assert digests(study) == before


def test_truncated_data_file(study, capsys):
    bad = study / "truncated.h5"
    bad.write_bytes((study / "data.h5").read_bytes()[:2048])
    before = digests(study)
    line = run_cli(capsys, "distill", "--data", str(bad), "--settings", '{"method": "random", "ipc": 2}', "--device", "cpu",
                   "--out", str(study / "synset.h5"))
    assert str(bad) in line and "HDF5" in line
    assert digests(study) == before


def test_garbage_synthetic_set(study, capsys):
    bad = study / "garbage.h5"
    bad.write_bytes(b"not an hdf5 file at all" * 10)
    before = digests(study)
    line = run_cli(capsys, *features_args(study, synset=bad))
    assert str(bad) in line and "not a readable HDF5 file" in line
    assert digests(study) == before


def test_synthetic_set_without_labels(study, capsys):
    bad = study / "nolabels.h5"
    with h5py.File(bad, "w") as h5:
        h5["images"] = np.zeros((4, 1, 16, 16), np.float32)
    before = digests(study)
    line = run_cli(capsys, *features_args(study, synset=bad))
    assert str(bad) in line and "'labels' missing" in line
    assert digests(study) == before


def test_nan_in_synthetic_images(study, capsys):
    bad = study / "nan_synset.h5"
    shutil.copy(study / "synset.h5", bad)
    edit_h5(bad, "images", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 5, np.nan, a))
    before = digests(study)
    line = run_cli(capsys, *features_args(study, synset=bad))
    assert str(bad) in line and "1 non-finite values" in line
    assert digests(study) == before


def test_labels_out_of_range(study, capsys):
    bad = study / "labels.h5"
    shutil.copy(study / "synset.h5", bad)
    edit_h5(bad, "labels", lambda a: a + 10)
    before = digests(study)
    line = run_cli(capsys, *features_args(study, synset=bad))
    assert str(bad) in line and "labels outside 0..9" in line
    assert digests(study) == before


class Payload:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_checkpoint_with_pickled_object_is_refused(study, capsys):
    bad = study / "evil.pt"
    with open(bad, "wb") as handle:
        pickle.dump({"state_dict": Payload(), "arch": "convnet"}, handle)
    before = digests(study)
    line = run_cli(capsys, *features_args(study, teacher=bad))
    assert str(bad) in line and "not a loadable weights-only checkpoint" in line
    assert "code ran while loading" not in capsys.readouterr().out
    assert digests(study) == before


def test_checkpoint_missing_fields(study, capsys):
    bad = study / "bare.pt"
    torch.save({"state_dict": {}}, bad)
    before = digests(study)
    line = run_cli(capsys, *features_args(study, teacher=bad))
    assert str(bad) in line and "checkpoint lacks arch, channels, num_classes, image_size" in line
    assert digests(study) == before


def test_checkpoint_weights_of_another_architecture(study, capsys):
    bad = study / "other.pt"
    payload = torch.load(study / "teacher.pt", weights_only=True)
    payload["arch"] = "convnet-w32"
    torch.save(payload, bad)
    before = digests(study)
    line = run_cli(capsys, *features_args(study, teacher=bad))
    assert str(bad) in line and "weights do not fit architecture 'convnet-w32'" in line
    assert digests(study) == before


def test_stale_features(study, capsys):
    other = study / "other_synset.h5"
    run_distill(study / "data.h5", other, "random", 2, {}, seed=1, device="cpu")
    before = digests(study)
    line = run_cli(capsys, *student_args(study, synset=other))
    assert "stale features" in line and str(study / "features.h5") in line
    assert digests(study) == before


def test_feature_rows_do_not_match_synthetic_set(study, capsys):
    bad = study / "short_features.h5"
    shutil.copy(study / "features.h5", bad)
    edit_h5(bad, "layers/block3", lambda a: a[:-1])
    before = digests(study)
    line = run_cli(capsys, *student_args(study, features=bad))
    assert str(bad) in line and "19 feature rows for 20 synthetic images" in line
    assert digests(study) == before


def test_nan_in_features(study, capsys):
    bad = study / "nan_features.h5"
    shutil.copy(study / "features.h5", bad)
    edit_h5(bad, "layers/block3", lambda a: a * np.inf)
    before = digests(study)
    line = run_cli(capsys, *student_args(study, features=bad))
    assert str(bad) in line and "non-finite values" in line
    assert digests(study) == before


def test_missing_features_file(study, capsys):
    before = digests(study)
    line = run_cli(capsys, *student_args(study, features=study / "absent.h5"))
    assert str(study / "absent.h5") in line and "file not found" in line
    assert digests(study) == before


def test_teacher_layer_not_stored(study, capsys):
    before = digests(study)
    line = run_cli(capsys, *student_args(study, teacher_layer="block9"))
    assert "teacher layer 'block9' not stored (layers: block1, block2, block3)" in line
    assert digests(study) == before


def test_student_split_layer_missing(study, capsys):
    before = digests(study)
    line = run_cli(capsys, *student_args(study, student_layer="layer4_0"))
    assert "split layer 'layer4_0' does not exist (layers: block1, block2, block3)" in line
    assert digests(study) == before


def test_synthetic_images_of_another_size(study, capsys):
    bad = study / "small.h5"
    shutil.copy(study / "synset.h5", bad)
    edit_h5(bad, "images", lambda a: a[:, :, :8, :8])
    before = digests(study)
    line = run_cli(capsys, *student_args(study, synset=bad))
    assert str(bad) in line and "(1, 8, 8) do not match dataset (1, 16, 16)" in line
    assert digests(study) == before


def test_diverging_loss_writes_no_row(study, capsys):
    before = digests(study)
    args = student_args(study)
    args[args.index("--settings") + 1] = student_settings(train={**TRAIN, "lr": 1e30, "epochs": 3})
    line = run_cli(capsys, *args)
    assert "loss became nan" in line or "loss became inf" in line
    assert digests(study) == before


def test_unknown_architecture_on_the_command_line(study, capsys):
    before = digests(study)
    args = student_args(study)
    args[args.index("--settings") + 1] = student_settings(arch="resnet19")
    line = run_cli(capsys, *args)
    assert "unknown architecture 'resnet19'" in line
    assert digests(study) == before


def test_unknown_distillation_method(study, capsys):
    before = digests(study)
    line = run_cli(capsys, "distill", "--data", str(study / "data.h5"), "--settings", '{"method": "gm", "ipc": 2}',
                   "--device", "cpu", "--out", str(study / "synset.h5"))
    assert "unknown distillation method 'gm'" in line
    assert digests(study) == before


def test_ipc_larger_than_a_class(study, capsys):
    before = digests(study)
    line = run_cli(capsys, "distill", "--data", str(study / "data.h5"), "--settings", '{"method": "random", "ipc": 500}',
                   "--device", "cpu", "--out", str(study / "synset.h5"))
    assert "fewer than ipc=500" in line
    assert digests(study) == before


def test_out_of_memory_retries_with_smaller_batches(caplog):
    from elf_pipeline.engine.evaluation import retry_on_oom

    tried = []

    def run(size: int) -> int:
        tried.append(size)
        if size > 64:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return size

    assert retry_on_oom(run, 512, "evaluation") == 64
    assert tried == [512, 256, 128, 64]
    assert "retrying with 256" in caplog.text


@pytest.mark.float_path
def test_evaluate_survives_out_of_memory_with_the_same_accuracy(monkeypatch):
    import elf_pipeline.engine.evaluation as training
    from elf_pipeline.engine.training import build_seeded
    from elf_pipeline.models import build

    model = build_seeded(lambda: build("convnet-w16", 1, 10, 16), 0).eval()
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.randn(40, 1, 16, 16, generator=generator), torch.randint(0, 10, (40,), generator=generator)
    assert_accuracy_of(training.evaluate(model, images, labels, batch_size=40), model, images, labels)
    original, tried = training._evaluate, []

    def limited(model, images, labels, batch_size, *args):
        tried.append(batch_size)
        if batch_size > 10:
            raise torch.OutOfMemoryError("simulated")
        return original(model, images, labels, batch_size, *args)

    monkeypatch.setattr(training, "_evaluate", limited)
    # four chunks of 10 instead of one of 40: other kernels, the same predictions up to near-ties
    assert_accuracy_of(training.evaluate(model, images, labels, batch_size=40), model, images, labels)
    assert tried == [40, 20, 10]

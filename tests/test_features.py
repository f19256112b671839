import shutil

import h5py
import numpy as np
import pytest
import torch
from conftest import NUM_CLASSES, SYN_IPC, TEACHER_ARCH

from elf_pipeline.artifacts.checkpoint import load_checkpoint, load_model, save_checkpoint
from elf_pipeline.artifacts.feature_file import load_features
from elf_pipeline.artifacts.synset import read_synset
from elf_pipeline.infra.io import ArtifactError, open_h5, read_provenance, sha256_file
from elf_pipeline.models import build
from elf_pipeline.stages.distill import run_distill
from elf_pipeline.stages.features import extract_features

N_SYN = NUM_CLASSES * SYN_IPC


def test_every_layer_is_stored_with_teacher_outputs(features_h5, synset_h5, teacher_pt):
    model, meta = load_model(teacher_pt)
    images, _ = read_synset(synset_h5)
    with torch.no_grad():
        expected = model.layers(images)
    with open_h5(features_h5) as h5:
        names = [n.decode() if isinstance(n, bytes) else n for n in h5.attrs["layer_names"]]
        assert names == model.layer_names == list(h5["layers"])
        for name in names:
            stored = h5[f"layers/{name}"][:]
            assert stored.dtype == np.float32
            assert stored.shape == (N_SYN, *expected[name].shape[1:])
            np.testing.assert_allclose(stored, expected[name].numpy(), rtol=1e-5, atol=1e-6)
        assert h5.attrs["default_layer"] == model.split == "block3"
        assert h5.attrs["teacher_arch"] == TEACHER_ARCH
        assert float(h5.attrs["teacher_test_acc"]) == pytest.approx(meta["test_acc"])
        assert h5.attrs["synset_sha256"] == sha256_file(synset_h5)
        assert h5.attrs["teacher_sha256"] == sha256_file(teacher_pt)
        prov = read_provenance(h5)
    assert prov["stage"] == "features"
    assert prov["inputs"] == {"synset": sha256_file(synset_h5), "teacher": sha256_file(teacher_pt)}


def test_extract_features_returns_shapes_and_is_batch_size_independent(synset_h5, teacher_pt, features_h5, tmp_path):
    out = tmp_path / "f.h5"
    shapes = extract_features(synset_h5, teacher_pt, out, device="cpu", batch_size=3)
    # 16 px convnet-w8: 8x8, 4x4, 2x2 after the three pooled blocks
    assert shapes == {"block1": (8, 8, 8), "block2": (8, 4, 4), "block3": (8, 2, 2)}
    with open_h5(out) as small, open_h5(features_h5) as big:
        for name in shapes:
            np.testing.assert_allclose(small[f"layers/{name}"][:], big[f"layers/{name}"][:], rtol=1e-5, atol=1e-6)


def test_load_features_default_and_named_layer(features_h5, synset_h5):
    default = load_features(features_h5, None, synset_h5, N_SYN)
    assert default.layer == "block3" and default.values.shape == (N_SYN, 8, 2, 2)
    assert default.teacher_arch == TEACHER_ARCH and default.sha256 == sha256_file(features_h5)
    named = load_features(features_h5, "block1", synset_h5, N_SYN)
    with open_h5(features_h5) as h5:
        assert torch.equal(named.values, torch.from_numpy(h5["layers/block1"][:]))


def test_load_features_refuses_stale_features(features_h5, digits_h5, tmp_path):
    other = tmp_path / "other_synset.h5"
    run_distill(digits_h5, other, "random", SYN_IPC, {}, seed=1, device="cpu")
    with pytest.raises(ArtifactError, match="stale") as info:
        load_features(features_h5, None, other, N_SYN)
    assert str(features_h5) in str(info.value)


def test_load_features_unknown_layer_lists_layers(features_h5, synset_h5):
    with pytest.raises(ArtifactError, match="teacher layer 'block9' not stored.*block1, block2, block3"):
        load_features(features_h5, "block9", synset_h5, N_SYN)


def test_load_features_row_count_must_match(features_h5, synset_h5):
    with pytest.raises(ArtifactError, match=f"{N_SYN} feature rows for 7 synthetic images"):
        load_features(features_h5, None, synset_h5, 7)


def test_extract_features_rejects_mismatched_teacher(synset_h5, tmp_path):
    wrong_size = tmp_path / "t32.pt"
    save_checkpoint(wrong_size, build("convnet-w4", 1, NUM_CLASSES, 32), "convnet-w4", 1, NUM_CLASSES, 32)
    with pytest.raises(ArtifactError, match="do not fit teacher"):
        extract_features(synset_h5, wrong_size, tmp_path / "f.h5", device="cpu")
    few_classes = tmp_path / "t3.pt"
    save_checkpoint(few_classes, build("convnet-w4", 1, 3, 16), "convnet-w4", 1, 3, 16)
    with pytest.raises(ArtifactError, match=r"labels outside 0..2"):
        extract_features(synset_h5, few_classes, tmp_path / "f.h5", device="cpu")
    assert not (tmp_path / "f.h5").exists()


def test_extract_features_with_missing_teacher_names_it(synset_h5, tmp_path):
    missing = tmp_path / "absent.pt"
    with pytest.raises(ArtifactError, match="checkpoint not found") as info:
        extract_features(synset_h5, missing, tmp_path / "f.h5", device="cpu")
    assert str(missing) in str(info.value)


def test_read_synset_validation(synset_h5, tmp_path):
    bad = tmp_path / "nan.h5"
    shutil.copy(synset_h5, bad)
    with h5py.File(bad, "r+") as h5:
        images = h5["images"][:]
        images[0, 0, 0, 0] = np.nan
        h5["images"][...] = images
    with pytest.raises(ArtifactError, match="1 non-finite"):
        read_synset(bad)
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as h5:
        h5["images"] = np.zeros((2, 1, 4, 4), dtype=np.float32)
    with pytest.raises(ArtifactError, match="'labels'") as info:
        read_synset(empty)
    assert str(empty) in str(info.value)
    flat = tmp_path / "flat.h5"
    with h5py.File(flat, "w") as h5:
        h5["images"] = np.zeros((2, 16), dtype=np.float32)
        h5["labels"] = np.zeros(2, dtype=np.int64)
    with pytest.raises(ArtifactError, match="NCHW"):
        read_synset(flat)


def test_teacher_checkpoint_fixture_is_weights_only_loadable(teacher_pt):
    payload = load_checkpoint(teacher_pt)
    assert set(payload["state_dict"]) == set(build(TEACHER_ARCH, 1, NUM_CLASSES, 16).state_dict())

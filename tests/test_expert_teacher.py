"""``expert-teacher`` (elf_pipeline/stages/expert_teacher.py) through the CLI, and every expert it
must refuse: ZCA-whitened, another image size, a layout that is not the named architecture's,
batch-norm statistics it cannot restore, epochs outside the trajectory, a file that is no expert."""

from __future__ import annotations

import hashlib
import json
import shutil

import h5py
import pytest
import torch
from conftest import IMAGE_SIZE

from elf_pipeline.artifacts.checkpoint import load_checkpoint, load_model
from elf_pipeline.artifacts.expert_file import read_epochs
from elf_pipeline.cli import main
from elf_pipeline.infra.errors import ArtifactError
from elf_pipeline.stages.data import prepare_data
from elf_pipeline.stages.expert_teacher import teacher_from_expert
from elf_pipeline.stages.experts import train_expert

ARCH = "convnet-w8"
EXPERT = {"epochs": 2, "batch_size": 25, "dsa": False}


@pytest.fixture(scope="module")
def expert_h5(tmp_path_factory, digits_h5):
    out = tmp_path_factory.mktemp("expert") / "expert_0.h5"
    train_expert(digits_h5, out, ARCH, 0, EXPERT, device="cpu")
    return out


def relabelled(expert_h5, tmp_path, **attrs):
    copy = tmp_path / "relabelled.h5"
    shutil.copy(expert_h5, copy)
    with h5py.File(copy, "r+") as h5:
        h5.attrs.update(attrs)
    return copy


def test_cli_writes_the_chosen_epoch_as_a_checkpoint(expert_h5, digits_h5, tmp_path, capsys) -> None:
    out = tmp_path / "teacher.pt"
    assert main(["expert-teacher", "--expert", str(expert_h5), "--data", str(digits_h5), "--settings", '{"epoch": 1}',
                 "--device", "cpu", "--out", str(out)]) == 0
    payload = load_checkpoint(out)
    printed = capsys.readouterr().out.strip()
    assert printed == f"distillation model {ARCH} (epoch 1): test accuracy {payload['test_acc']:.4f}"
    assert payload["epoch"] == 1 and payload["source"] == "distillation" and payload["image_size"] == IMAGE_SIZE
    assert payload["expert_sha256"] == hashlib.sha256(expert_h5.read_bytes()).hexdigest()
    model, _ = load_model(out)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.equal(flat, read_epochs(expert_h5, [1])[0])
    assert main(["expert-teacher", "--expert", str(expert_h5), "--data", str(digits_h5), "--settings", '{"epoch": null}',
                 "--device", "cpu", "--out", str(tmp_path / "last.pt")]) == 0
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == EXPERT["epochs"]


@pytest.mark.parametrize("epoch", [0, 3])
def test_epoch_outside_the_trajectory_is_one_line(expert_h5, digits_h5, tmp_path, capsys, epoch) -> None:
    out = tmp_path / "x.pt"
    assert main(["expert-teacher", "--expert", str(expert_h5), "--data", str(digits_h5), "--settings", json.dumps({"epoch": epoch}),
                 "--device", "cpu", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"elf-pipeline expert-teacher: error: expert epoch {epoch} outside 1..2 (the epochs stored in {expert_h5})"]
    assert not out.exists()


def test_zca_expert_is_refused(digits_h5, tmp_path) -> None:
    zca = tmp_path / "zca.h5"
    train_expert(digits_h5, zca, ARCH, 0, {**EXPERT, "epochs": 1, "zca": True, "zca_eps": 0.1}, device="cpu")
    with pytest.raises(ArtifactError, match=r"zca\.h5: the expert was trained on ZCA-whitened data"):
        teacher_from_expert(zca, digits_h5, tmp_path / "t.pt", device="cpu")
    assert not (tmp_path / "t.pt").exists()


def test_expert_of_another_image_size_is_refused(expert_h5, tmp_path) -> None:
    small = tmp_path / "digits8.h5"
    prepare_data(source="digits", out=small, image_size=8, resize="interpolate", train_limit=20)
    with pytest.raises(ArtifactError, match=rf"expert of 1x{IMAGE_SIZE}px, 10 classes does not fit .*digits8\.h5"):
        teacher_from_expert(expert_h5, small, tmp_path / "t.pt", device="cpu")


def test_layout_of_another_architecture_is_refused(expert_h5, digits_h5, tmp_path) -> None:
    wider = relabelled(expert_h5, tmp_path, arch="convnet-w16")
    with pytest.raises(ArtifactError, match=r"relabelled\.h5: parameter layout does not match architecture 'convnet-w16'"):
        teacher_from_expert(wider, digits_h5, tmp_path / "t.pt", device="cpu")


def test_batch_norm_architecture_is_refused(expert_h5, digits_h5, tmp_path) -> None:
    batch_norm = relabelled(expert_h5, tmp_path, arch=f"{ARCH}-bn")  # same parameters as instance norm, plus statistics
    with pytest.raises(ArtifactError, match=r"'convnet-w8-bn' has batch-norm statistics, which expert files do not store"):
        teacher_from_expert(batch_norm, digits_h5, tmp_path / "t.pt", device="cpu")


def test_a_file_that_is_no_expert(digits_h5, tmp_path) -> None:
    with pytest.raises(ArtifactError, match=r"data\.h5: not an expert trajectory \(missing"):
        teacher_from_expert(digits_h5, digits_h5, tmp_path / "t.pt", device="cpu")

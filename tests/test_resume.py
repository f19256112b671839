"""A stage killed mid-way resumes from its saved state and ends with exactly the uninterrupted result."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from elf_pipeline.infra.resume import ResumeFile, resume_path
from elf_pipeline.stages.data import prepare_data
from elf_pipeline.stages.distill import run_distill
from elf_pipeline.stages.teachers import train_teacher


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("resume") / "data.h5"
    prepare_data("digits", path, image_size=16, resize="interpolate", train_limit=300)
    return path


TRAIN = {"epochs": 4, "batch_size": 64, "dsa": True}


def test_teacher_resumes_bit_identically(data, tmp_path, monkeypatch):
    reference = train_teacher(data, tmp_path / "ref.pt", tmp_path / "ref.json", "convnet-w16", TRAIN, seed=3)

    import elf_pipeline.engine.evaluation as training_module

    original = training_module.evaluate
    calls = {"n": 0}

    def evaluate_then_die(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # during epoch 3, after the state of epoch 2 was saved
            raise Killed
        return original(*args, **kwargs)

    monkeypatch.setattr(training_module, "evaluate", evaluate_then_die)
    out = tmp_path / "model.pt"
    with pytest.raises(Killed):
        train_teacher(data, out, tmp_path / "history.json", "convnet-w16", TRAIN, seed=3, resume_every=0)
    assert resume_path(out).is_file() and not out.exists()
    monkeypatch.setattr(training_module, "evaluate", original)
    resumed = train_teacher(data, out, tmp_path / "history.json", "convnet-w16", TRAIN, seed=3, resume_every=0)
    assert not resume_path(out).exists()
    assert [e["train_loss"] for e in resumed["epochs"]] == [e["train_loss"] for e in reference["epochs"]]
    assert resumed["test_acc"] == reference["test_acc"]
    ref_state = torch.load(tmp_path / "ref.pt", weights_only=True)["state_dict"]
    new_state = torch.load(out, weights_only=True)["state_dict"]
    assert all(torch.equal(ref_state[k], new_state[k]) for k in ref_state)
    assert json.loads((tmp_path / "history.json").read_text())["checkpoint_epoch"] == 4


def test_dm_resumes_bit_identically(data, tmp_path, monkeypatch):
    config = {"iterations": 6, "batch_real": 8, "dsa": True}
    run_distill(data, tmp_path / "ref.h5", "dm", 2, config, seed=1, device="cpu")

    import elf_pipeline.stages.distill.dm as dm_module

    original = dm_module.dm_loss
    calls = {"n": 0}

    def loss_then_die(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise Killed
        return original(*args, **kwargs)

    monkeypatch.setattr(dm_module, "dm_loss", loss_then_die)
    out = tmp_path / "synset.h5"
    with pytest.raises(Killed):
        run_distill(data, out, "dm", 2, config, seed=1, device="cpu", resume_every=0)
    assert resume_path(out).is_file() and not out.exists()
    monkeypatch.setattr(dm_module, "dm_loss", original)
    run_distill(data, out, "dm", 2, config, seed=1, device="cpu", resume_every=0)
    with h5py.File(tmp_path / "ref.h5") as ref, h5py.File(out) as new:
        assert np.array_equal(ref["images"][:], new["images"][:])
        assert np.array_equal(ref["history/loss"][:], new["history/loss"][:])
    assert not resume_path(out).exists()


def test_resume_state_of_another_config_is_discarded(tmp_path):
    path = tmp_path / "x.resume"
    ResumeFile(path, 0, fingerprint="a").save({"epoch": 3})
    assert ResumeFile(path, 0, fingerprint="a").load()["epoch"] == 3
    assert ResumeFile(path, 0, fingerprint="b").load() is None
    path.write_bytes(b"torn write")
    assert ResumeFile(path, 0, fingerprint="a").load() is None

"""The validation split: class-balanced, held out from every training stage, and reported beside
the test accuracy by students, teachers and references."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from conftest import copy_workflow

from elf_pipeline.artifacts.data_file import load_split, read_info
from elf_pipeline.datasets.base import DataSourceError
from elf_pipeline.engine.evaluation import evaluate
from elf_pipeline.stages.data import prepare_data
from elf_pipeline.stages.distill import run_distill
from elf_pipeline.stages.reference import train_full
from elf_pipeline.stages.students import train_students
from elf_pipeline.stages.teachers import train_teacher

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TRAIN = {"epochs": 2, "batch_size": 16, "eval_batch_size": 128, "dsa": False}


@pytest.fixture(scope="module")
def with_val(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("val") / "data.h5"
    prepare_data(source="digits", out=out, image_size=16, resize="interpolate", val_size=100, val_seed=3)
    return out


def test_val_is_class_balanced_and_held_out_of_train(with_val, tmp_path):
    plain = tmp_path / "plain.h5"
    prepare_data(source="digits", out=plain, image_size=16, resize="interpolate")
    with h5py.File(with_val) as h5, h5py.File(plain) as reference:
        val_labels, train_labels = h5["val/labels"][:], h5["train/labels"][:]
        assert np.bincount(val_labels, minlength=10).tolist() == [10] * 10
        assert len(train_labels) + len(val_labels) == len(reference["train/labels"])
        # every image of the original train split lands in exactly one of train and val
        whole = sorted(bytes(row) for row in reference["train/images"][:])
        split = sorted([bytes(row) for row in h5["train/images"][:]] + [bytes(row) for row in h5["val/images"][:]])
        assert split == whole
        assert len(h5["test/labels"]) == len(reference["test/labels"])
        # normalisation statistics come from the training images alone
        pixels = h5["train/images"][:].astype(np.float64) / 255.0
        np.testing.assert_allclose(h5.attrs["mean"], [pixels.mean()], rtol=1e-5)
        assert json.loads(h5.attrs["config"])["val_size"] == 100


def test_val_seed_changes_the_split(with_val, tmp_path):
    other = tmp_path / "other.h5"
    prepare_data(source="digits", out=other, image_size=16, resize="interpolate", val_size=100, val_seed=4)
    with h5py.File(with_val) as a, h5py.File(other) as b:
        assert not np.array_equal(a["val/images"][:], b["val/images"][:])


def test_val_size_out_of_range_names_the_problem(tmp_path):
    with pytest.raises(DataSourceError, match="val_size 5000: must lie in 10..") as error:
        prepare_data(source="digits", out=tmp_path / "x.h5", image_size=16, resize="interpolate", val_size=5000)
    assert len(str(error.value).splitlines()) == 1 and not (tmp_path / "x.h5").exists()


def test_test_limit_keeps_a_class_balanced_subset_of_the_test_split(tmp_path):
    plain, limited = tmp_path / "plain.h5", tmp_path / "limited.h5"
    prepare_data(source="digits", out=plain, image_size=16, resize="interpolate")
    prepare_data(source="digits", out=limited, image_size=16, resize="interpolate", test_limit=50)
    with h5py.File(plain) as whole, h5py.File(limited) as part:
        labels = part["test/labels"][:]
        assert np.bincount(labels, minlength=10).tolist() == [5] * 10
        rows = {bytes(row) for row in whole["test/images"][:]}
        assert all(bytes(row) in rows for row in part["test/images"][:])  # a subset, not new images
        np.testing.assert_array_equal(part["train/images"][:], whole["train/images"][:])  # train untouched
        assert json.loads(part.attrs["config"])["test_limit"] == 50
    with pytest.raises(DataSourceError, match="test_limit 3: must be at least one image per class"):
        prepare_data(source="digits", out=tmp_path / "x.h5", image_size=16, resize="interpolate", test_limit=3)


def test_students_teacher_and_reference_report_val_accuracy(with_val, tmp_path):
    synset = tmp_path / "synset.h5"
    run_distill(with_val, synset, "random", 2, {}, seed=0, device="cpu")
    identity = {"dataset": "digits", "method": "random", "ipc": 2, "evaluation": "baseline", "teacher": None}
    rows = train_students(with_val, synset, None, "convnet-w8-d2", {"loss_mode": "task"}, TRAIN, [0, 1],
                          tmp_path / "s.parquet", identity, device="cpu")
    assert rows["val_acc"].notna().all() and rows["val_acc"].between(0, 1).all()
    assert not np.allclose(rows["val_acc"], rows["test_acc"])  # a different split, not a copy of the test number
    assert rows["val_images"].tolist() == [100, 100]
    assert rows["test_images"].tolist() == [len(load_split(with_val, "test")[1])] * 2
    history = train_teacher(with_val, tmp_path / "t.pt", tmp_path / "t.json", "convnet-w8",
                            {"epochs": 1, "batch_size": 64, "dsa": False}, device="cpu")
    assert history["val_acc"] is not None and all("val_acc" in e for e in history["epochs"])
    from elf_pipeline.artifacts.checkpoint import load_model

    model, _ = load_model(tmp_path / "t.pt")
    images, labels, _ = load_split(with_val, "val")
    assert history["val_acc"] == pytest.approx(evaluate(model, images, labels))
    full = train_full(with_val, "convnet-w8-d2", TRAIN, [0], tmp_path / "f.parquet", {"dataset": "digits"},
                      train_limit=60, device="cpu")
    assert full["val_acc"].notna().all()
    assert read_info(with_val).num_classes == 10


def test_without_val_split_the_column_is_empty(digits_h5, synset_h5, tmp_path):
    identity = {"dataset": "digits", "method": "random", "ipc": 2, "evaluation": "baseline", "teacher": None}
    rows = train_students(digits_h5, synset_h5, None, "convnet-w8-d2", {"loss_mode": "task"}, TRAIN, [0],
                          tmp_path / "s.parquet", identity, device="cpu")
    assert rows["val_acc"].isna().all()


def test_workflow_passes_val_size_to_prepare_data(tmp_path):
    copy_workflow(REPO, tmp_path)
    config = yaml.safe_load((REPO / "tests" / "configs" / "smoke.yaml").read_text())
    config["datasets"]["digits"]["val_size"] = 100
    config["datasets"]["digits"]["test_limit"] = 200
    (tmp_path / "config" / "v.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run([SNAKEMAKE, "results/digits/data.h5", "-n", "-p", "--cores", "1", "--configfile", "config/v.yaml"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-3000:]
    assert re.search(r'data --settings .*"test_limit": 200, .*"val_seed": 0, "val_size": 100', text)

"""The full-real-data reference stage (``reference``, elf_pipeline/stages/reference.py) through the CLI
on the digits fixture: the rows it writes, their provenance, the class-balanced subset, errors."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest
import torch
from conftest import NUM_CLASSES, TRAIN_LIMIT

from elf_pipeline.cli import main
from elf_pipeline.infra.errors import InputError
from elf_pipeline.stages.reference import balanced_subset, train_full

ARCH = "convnet-w8"
TRAIN = {"epochs": 1, "batch_size": 10, "dsa": False, "lr": 0.05}


def cli_train_full(digits_h5, out, **settings) -> int:
    block = {"arch": ARCH, "train": TRAIN, "identity": {"dataset": "digits"}, **settings}
    return main(["reference", "--data", str(digits_h5), "--settings", json.dumps(block), "--device", "cpu",
                 "--out", str(out)])


@pytest.fixture(scope="module")
def rows(digits_h5, tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("full") / "convnet.parquet"
    assert cli_train_full(digits_h5, out, seeds=[3, 4], train_limit=20, subset_seed=1) == 0
    return pd.read_parquet(out)


def test_one_row_per_seed_with_protocol_and_provenance(rows, digits_h5) -> None:
    assert rows["seed"].tolist() == [3, 4] and (rows["arch"] == ARCH).all() and (rows["dataset"] == "digits").all()
    assert (rows["train_images"] == 20).all() and (rows["train_images_total"] == TRAIN_LIMIT).all()
    assert rows["test_acc"].between(0, 1).all() and rows["val_acc"].isna().all()  # the fixture has no val split
    assert (rows["train_epochs"] == 1).all() and (rows["train_batch_size"] == 10).all() and (rows["train_lr"] == 0.05).all()
    assert (rows["dsa_strategy"] == "none").all() and "train_dsa" not in rows
    assert (rows["data_sha256"] == hashlib.sha256(digits_h5.read_bytes()).hexdigest()).all()
    assert (rows["device"] == "cpu").all() and rows["device_peak_memory_mb"].isna().all()
    assert (rows["train_seconds"] > 0).all() and (rows["peak_memory_mb"] > 0).all()
    assert rows["config_hash"].nunique() == 1


def test_same_seed_same_accuracy_and_config_hash_tracks_the_config(rows, digits_h5, tmp_path) -> None:
    again = train_full(digits_h5, ARCH, TRAIN, [4], tmp_path / "a.parquet", {"dataset": "digits"}, train_limit=20,
                       subset_seed=1, device="cpu")
    assert again["test_acc"].iloc[0] == rows["test_acc"].iloc[1]
    assert again["config_hash"].iloc[0] != rows["config_hash"].iloc[0]  # seeds are part of the hashed config
    same_seeds = train_full(digits_h5, ARCH, TRAIN, [3, 4], tmp_path / "b.parquet", {"dataset": "digits"},
                            train_limit=20, subset_seed=1, device="cpu")
    assert same_seeds["config_hash"].iloc[0] == rows["config_hash"].iloc[0]
    assert same_seeds["test_acc"].tolist() == rows["test_acc"].tolist()
    other_subset = train_full(digits_h5, ARCH, TRAIN, [3], tmp_path / "c.parquet", {"dataset": "digits"},
                              train_limit=20, subset_seed=2, device="cpu")
    assert other_subset["config_hash"].iloc[0] != rows["config_hash"].iloc[0]


def test_limit_at_or_above_the_split_trains_on_everything(digits_h5, tmp_path) -> None:
    frame = train_full(digits_h5, ARCH, TRAIN, [0], tmp_path / "all.parquet", {"dataset": "digits"},
                       train_limit=TRAIN_LIMIT + 10, device="cpu")
    assert frame["train_images"].tolist() == [TRAIN_LIMIT] and frame["train_images_total"].tolist() == [TRAIN_LIMIT]
    assert pd.read_parquet(tmp_path / "all.parquet")["test_acc"].tolist() == frame["test_acc"].tolist()


def test_bad_limit_is_one_line_and_writes_nothing(digits_h5, tmp_path, capsys) -> None:
    out = tmp_path / "bad.parquet"
    assert cli_train_full(digits_h5, out, seeds=[0], train_limit=0) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["elf-pipeline reference: error: train_limit must be >= 1, got 0"]
    assert not out.exists()
    with pytest.raises(InputError, match="reference needs at least one seed"):
        train_full(digits_h5, ARCH, TRAIN, [], out, {})
    assert not out.exists()


def test_balanced_subset_per_class_counts_and_seeding() -> None:
    labels = torch.tensor([0] * 6 + [1] * 2 + [2] * 5)
    keep = balanced_subset(labels, 9, 3, torch.Generator().manual_seed(0))
    assert torch.bincount(labels[keep], minlength=3).tolist() == [3, 2, 3]  # class 1 has only 2 images
    assert torch.equal(keep, torch.sort(keep).values) and len(set(keep.tolist())) == len(keep)
    others = {tuple(balanced_subset(labels, 9, 3, torch.Generator().manual_seed(s)).tolist()) for s in range(8)}
    assert len(others) > 1  # the draw depends on the generator
    tiny = balanced_subset(torch.arange(NUM_CLASSES).repeat(3), 4, NUM_CLASSES, torch.Generator().manual_seed(0))
    assert len(tiny) == NUM_CLASSES  # fewer images than classes: still one of each class

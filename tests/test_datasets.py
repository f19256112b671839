"""Every supported dataset read from small files written in its real on-disk format, streaming
preparation and loading, and the dataset options of the config (paper presets included)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch
import yaml
from conftest import REPO, write_idx
from PIL import Image

from elf_pipeline import cli
from elf_pipeline.artifacts import data_file as data_h5
from elf_pipeline.artifacts.data_file import iter_batches, load_split, read_info, split_nbytes
from elf_pipeline.config import ConfigError, validate_schema
from elf_pipeline.config.checks import check_config
from elf_pipeline.datasets.catalog import IMAGENET_SUBSETS, PUBLISHED_STATS
from elf_pipeline.infra.io import ArtifactError, read_provenance
from elf_pipeline.stages.data import DataSourceError, prepare_data

RNG = np.random.default_rng(7)
SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")


def _read(path: Path) -> dict:
    with h5py.File(path, "r") as h5:
        return {"train_images": h5["train/images"][:], "train_labels": h5["train/labels"][:],
                "test_images": h5["test/images"][:], "test_labels": h5["test/labels"][:], "attrs": dict(h5.attrs)}


def _assert_stats(prepared: dict) -> None:
    """mean/std attrs are the per-channel statistics of the prepared train split on [0, 1]."""
    pixels = prepared["train_images"].reshape(-1, prepared["train_images"].shape[-1]) / 255.0
    np.testing.assert_allclose(prepared["attrs"]["mean"], pixels.mean(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(prepared["attrs"]["std"], pixels.std(axis=0), rtol=1e-5, atol=1e-7)


def _solid(path: Path, colour, size=(16, 16), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


# --------------------------------------------------------------------------- CIFAR-10 / CIFAR-100

def _cifar_rows(n: int) -> np.ndarray:
    return RNG.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def _pickle(path: Path, payload: dict) -> None:
    # The release is a Python 2 pickle whose str keys load as bytes: write bytes keys, protocol 2.
    path.write_bytes(pickle.dumps({k.encode(): v for k, v in payload.items()}, protocol=2))


@pytest.fixture
def cifar10_root(tmp_path) -> tuple[Path, dict]:
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    _pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": 4})
    batches = {}
    for i in range(1, 6):
        rows, labels = _cifar_rows(4), [int(v) for v in RNG.integers(0, 10, size=4)]
        _pickle(folder / f"data_batch_{i}", {"batch_label": b"training batch", "labels": labels, "data": rows,
                                              "filenames": [b"x.png"] * 4})
        batches[i] = (rows, labels)
    test_rows, test_labels = _cifar_rows(3), [9, 0, 5]
    _pickle(folder / "test_batch", {"labels": test_labels, "data": test_rows})
    return tmp_path / "cifar10", {"batches": batches, "test": (test_rows, test_labels)}


def test_cifar10_batches_prepare_with_labels_pixels_and_statistics(cifar10_root, tmp_path):
    root, written = cifar10_root
    out = tmp_path / "data.h5"
    summary = prepare_data("cifar10", out, image_size=32, root=str(root))
    prepared = _read(out)
    assert summary["train"] == 20 and summary["test"] == 3
    train_rows = np.concatenate([written["batches"][i][0] for i in range(1, 6)])
    train_labels = sum((written["batches"][i][1] for i in range(1, 6)), [])
    np.testing.assert_array_equal(prepared["train_labels"], train_labels)
    np.testing.assert_array_equal(prepared["test_labels"], [9, 0, 5])
    # row layout: 1024 red, then green, then blue values, row-major 32x32
    image, row = prepared["train_images"][7], train_rows[7]
    assert image.shape == (32, 32, 3)
    assert image[5, 9, 0] == row[5 * 32 + 9] and image[5, 9, 1] == row[1024 + 5 * 32 + 9]
    assert image[31, 0, 2] == row[2048 + 31 * 32]
    np.testing.assert_array_equal(prepared["train_images"], train_rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    _assert_stats(prepared)
    info = read_info(out)
    assert info.classes[0] == "airplane" and info.classes[9] == "truck" and info.channels == 3
    np.testing.assert_allclose(info.published_mean, PUBLISHED_STATS["cifar10"][0], rtol=1e-6)
    np.testing.assert_allclose(info.published_std, PUBLISHED_STATS["cifar10"][1], rtol=1e-6)


def test_cifar_pickle_with_foreign_globals_is_refused_not_run(cifar10_root, tmp_path):
    root, _ = cifar10_root

    class Payload:
        def __reduce__(self):
            return (os.getcwd, ())

    target = root / "cifar-10-batches-py" / "data_batch_3"
    target.write_bytes(pickle.dumps({b"data": Payload(), b"labels": []}, protocol=2))
    with pytest.raises(DataSourceError, match=r"data_batch_3: not a CIFAR batch pickle \(refusing to load global .*getcwd"):
        prepare_data("cifar10", tmp_path / "d.h5", image_size=32, root=str(root))
    assert not (tmp_path / "d.h5").exists()


def test_cifar10_missing_batch_and_bad_shape_name_the_file(cifar10_root, tmp_path):
    root, _ = cifar10_root
    folder = root / "cifar-10-batches-py"
    (folder / "data_batch_4").unlink()
    with pytest.raises(DataSourceError, match="data_batch_4: CIFAR batch file not found"):
        prepare_data("cifar10", tmp_path / "d.h5", image_size=32, root=str(root))
    _pickle(folder / "data_batch_4", {"labels": [1], "data": np.zeros((1, 1024), dtype=np.uint8)})
    with pytest.raises(DataSourceError, match=r"data_batch_4: 'data' should be uint8 N x 3072"):
        prepare_data("cifar10", tmp_path / "d.h5", image_size=32, root=str(root))
    with pytest.raises(DataSourceError, match="expected cifar-10-batches-py/batches.meta"):
        prepare_data("cifar10", tmp_path / "d.h5", image_size=32, root=str(tmp_path))


def test_cifar100_uses_fine_labels_and_meta_names(tmp_path):
    folder = tmp_path / "c100" / "cifar-100-python"
    folder.mkdir(parents=True)
    names = [f"class{i:03d}".encode() for i in range(100)]
    _pickle(folder / "meta", {"fine_label_names": names, "coarse_label_names": [b"c"] * 20})
    train_rows, test_rows = _cifar_rows(6), _cifar_rows(4)
    _pickle(folder / "train", {"data": train_rows, "fine_labels": [0, 99, 42, 7, 7, 63], "coarse_labels": [0] * 6})
    _pickle(folder / "test", {"data": test_rows, "fine_labels": [99, 1, 2, 3], "coarse_labels": [1] * 4})
    out = tmp_path / "data.h5"
    prepare_data("cifar100", out, image_size=32, root=str(tmp_path / "c100"))
    prepared = _read(out)
    np.testing.assert_array_equal(prepared["train_labels"], [0, 99, 42, 7, 7, 63])
    np.testing.assert_array_equal(prepared["test_labels"], [99, 1, 2, 3])
    np.testing.assert_array_equal(prepared["test_images"], test_rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    info = read_info(out)
    assert info.num_classes == 100 and info.classes[42] == "class042"
    np.testing.assert_allclose(info.published_mean, PUBLISHED_STATS["cifar100"][0], rtol=1e-6)
    _assert_stats(prepared)


# --------------------------------------------------------------------------- SVHN, MNIST

def test_svhn_mat_files_map_label_10_to_digit_0(tmp_path):
    root = tmp_path / "svhn"
    root.mkdir()
    arrays = {}
    for split, labels in (("train", [10, 1, 5, 10, 9]), ("test", [3, 10])):
        x = RNG.integers(0, 256, size=(32, 32, 3, len(labels)), dtype=np.uint8)  # H x W x C x N, as released
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": x, "y": np.array(labels, dtype=np.uint8).reshape(-1, 1)})
        arrays[split] = x
    out = tmp_path / "data.h5"
    prepare_data("svhn", out, image_size=32, root=str(root))
    prepared = _read(out)
    np.testing.assert_array_equal(prepared["train_labels"], [0, 1, 5, 0, 9])
    np.testing.assert_array_equal(prepared["test_labels"], [3, 0])
    np.testing.assert_array_equal(prepared["train_images"][3], arrays["train"][..., 3])
    _assert_stats(prepared)
    assert read_info(out).classes == [str(d) for d in range(10)]
    scipy.io.savemat(root / "test_32x32.mat", {"X": arrays["test"], "y": np.array([[0], [11]], dtype=np.uint8)})
    with pytest.raises(DataSourceError, match=r"test_32x32.mat: y spans 0..11, expected 1..10"):
        prepare_data("svhn", tmp_path / "d.h5", image_size=32, root=str(root))


def test_mnist_idx_gz_pads_to_32_and_names_digits(tmp_path):
    root = tmp_path / "mnist"
    root.mkdir()
    train = RNG.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    write_idx(root / "train-images-idx3-ubyte.gz", train)
    write_idx(root / "train-labels-idx1-ubyte.gz", np.array([3, 1, 4, 1, 5], dtype=np.uint8))
    write_idx(root / "t10k-images-idx3-ubyte.gz", train[:2])
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.array([9, 2], dtype=np.uint8))
    out = tmp_path / "data.h5"
    prepare_data("mnist", out, image_size=32, resize="pad", root=str(root))
    prepared = _read(out)
    np.testing.assert_array_equal(prepared["train_images"][:, 2:30, 2:30, 0], train)
    np.testing.assert_array_equal(prepared["train_labels"], [3, 1, 4, 1, 5])
    info = read_info(out)
    assert info.classes == [str(d) for d in range(10)] and info.source == "mnist"
    np.testing.assert_allclose(info.published_mean, [0.1307], rtol=1e-6)
    _assert_stats(prepared)


# --------------------------------------------------------------------------- Tiny ImageNet

TINY_WNIDS = ["n09999999", "n01443537", "n02000000"]  # wnids.txt is not sorted in the release


def _tiny_colour(label: int, index: int) -> tuple[int, int, int]:
    return (40 + 60 * label, 10 * index, 200)


@pytest.fixture
def tiny_root(tmp_path) -> Path:
    folder = tmp_path / "tiny" / "tiny-imagenet-200"
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    classes = sorted(TINY_WNIDS)
    for wnid in TINY_WNIDS:
        for i in range(3):
            _solid(folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", _tiny_colour(classes.index(wnid), i), (64, 64))
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
    lines = []
    for k, wnid in enumerate(["n02000000", "n09999999", "n01443537", "n02000000"]):
        _solid(folder / "val" / "images" / f"val_{k}.JPEG", _tiny_colour(classes.index(wnid), 5), (64, 64))
        lines.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return tmp_path / "tiny"


def test_tiny_imagenet_release_layout(tiny_root, tmp_path):
    out = tmp_path / "data.h5"
    summary = prepare_data("tiny_imagenet", out, image_size=64, resize="interpolate", root=str(tiny_root))
    prepared = _read(out)
    assert summary["train"] == 9 and summary["test"] == 4
    assert read_info(out).classes == sorted(TINY_WNIDS)  # ImageFolder order: sorted WordNet ids
    # training images are stored in a seeded shuffled order; each keeps its label (colour = label)
    assert sorted(prepared["train_labels"].tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert prepared["train_labels"].tolist() != sorted(prepared["train_labels"].tolist())
    red = prepared["train_images"][:, 32, 32, 0].astype(int)
    np.testing.assert_allclose(red, 40 + 60 * prepared["train_labels"], atol=3)  # JPEG of a flat colour
    # val (the labelled split) is the test split, ordered by class
    np.testing.assert_array_equal(prepared["test_labels"], [0, 1, 1, 2])
    np.testing.assert_allclose(prepared["test_images"][:, 10, 10, 2], 200, atol=3)
    assert prepared["attrs"]["train_order"] == "shuffled"
    np.testing.assert_allclose(prepared["attrs"]["published_std"], [0.229, 0.224, 0.225], rtol=1e-6)
    _assert_stats(prepared)
    # the same seed gives the same file content
    again = tmp_path / "again.h5"
    prepare_data("tiny_imagenet", again, image_size=64, resize="interpolate", root=str(tiny_root))
    np.testing.assert_array_equal(_read(again)["train_images"], prepared["train_images"])


def test_tiny_imagenet_bad_annotation_names_file_and_line(tiny_root, tmp_path):
    annotations = tiny_root / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    annotations.write_text(annotations.read_text() + "val_9.JPEG\tn12345678\t0\t0\t1\t1\n")
    with pytest.raises(DataSourceError, match=r"val_annotations.txt:5: expected .* with a wnid from wnids.txt"):
        prepare_data("tiny_imagenet", tmp_path / "d.h5", image_size=64, root=str(tiny_root))
    (annotations.parent / "images" / "val_2.JPEG").unlink()
    annotations.write_text("val_2.JPEG\tn01443537\t0\t0\t1\t1\n")
    with pytest.raises(DataSourceError, match=r"val_2.JPEG: listed in val_annotations.txt line 1 but not found"):
        prepare_data("tiny_imagenet", tmp_path / "d.h5", image_size=64, root=str(tiny_root))


# --------------------------------------------------------------------------- ImageNet subsets

def _imagenet_tree(root: Path, wnids, train_per_class=2, size=(24, 16)) -> None:
    for label, wnid in enumerate(wnids):
        for i in range(train_per_class):
            _solid(root / "train" / wnid / f"{wnid}_{i}.JPEG", (20 * label, 100, 7 * i), size)
        _solid(root / "val" / wnid / f"ILSVRC2012_val_{label:08d}.JPEG", (20 * label, 50, 0), size)


def test_imagewoof_subset_by_wordnet_ids_in_paper_order(tmp_path):
    root = tmp_path / "imagenet"
    wnids = IMAGENET_SUBSETS["imagewoof"]
    _imagenet_tree(root, wnids)
    _solid(root / "train" / "n01440764" / "tench_0.JPEG", (255, 255, 255))  # a class outside the subset
    out = tmp_path / "data.h5"
    summary = prepare_data("imagewoof", out, image_size=8, resize="interpolate", root=str(root))
    prepared = _read(out)
    assert summary == {**summary, "train": 20, "test": 10, "classes": 10}
    assert read_info(out).classes == list(wnids)  # label 0 = Australian terrier, as in the papers
    assert prepared["train_images"].shape == (20, 8, 8, 3)  # 24x16 -> shorter side 8 -> centre crop
    np.testing.assert_allclose(prepared["train_images"][:, 4, 4, 0], 20 * prepared["train_labels"], atol=3)
    np.testing.assert_array_equal(prepared["test_labels"], np.arange(10))
    assert read_provenance(h5py.File(out, "r"))["config"]["source"] == "imagewoof"
    _assert_stats(prepared)


def test_imagenet_with_wnid_list_and_missing_class_folder(tmp_path):
    root = tmp_path / "imagenet"
    _imagenet_tree(root, ["n01440764", "n02102040", "n03000684"], train_per_class=1)
    out = tmp_path / "data.h5"
    settings = {"source": "imagenet", "root": str(root), "image_size": 8, "resize": "interpolate",
                "subset": ["n03000684", "n01440764"]}
    assert cli.main(["data", "--settings", json.dumps(settings), "--out", str(out)]) == 0
    prepared = _read(out)
    assert read_info(out).classes == ["n03000684", "n01440764"]
    np.testing.assert_allclose(prepared["test_images"][:, 4, 4, 0], [40, 0], atol=3)
    with pytest.raises(DataSourceError, match=r"train/n02096294: class folder not found"):
        prepare_data("imagewoof", tmp_path / "d.h5", image_size=8, resize="interpolate", root=str(root))
    with pytest.raises(DataSourceError, match="does not fit image_size 8 with resize: pad"):
        prepare_data("imagenet", tmp_path / "d.h5", image_size=8, resize="pad", root=str(root))
    assert not (tmp_path / "d.h5").exists()


# --------------------------------------------------------------------------- ImageFolder

def test_image_folder_train_test_png_round_trip(tmp_path):
    root = tmp_path / "folder"
    pixels = {}
    for split, count in (("train", 3), ("test", 1)):
        for name in ("dog", "cat"):
            for i in range(count):
                array = RNG.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
                path = root / split / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(path)
                pixels[(split, name, i)] = array
    out = tmp_path / "data.h5"
    prepare_data("image_folder", out, image_size=8, root=str(root))
    prepared = _read(out)
    assert read_info(out).classes == ["cat", "dog"]
    assert prepared["train_images"].shape == (6, 8, 8, 3)
    np.testing.assert_array_equal(prepared["test_labels"], [0, 1])
    np.testing.assert_array_equal(prepared["test_images"][1], pixels[("test", "dog", 0)])  # PNG: exact round trip
    for image, label in zip(prepared["train_images"], prepared["train_labels"], strict=True):
        name = ["cat", "dog"][label]
        assert any(np.array_equal(image, pixels[("train", name, i)]) for i in range(3))
    assert "published_mean" not in prepared["attrs"]
    _assert_stats(prepared)


def test_image_folder_split_by_fraction_is_stratified_and_seeded(tmp_path):
    root = tmp_path / "flat"
    for c, name in enumerate(("a", "b", "c")):
        for i in range(4):
            _solid(root / name / f"{i}.png", 30 * c + i, (6, 6), mode="L")
    runs = []
    for seed in (0, 0, 1):
        out = tmp_path / f"s{seed}_{len(runs)}.h5"
        settings = {"source": "image_folder", "root": str(root), "image_size": 8, "test_fraction": 0.5,
                    "split_seed": seed, "channels": 1}
        code = cli.main(["data", "--settings", json.dumps(settings), "--out", str(out)])
        assert code == 0
        runs.append(_read(out))
    first = runs[0]
    assert first["train_images"].shape == (6, 8, 8, 1)  # 6x6 greyscale zero-padded to 8x8
    assert np.bincount(first["test_labels"]).tolist() == [2, 2, 2]
    np.testing.assert_array_equal(first["test_images"], runs[1]["test_images"])
    assert not np.array_equal(np.sort(first["test_images"][:, 3, 3, 0]), np.sort(runs[2]["test_images"][:, 3, 3, 0]))
    assert read_provenance(h5py.File(tmp_path / "s0_0.h5", "r"))["config"]["test_fraction"] == 0.5


def test_image_folder_errors_are_one_clear_line(tmp_path, capsys):
    root = tmp_path / "folder"
    _solid(root / "train" / "a" / "0.png", 1, (4, 4))
    (root / "train" / "b").mkdir(parents=True)
    _solid(root / "test" / "a" / "0.png", 2, (4, 4))
    settings = {"source": "image_folder", "root": str(root), "image_size": 8}
    code = cli.main(["data", "--settings", json.dumps(settings), "--out", str(tmp_path / "d.h5")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("elf-pipeline data: error: ") and f"{root / 'train' / 'b'}: no image files" in err[0]
    (root / "train" / "b" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataSourceError, match=r"broken.png: cannot decode image"):
        prepare_data("image_folder", tmp_path / "d.h5", image_size=8, root=str(root))
    with pytest.raises(DataSourceError, match=r"nowhere: dataset folder not found \(image_folder expects"):
        prepare_data("image_folder", tmp_path / "d.h5", image_size=8, root=str(tmp_path / "nowhere"))
    assert not (tmp_path / "d.h5").exists()


# --------------------------------------------------------------------------- streaming write and read

@pytest.fixture(scope="module")
def streamed(tmp_path_factory) -> tuple[Path, Path]:
    """digits prepared twice: in one block, and with tiny HDF5 chunks and write blocks."""
    tmp = tmp_path_factory.mktemp("stream")
    whole, small = tmp / "whole.h5", tmp / "small.h5"
    prepare_data("digits", whole, image_size=8, train_limit=300)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(data_h5, "CHUNK_BYTES", 64 * 7)  # 7 images per chunk
        patch.setattr(data_h5, "WRITE_BLOCK_BYTES", 64 * 21)  # 3 chunks per write
        prepare_data("digits", small, image_size=8, train_limit=300)
    return whole, small


def test_chunked_preparation_gives_the_same_dataset(streamed):
    whole, small = streamed
    a, b = _read(whole), _read(small)
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(a[key], b[key])
    np.testing.assert_array_equal(a["attrs"]["mean"], b["attrs"]["mean"])
    np.testing.assert_array_equal(a["attrs"]["std"], b["attrs"]["std"])
    with h5py.File(small, "r") as h5:
        assert h5["train/images"].chunks[0] == 7


def test_iter_batches_shuffled_epoch_covers_each_image_once(streamed):
    _, small = streamed
    images, labels, _ = load_split(small, "train")
    batches = list(iter_batches(small, "train", 32, torch.Generator().manual_seed(0), buffer_images=20))
    assert [len(y) for _, y in batches] == [32] * 9 + [12]  # full batches across buffers, one remainder
    got_x, got_y = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
    # the same multiset of (image, label) pairs as the loaded split, in another order
    key = lambda x, y: sorted(zip(x.flatten(1).sum(1).tolist(), y.tolist(), strict=True))  # noqa: E731
    assert key(got_x, got_y) == key(images, labels)
    assert not torch.equal(got_y, labels)
    again = torch.cat([y for _, y in iter_batches(small, "train", 32, torch.Generator().manual_seed(0), buffer_images=20)])
    other = torch.cat([y for _, y in iter_batches(small, "train", 32, torch.Generator().manual_seed(1), buffer_images=20)])
    assert torch.equal(again, got_y) and not torch.equal(other, got_y)
    ordered = list(iter_batches(small, "test", 50))
    test_images, test_labels, _ = load_split(small, "test")
    assert torch.equal(torch.cat([x for x, _ in ordered]), test_images)
    assert torch.equal(torch.cat([y for _, y in ordered]), test_labels)
    assert len(list(iter_batches(small, "train", 32, torch.Generator().manual_seed(0), drop_last=True))) == 9


def test_load_split_refuses_splits_over_max_in_memory(streamed):
    _, small = streamed
    needed = split_nbytes(small, "train")
    assert needed == 300 * 64 * 4
    images, _, _ = load_split(small, "train", max_in_memory=needed)
    assert images.shape == (300, 1, 8, 8)
    with pytest.raises(ArtifactError, match=r"train split needs 75 KiB as float32, more than max_in_memory \(75 KiB\); stream it with .*iter_batches"):
        load_split(small, "train", max_in_memory=needed - 1)


# --------------------------------------------------------------------------- config

def _config(**dataset) -> dict:
    smoke = yaml.safe_load((REPO / "tests" / "configs" / "smoke.yaml").read_text())
    smoke["datasets"] = {"d": {"image_size": 32, **dataset}}
    return smoke


@pytest.mark.parametrize("dataset, message", [
    ({"source": "tiny_imagenet", "root": "x", "download": True}, "datasets.d.download: tiny_imagenet cannot be downloaded"),
    ({"source": "cifar10"}, "datasets.d.root: required for source cifar10 (a folder holding cifar-10-batches-py/"),
    ({"source": "cifar10", "root": "x", "subset": "imagewoof"}, "datasets.d.subset: only ImageNet sources take a subset"),
    ({"source": "imagenet", "root": "x", "subset": "imagedog", "resize": "interpolate"}, "unknown subset 'imagedog'"),
    ({"source": "imagenette", "root": "x"}, "datasets.d.resize: ImageNet images are larger"),
    ({"source": "svhn", "root": "x", "test_fraction": 0.1}, "datasets.d.test_fraction: svhn has its own test split"),
    ({"source": "svhn", "root": "x", "channels": 1}, "datasets.d.channels: only image_folder"),
    ({"source": "imagenet", "root": "x", "resize": "interpolate", "subset": ["n0144"]}, "config key datasets.d.subset"),
])
def test_dataset_options_are_checked_with_the_key_named(dataset, message):
    config = _config(**dataset)
    with pytest.raises(ConfigError, match="^config key ") as info:
        validate_schema(config, SCHEMA)
        check_config(config)
    assert message in str(info.value)


@pytest.mark.parametrize("name", ["paper-cifar10", "paper-cifar100", "paper-tiny"])
def test_paper_configs_validate_and_dry_run_without_touching_data(name, tmp_path):
    config = yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())
    validate_schema(config, SCHEMA)
    check_config(config)
    assert config["students"]["train"]["epochs"] == 1000 and len(config["students"]["seeds"]) == 5
    teacher = next(iter(config["teachers"].values()))
    assert teacher["train"]["epochs"] == 200 and teacher["checkpoint_epoch"] == 100
    assert config["distillation"]["methods"]["dm"]["iterations"] == 20000
    # the dataset root does not exist: parsing and planning the DAG must not read it
    result = subprocess.run([str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile"),
                             "--configfile", str(REPO / "config" / f"{name}.yaml"), "--cores", "4", "-n", "--quiet", "rules"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "data" in result.stdout and "students" in result.stdout
    assert not (tmp_path / "results").exists() and not (tmp_path / "data").exists()

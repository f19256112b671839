"""The image-folder readers (elf_pipeline/datasets/folders.py) on tiny trees of real PNG and JPEG
files: which files they list, in which order, with which labels, and the one-line error for every
layout they refuse. Decoding and data.h5 are tests/test_datasets.py's; here data is run
only where the labels must be seen through the whole stage."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from elf_pipeline.cli import main
from elf_pipeline.datasets.catalog import IMAGENET_SUBSETS
from elf_pipeline.datasets.folders import (
    imagenet_subset_loader,
    images_under,
    load_image_folder,
    load_imagenet,
    load_tiny_imagenet,
    subset_wnids,
)
from elf_pipeline.infra.errors import DataSourceError


def image(path: Path, value: int, size=(6, 6), kind: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path, format=kind)
    return path


def names(files: list[Path], root: Path) -> list[str]:
    return [f.relative_to(root).as_posix() for f in files]


def test_images_under_lists_image_files_recursively_in_sorted_order(tmp_path) -> None:
    image(tmp_path / "b.png", 1)
    image(tmp_path / "A.JPEG", 2, kind="JPEG")
    image(tmp_path / "sub" / "deeper" / "c.Png", 3, kind="PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "folder.png").mkdir()  # a folder named like an image is not a file
    assert names(images_under(tmp_path), tmp_path) == ["A.JPEG", "b.png", "sub/deeper/c.Png"]


def test_image_folder_with_val_split_and_a_class_missing_from_it(tmp_path) -> None:
    for name in ("zebra", "ant", "moth"):
        image(tmp_path / "train" / name / "0.png", 10)
        image(tmp_path / "train" / name / "1.jpg", 20, kind="JPEG")
    image(tmp_path / "val" / "moth" / "0.png", 30)
    image(tmp_path / "val" / "zebra" / "0.png", 40)
    files = load_image_folder(tmp_path, channels=1)
    assert files.classes == ["ant", "moth", "zebra"] and files.channels == 1
    assert names(files.train_files, tmp_path)[:2] == ["train/ant/0.png", "train/ant/1.jpg"]
    assert files.train_labels.tolist() == [0, 0, 1, 1, 2, 2] and files.train_labels.dtype == np.int64
    assert names(files.test_files, tmp_path) == ["val/moth/0.png", "val/zebra/0.png"]
    assert files.test_labels.tolist() == [1, 2]  # labels of train/'s classes, not positions in val/
    assert files.test_labels.dtype == np.int64


@pytest.mark.parametrize(("layout", "kwargs", "message"), [
    (["train/a/0.png"], {}, "has train/ but neither test/ nor val/"),
    (["train/a/0.png", "test/a/0.png"], {"test_fraction": 0.5}, "test_fraction is set but the root already has train/"),
    (["train/a/0.png", "test/a/0.png", "test/b/0.png"], {}, "class folders ['b'] have no counterpart in"),
    (["train/x.png", "test/a/0.png"], {}, "train: no class folders"),
    (["loose.png"], {}, "expected train/<class>/ and test/<class>/ folders, or one folder per class"),
    (["a/0.png"], {"channels": 2}, "image_folder: channels must be 1 or 3, got 2"),
])
def test_image_folder_layouts_it_refuses(tmp_path, layout, kwargs, message) -> None:
    for relative in layout:
        image(tmp_path / relative, 5)
    with pytest.raises(DataSourceError) as caught:
        load_image_folder(tmp_path, **kwargs)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_flat_image_folder_split_keeps_file_and_label_together(tmp_path) -> None:
    for c, name in enumerate(("a", "b")):
        for i in range(5):
            image(tmp_path / name / f"{i}.png", 10 * c + i)
    files = load_image_folder(tmp_path, test_fraction=0.4, split_seed=3)
    assert len(files.train_files) == 6 and len(files.test_files) == 4
    assert np.bincount(files.test_labels).tolist() == [2, 2]
    for path, label in zip(files.train_files + files.test_files, [*files.train_labels, *files.test_labels], strict=True):
        assert path.parent.name == files.classes[label]
    assert not set(files.train_files) & set(files.test_files)


def tiny(root: Path, wnids: list[str], val_folders: bool = False) -> Path:
    folder = root / "tiny-imagenet-200"
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n\n")
    for wnid in wnids:
        image(folder / "train" / wnid / "images" / f"{wnid}_0.JPEG", 7, kind="JPEG")
        if val_folders:
            image(folder / "val" / wnid / f"val_{wnid}.JPEG", 9, kind="JPEG")
    return folder


def test_tiny_imagenet_with_val_sorted_into_class_folders(tmp_path) -> None:
    tiny(tmp_path, ["n02", "n01"], val_folders=True)
    files = load_tiny_imagenet(tmp_path)
    assert files.classes == ["n01", "n02"]
    assert [p.name for p in files.test_files] == ["val_n01.JPEG", "val_n02.JPEG"] and files.test_labels.tolist() == [0, 1]
    assert [p.name for p in files.train_files] == ["n01_0.JPEG", "n02_0.JPEG"]


def test_tiny_imagenet_refusals_name_the_file(tmp_path) -> None:
    folder = tiny(tmp_path / "dup", ["n01", "n01"])
    with pytest.raises(DataSourceError, match=r"wnids.txt: expected one distinct WordNet id per line, got 2 lines \(1 distinct\)"):
        load_tiny_imagenet(tmp_path / "dup")
    folder = tiny(tmp_path / "noval", ["n01"])
    with pytest.raises(DataSourceError, match=rf"{folder / 'val'}: not found \(expected val/images"):
        load_tiny_imagenet(tmp_path / "noval")
    (folder / "val").mkdir()
    (folder / "val" / "val_annotations.txt").write_text("\n")
    with pytest.raises(DataSourceError, match=r"val_annotations.txt: no annotated validation images"):
        load_tiny_imagenet(tmp_path / "noval")
    with pytest.raises(DataSourceError, match=r"empty: expected wnids.txt"):
        (tmp_path / "empty").mkdir()
        load_tiny_imagenet(tmp_path / "empty")


def test_subset_names_lists_and_errors() -> None:
    assert subset_wnids(None, "imagenet") is None
    assert subset_wnids(None, "imagenette") == list(IMAGENET_SUBSETS["imagenette"])
    assert subset_wnids("imagewoof", "imagenet") == list(IMAGENET_SUBSETS["imagewoof"])
    assert subset_wnids(("n2", "n1"), "imagenet") == ["n2", "n1"]  # the given order is the label order
    with pytest.raises(DataSourceError, match=r"unknown ImageNet subset 'imagecats' \(named subsets: imagenette, "):
        subset_wnids("imagecats", "imagenet")
    with pytest.raises(DataSourceError, match=r"subset lists a WordNet id twice: \['n1', 'n1'\]"):
        subset_wnids(["n1", "n1"], "imagenet")
    loader = imagenet_subset_loader("imagefruit")
    assert loader.__name__ == "load_imagefruit" and "10 classes" in loader.__doc__


def test_imagenet_tree_without_subset_and_missing_split(tmp_path) -> None:
    for wnid in ("n03", "n01"):
        image(tmp_path / "train" / wnid / "a.JPEG", 1, kind="JPEG")
        image(tmp_path / "val" / wnid / "b.JPEG", 2, kind="JPEG")
    (tmp_path / "train" / "README").write_text("a file, not a class")
    files = load_imagenet(tmp_path)
    assert files.classes == ["n01", "n03"] and files.test_labels.tolist() == [0, 1]
    chosen = imagenet_subset_loader("imagenette")
    with pytest.raises(DataSourceError, match=r"train/n01440764: class folder not found \(imagenette expects"):
        chosen(tmp_path)
    image(tmp_path / "only_train" / "train" / "n01" / "a.JPEG", 1, kind="JPEG")
    with pytest.raises(DataSourceError, match=r"only_train/val: not found \(imagenet expects train/<wnid>/\*\.JPEG and val/"):
        load_imagenet(tmp_path / "only_train")


def test_prepare_data_keeps_subset_labels(tmp_path, capsys) -> None:
    """Labels follow the subset list, through the CLI into data.h5 (grey level = 50 * label)."""
    order = ["n09", "n05", "n07"]
    for label, wnid in enumerate(order):
        image(tmp_path / "tree" / "train" / wnid / f"{wnid}.png", 50 * label, size=(8, 8))
        image(tmp_path / "tree" / "val" / wnid / f"{wnid}.png", 50 * label, size=(8, 8))
    out = tmp_path / "data.h5"
    settings = {"source": "imagenet", "root": str(tmp_path / "tree"), "image_size": 8, "subset": order}
    assert main(["data", "--settings", json.dumps(settings), "--out", str(out)]) == 0
    with h5py.File(out, "r") as h5:
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in h5.attrs["classes"]]
        test_images, test_labels = h5["test/images"][:], h5["test/labels"][:]
    assert classes == order
    np.testing.assert_array_equal(test_images[:, 4, 4, 0], 50 * test_labels)
    assert sorted(test_labels.tolist()) == [0, 1, 2]
    twice = {**settings, "subset": ["n09", "n09"]}
    assert main(["data", "--settings", json.dumps(twice), "--out", str(tmp_path / "bad.h5")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "elf-pipeline data: error: subset lists a WordNet id twice: ['n09', 'n09']")

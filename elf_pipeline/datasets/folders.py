"""Datasets stored as image files: Tiny ImageNet, ImageNet (and its named 10-class subsets), and
any ImageFolder tree.  Readers only list files and labels; ``prepare_data`` decodes them chunk by
chunk, so a dataset larger than memory prepares in bounded memory."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from elf_pipeline.datasets.base import (
    IMAGE_EXTENSIONS,
    DataSourceError,
    ImageFiles,
    find_dir,
    require_root,
    stratified_split,
)
from elf_pipeline.datasets.catalog import IMAGENET_SUBSETS


def images_under(folder: Path) -> list[Path]:
    """Image files anywhere below ``folder``, in sorted path order (torchvision ImageFolder's order)."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _class_files(split_dir: Path, classes: list[str], what: str) -> tuple[list[Path], np.ndarray]:
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        folder = split_dir / name
        if not folder.is_dir():
            raise DataSourceError(f"{folder}: class folder not found ({what})")
        found = images_under(folder)
        if not found:
            raise DataSourceError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this class folder ({what})")
        files.extend(found)
        labels.extend([label] * len(found))
    return files, np.asarray(labels, dtype=np.int64)


# --------------------------------------------------------------------------- Tiny ImageNet

def load_tiny_imagenet(root: str | os.PathLike | None, **_: object) -> ImageFiles:
    """Tiny ImageNet as distributed (200 classes, 64x64): train/<wnid>/images/*.JPEG for training,
    the labelled val/ split (val/images + val/val_annotations.txt) as the test split.  Classes are
    the sorted WordNet ids, as torchvision's ImageFolder (and the DD reference code) order them."""
    root = require_root(root, "tiny_imagenet")
    folder = find_dir(root, ("tiny-imagenet-200",), "wnids.txt")
    if folder is None:
        raise DataSourceError(f"{root}: expected wnids.txt (in tiny-imagenet-200/ or directly there) (Tiny ImageNet)")
    wnids = [line.strip() for line in (folder / "wnids.txt").read_text().splitlines() if line.strip()]
    if not wnids or len(set(wnids)) != len(wnids):
        raise DataSourceError(f"{folder / 'wnids.txt'}: expected one distinct WordNet id per line, got {len(wnids)} lines "
                              f"({len(set(wnids))} distinct)")
    classes = sorted(wnids)
    train_files, train_labels = _class_files(folder / "train", classes, "Tiny ImageNet expects train/<wnid>/images/*.JPEG")
    annotations = folder / "val" / "val_annotations.txt"
    if annotations.is_file():
        index = {wnid: label for label, wnid in enumerate(classes)}
        test_files, test_labels = [], []
        for number, line in enumerate(annotations.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] not in index:
                raise DataSourceError(f"{annotations}:{number}: expected '<file>\\t<wnid>\\t...' with a wnid from wnids.txt, "
                                      f"got {line[:80]!r}")
            path = folder / "val" / "images" / fields[0]
            if not path.is_file():
                raise DataSourceError(f"{path}: listed in {annotations.name} line {number} but not found")
            test_files.append(path)
            test_labels.append(index[fields[1]])
        if not test_files:
            raise DataSourceError(f"{annotations}: no annotated validation images")
        order = sorted(range(len(test_files)), key=lambda i: (test_labels[i], test_files[i]))
        test_files = [test_files[i] for i in order]
        test_labels = np.asarray([test_labels[i] for i in order], dtype=np.int64)
    elif (folder / "val").is_dir():  # val/ already sorted into class folders
        test_files, test_labels = _class_files(folder / "val", classes, "expected val/val_annotations.txt or val/<wnid>/")
    else:
        raise DataSourceError(f"{folder / 'val'}: not found (expected val/images/*.JPEG and val/val_annotations.txt)")
    return ImageFiles(train_files, train_labels, test_files, test_labels, classes)


# --------------------------------------------------------------------------- ImageNet and its subsets

def subset_wnids(subset: str | list[str] | tuple[str, ...] | None, source: str) -> list[str] | None:
    """The WordNet ids of a named subset or an explicit list (None: every class of the tree)."""
    if subset is None:
        subset = source if source in IMAGENET_SUBSETS else None
    if subset is None:
        return None
    if isinstance(subset, str):
        if subset not in IMAGENET_SUBSETS:
            raise DataSourceError(f"unknown ImageNet subset {subset!r} (named subsets: {', '.join(IMAGENET_SUBSETS)}; "
                                  "or give a list of WordNet ids)")
        return list(IMAGENET_SUBSETS[subset])
    wnids = [str(w) for w in subset]
    if len(set(wnids)) != len(wnids):
        raise DataSourceError(f"subset lists a WordNet id twice: {wnids}")
    return wnids


def load_imagenet(root: str | os.PathLike | None, subset: str | list[str] | None = None, source: str = "imagenet",
                  **_: object) -> ImageFiles:
    """An ImageNet folder tree (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG), restricted to ``subset``.

    Labels follow the subset's order (label 0 = its first WordNet id), as in the papers that
    introduced the subsets; without a subset, every class folder of train/ in sorted order."""
    root = require_root(root, source)
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DataSourceError(f"{root / split}: not found ({source} expects train/<wnid>/*.JPEG and val/<wnid>/*.JPEG; "
                                  "sort a flat ImageNet val/ into class folders first)")
    wnids = subset_wnids(subset, source)
    if wnids is None:
        wnids = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        if not wnids:
            raise DataSourceError(f"{root / 'train'}: no class folders")
    what = f"{source} expects train/<wnid>/*.JPEG and val/<wnid>/*.JPEG for every WordNet id of the subset"
    train_files, train_labels = _class_files(root / "train", wnids, what)
    test_files, test_labels = _class_files(root / "val", wnids, what)
    return ImageFiles(train_files, train_labels, test_files, test_labels, wnids)


def imagenet_subset_loader(name: str):
    def load(root: str | os.PathLike | None, subset: str | list[str] | None = None, **_: object) -> ImageFiles:
        return load_imagenet(root, subset=subset, source=name)

    load.__name__ = f"load_{name}"
    load.__doc__ = f"ImageNet subset {name!r} ({len(IMAGENET_SUBSETS[name])} classes) from an ImageNet folder tree."
    return load


# --------------------------------------------------------------------------- any ImageFolder tree

def load_image_folder(root: str | os.PathLike | None, test_fraction: float | None = None, split_seed: int = 0,
                      channels: int = 3, **_: object) -> ImageFiles:
    """Class = folder name.  ``root/train`` + ``root/test`` (or ``root/val``) give the split; a root
    of class folders alone is split per class with ``test_fraction`` (default 0.2) and ``split_seed``."""
    root = require_root(root, "image_folder")
    if channels not in (1, 3):
        raise DataSourceError(f"image_folder: channels must be 1 or 3, got {channels}")
    test_dir = next((root / name for name in ("test", "val") if (root / name).is_dir()), None)
    if (root / "train").is_dir():
        if test_dir is None:
            raise DataSourceError(f"{root}: has train/ but neither test/ nor val/; add one, or put the class folders "
                                  "directly in the root and set test_fraction")
        if test_fraction is not None:
            raise DataSourceError(f"{root}: test_fraction is set but the root already has train/ and {test_dir.name}/ folders")
        classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        if not classes:
            raise DataSourceError(f"{root / 'train'}: no class folders")
        extra = sorted(p.name for p in test_dir.iterdir() if p.is_dir() and p.name not in classes)
        if extra:
            raise DataSourceError(f"{test_dir}: class folders {extra} have no counterpart in {root / 'train'}")
        train_files, train_labels = _class_files(root / "train", classes, "image_folder")
        present = [c for c in classes if (test_dir / c).is_dir()]
        test_files, test_labels = _class_files(test_dir, present, "image_folder")
        test_labels = np.asarray([classes.index(present[i]) for i in test_labels], dtype=np.int64)
    else:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not classes:
            raise DataSourceError(f"{root}: expected train/<class>/ and test/<class>/ folders, or one folder per class")
        files, labels = _class_files(root, classes, "image_folder")
        test_mask = stratified_split(labels, 0.2 if test_fraction is None else test_fraction, split_seed)
        train_files = [f for f, t in zip(files, test_mask, strict=True) if not t]
        test_files = [f for f, t in zip(files, test_mask, strict=True) if t]
        train_labels, test_labels = labels[~test_mask], labels[test_mask]
    return ImageFiles(train_files, train_labels, test_files, test_labels, classes, channels=channels)

"""Dataset preparation, the ``data`` stage: raw files -> ``data.h5``.

A raw dataset is read (``datasets/``), resized, cut into its splits (training subset, validation
split) and handed block by block to ``artifacts.data.write_data``, which defines the ``data.h5``
layout and computes the statistics; a dataset larger than memory prepares in bounded memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from elf_pipeline.artifacts.data_file import Split, write_data
from elf_pipeline.datasets.base import DataSourceError, ImageFiles, RawDataset, decode_image
from elf_pipeline.datasets.catalog import IMAGENET_SUBSETS, PUBLISHED_STATS
from elf_pipeline.datasets.cifar import load_cifar10, load_cifar100
from elf_pipeline.datasets.folders import imagenet_subset_loader, load_image_folder, load_imagenet, load_tiny_imagenet
from elf_pipeline.datasets.mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_HELP,
    load_digits,
    load_fashion_mnist,
    load_idx_dataset,
    load_mnist,
    read_idx,
)
from elf_pipeline.datasets.svhn import load_svhn

__all__ = [
    "FASHION_MNIST_CLASSES", "FASHION_MNIST_HELP", "SOURCES", "DataSourceError", "ImageFiles", "RawDataset",
    "load_digits", "load_fashion_mnist", "load_idx_dataset", "prepare_data", "read_idx", "resize_images",
]


# source name -> reader(root, **options) returning RawDataset (decoded arrays) or ImageFiles (paths)
SOURCES: dict[str, Callable[..., RawDataset | ImageFiles]] = {
    "fashion_mnist": load_fashion_mnist,
    "digits": load_digits,
    "mnist": load_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "svhn": load_svhn,
    "tiny_imagenet": load_tiny_imagenet,
    "imagenet": load_imagenet,
    "image_folder": load_image_folder,
    **{name: imagenet_subset_loader(name) for name in IMAGENET_SUBSETS},
}


def resize_images(images: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Bring uint8 NHWC images to ``size``x``size``: zero ``pad`` (centred) or bilinear ``interpolate``."""
    height, width = images.shape[1:3]
    if (height, width) == (size, size):
        return images
    if mode == "pad":
        if height > size or width > size:
            raise DataSourceError(f"cannot pad {height}x{width} images to the smaller image_size {size}; use resize: interpolate")
        top, left = (size - height) // 2, (size - width) // 2
        out = np.zeros((len(images), size, size, images.shape[3]), dtype=np.uint8)
        out[:, top:top + height, left:left + width] = images
        return out
    if mode == "interpolate":
        out = np.empty((len(images), size, size, images.shape[3]), dtype=np.uint8)
        for start in range(0, len(images), 4096):
            chunk = torch.from_numpy(images[start:start + 4096]).permute(0, 3, 1, 2).float()
            chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            out[start:start + 4096] = chunk.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        return out
    raise DataSourceError(f"unknown resize mode {mode!r} (allowed: pad, interpolate)")




def _array_split(images: np.ndarray, labels: np.ndarray, index: np.ndarray, size: int, resize: str) -> Split:
    return Split(labels[index], lambda rows: resize_images(images[index[rows]], size, resize))


def _file_split(files: list[Path], labels: np.ndarray, index: np.ndarray, size: int, resize: str, channels: int) -> Split:
    def read(rows: np.ndarray) -> np.ndarray:
        return np.stack([decode_image(files[i], size, resize, channels) for i in index[rows]])

    return Split(labels[index], read)


def _balanced_subset(labels: np.ndarray, limit: int | None, num_classes: int, seed: int) -> np.ndarray:
    """Sorted indices of a class-balanced, seeded subset of ``limit`` images (all when no limit)."""
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    per_class = max(1, limit // num_classes)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(num_classes)]))



def prepare_data(source: str, out: str | os.PathLike, image_size: int, resize: str = "pad",
                 root: str | None = None, train_limit: int | None = None, seed: int = 0, *,
                 download: bool = False, test_fraction: float | None = None, split_seed: int | None = None,
                 subset: str | list[str] | None = None, channels: int | None = None, val_size: int | None = None,
                 val_seed: int = 0, test_limit: int | None = None) -> dict:
    """Read a raw dataset, resize it and write ``data.h5``; returns a summary dict.

    ``train_limit`` keeps a class-balanced, seeded subset of the training set.  ``val_size`` moves a
    class-balanced, seeded part of it (``val_seed``) into a ``val`` split that no training stage sees:
    choices (checkpoints, λs, epoch budgets, defaults) are made on it, never on the test set.  ``test_limit``
    keeps a class-balanced subset of the test split (seeded by ``seed``; a CPU budget: every student is
    tested on the same images).  Datasets read from
    image files are decoded block by block and their training images stored in a seeded random order
    (so contiguous blocks are random samples for ``iter_batches``); the others keep the release's order.
    """
    if source not in SOURCES:
        raise DataSourceError(f"unknown dataset source {source!r} (allowed: {', '.join(sorted(SOURCES))})")
    options = {key: value for key, value in (("download", download), ("test_fraction", test_fraction),
                                             ("split_seed", split_seed), ("subset", subset), ("channels", channels))
               if value not in (None, False)}
    raw = SOURCES[source](root=root, **options)
    num_classes = len(raw.classes)
    keep = _balanced_subset(raw.train_labels, train_limit, num_classes, seed)
    for key, limit, split in (("train_limit", train_limit, raw.train_labels), ("test_limit", test_limit, raw.test_labels)):
        if limit is not None and limit > len(split):
            logging.getLogger(__name__).warning("%s %d: larger than the %s split of %s (%d images): all of them are used",
                                                key, limit, key.split("_")[0], source, len(split))
    held_out = np.array([], dtype=np.int64)
    if test_limit is not None and test_limit < num_classes:
        raise DataSourceError(f"test_limit {test_limit}: must be at least one image per class ({num_classes})")
    tested = _balanced_subset(raw.test_labels, test_limit, num_classes, seed)
    if val_size:
        if val_size < num_classes or val_size > len(keep) // 2:
            raise DataSourceError(f"val_size {val_size}: must lie in {num_classes}..{len(keep) // 2} "
                                  f"(one image per class up to half of the {len(keep)} training images)")
        chosen = _balanced_subset(raw.train_labels[keep], val_size, num_classes, val_seed)
        held_out, keep = keep[chosen], np.delete(keep, chosen)
    if isinstance(raw, ImageFiles):
        keep = keep[np.random.default_rng(seed).permutation(len(keep))]
        n_channels = raw.channels
        train = _file_split(raw.train_files, raw.train_labels, keep, image_size, resize, n_channels)
        val = _file_split(raw.train_files, raw.train_labels, held_out, image_size, resize, n_channels)
        test = _file_split(raw.test_files, raw.test_labels, tested, image_size, resize, n_channels)
    else:
        n_channels = raw.train_images.shape[3]
        train = _array_split(raw.train_images, raw.train_labels, keep, image_size, resize)
        val = _array_split(raw.train_images, raw.train_labels, held_out, image_size, resize)
        test = _array_split(raw.test_images, raw.test_labels, tested, image_size, resize)
    for split_name, split in (("train", train), ("test", test)):
        if len(split.labels) == 0:
            raise DataSourceError(f"{root}: the {split_name} split of {source} is empty")
    config = {"source": source, "image_size": image_size, "resize": resize, "train_limit": train_limit, "seed": seed,
              **{k: v for k, v in options.items() if k != "download"},
              **({"val_size": val_size, "val_seed": val_seed} if val_size else {}),
              **({"test_limit": test_limit} if test_limit is not None else {})}
    attrs = {"source": source, "train_order": "shuffled" if isinstance(raw, ImageFiles) else "release"}
    published = PUBLISHED_STATS.get(source)
    if published is not None and len(published[0]) == n_channels:
        attrs["published_mean"] = np.asarray(published[0], dtype=np.float32)
        attrs["published_std"] = np.asarray(published[1], dtype=np.float32)
    splits = {"train": train, "test": test, **({"val": val} if val_size else {})}
    mean, std = write_data(out, splits, image_size, n_channels, list(raw.classes), attrs, config)
    return {"train": len(train.labels), "val": len(val.labels), "test": len(test.labels), "classes": num_classes,
            "mean": mean.tolist(), "std": std.tolist()}


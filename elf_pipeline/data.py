"""Dataset preparation (raw files -> ``data.h5``) and loading of prepared splits.

``data.h5`` layout: ``train/images`` and ``test/images`` uint8 NHWC, ``train/labels`` and
``test/labels`` int64; attrs ``mean``/``std`` (per channel, on [0, 1] pixels of the prepared train
split), ``published_mean``/``published_std`` (the reference code's constants, where known),
``classes``, ``source``, ``image_size`` and provenance.

Preparation streams: images are decoded, resized and written one block at a time into pre-sized,
chunked HDF5 datasets, and the statistics are accumulated exactly (integer sums), so a dataset
larger than memory prepares in bounded memory.  Readers of large splits use ``iter_batches``
(shuffled blocks, bounded memory) instead of ``load_split``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

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
from elf_pipeline.errors import InputError
from elf_pipeline.io import ArtifactError, atomic_path, open_h5, write_provenance

__all__ = [
    "FASHION_MNIST_CLASSES", "FASHION_MNIST_HELP", "SOURCES", "DataSourceError", "DatasetInfo", "ImageFiles",
    "RawDataset", "iter_batches", "load_digits", "load_fashion_mnist", "load_idx_dataset", "load_split",
    "normalize", "prepare_data", "read_idx", "read_info", "resize_images", "split_nbytes", "split_size",
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

WRITE_BLOCK_BYTES = 64 << 20  # decoded images held at once while preparing
_VALUES = np.arange(256, dtype=np.int64)
CHUNK_BYTES = 4 << 20  # target size of one HDF5 chunk (whole images)


# --------------------------------------------------------------------------- preparation

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


@dataclass
class _Split:
    """One split to write: ``labels`` in output order and ``read(index) -> uint8 NHWC`` (resized)."""

    labels: np.ndarray
    read: Callable[[np.ndarray], np.ndarray]


def _array_split(images: np.ndarray, labels: np.ndarray, index: np.ndarray, size: int, resize: str) -> _Split:
    return _Split(labels[index], lambda rows: resize_images(images[index[rows]], size, resize))


def _file_split(files: list[Path], labels: np.ndarray, index: np.ndarray, size: int, resize: str, channels: int) -> _Split:
    def read(rows: np.ndarray) -> np.ndarray:
        return np.stack([decode_image(files[i], size, resize, channels) for i in index[rows]])

    return _Split(labels[index], read)


def _balanced_subset(labels: np.ndarray, limit: int | None, num_classes: int, seed: int) -> np.ndarray:
    """Sorted indices of a class-balanced, seeded subset of ``limit`` images (all when no limit)."""
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    per_class = max(1, limit // num_classes)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(num_classes)]))


def _chunk_rows(image_bytes: int, n: int) -> int:
    return max(1, min(n, 1024, CHUNK_BYTES // max(1, image_bytes)))


def _write_split(group: h5py.Group, split: _Split, size: int, channels: int, stats: list[int] | None) -> None:
    """Decode and write ``split`` block by block; add pixel count, sums and squared sums to ``stats``."""
    n = len(split.labels)
    image_bytes = size * size * channels
    rows = _chunk_rows(image_bytes, n)
    images = group.create_dataset("images", shape=(n, size, size, channels), dtype=np.uint8,
                                  chunks=(rows, size, size, channels) if n else None,
                                  compression="gzip" if n else None, compression_opts=1 if n else None)
    group.create_dataset("labels", data=split.labels.astype(np.int64))
    block = rows * max(1, WRITE_BLOCK_BYTES // (rows * image_bytes))
    for start in range(0, n, block):
        chunk = split.read(np.arange(start, min(n, start + block)))
        if chunk.shape[1:] != (size, size, channels):
            raise DataSourceError(f"{group.name}: decoded images have shape {chunk.shape[1:]}, expected {(size, size, channels)}")
        images[start:start + len(chunk)] = chunk
        if stats is not None:  # exact sums from a histogram of the 256 pixel values per channel
            stats[0] += chunk.size // channels
            for c in range(channels):
                counts = np.bincount(chunk[..., c].ravel(), minlength=256).astype(np.int64)
                stats[1 + c] += int(counts @ _VALUES)
                stats[1 + channels + c] += int(counts @ _VALUES**2)


def _mean_std(stats: list[int], channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std of [0, 1] pixels from exact integer sums."""
    n = stats[0]
    if n == 0:
        raise DataSourceError("the prepared train split is empty")
    sums, squares = stats[1:1 + channels], stats[1 + channels:]
    mean = np.array([s / (255.0 * n) for s in sums])
    std = np.array([math.sqrt(max(0, n * q - s * s)) / (255.0 * n) for s, q in zip(sums, squares, strict=True)])
    return mean, std


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
    stats = [0] * (1 + 2 * n_channels)
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as h5:
        _write_split(h5.create_group("train"), train, image_size, n_channels, stats)
        _write_split(h5.create_group("test"), test, image_size, n_channels, None)
        if val_size:
            _write_split(h5.create_group("val"), val, image_size, n_channels, None)
        mean, std = _mean_std(stats, n_channels)
        h5.attrs.update({"mean": mean.astype(np.float32), "std": std.astype(np.float32),
                         "classes": np.array(raw.classes, dtype=h5py.string_dtype()), "source": source,
                         "image_size": image_size,
                         "train_order": "shuffled" if isinstance(raw, ImageFiles) else "release"})
        published = PUBLISHED_STATS.get(source)
        if published is not None and len(published[0]) == n_channels:
            h5.attrs["published_mean"] = np.asarray(published[0], dtype=np.float32)
            h5.attrs["published_std"] = np.asarray(published[1], dtype=np.float32)
        write_provenance(h5, "prepare_data", config, {})
    return {"train": len(train.labels), "val": len(val.labels), "test": len(test.labels), "classes": num_classes,
            "mean": mean.tolist(), "std": std.tolist()}


# --------------------------------------------------------------------------- loading

@dataclass
class DatasetInfo:
    mean: np.ndarray
    std: np.ndarray
    classes: list[str]
    image_size: int
    source: str
    published_mean: np.ndarray | None = None  # the reference code's constants, where known
    published_std: np.ndarray | None = None

    @property
    def channels(self) -> int:
        return len(self.mean)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def read_info(path: str | os.PathLike) -> DatasetInfo:
    with open_h5(path) as h5:
        try:
            published = [np.asarray(h5.attrs[key], dtype=np.float32) if key in h5.attrs else None
                         for key in ("published_mean", "published_std")]
            return DatasetInfo(np.asarray(h5.attrs["mean"], dtype=np.float32), np.asarray(h5.attrs["std"], dtype=np.float32),
                               [c.decode() if isinstance(c, bytes) else str(c) for c in h5.attrs["classes"]],
                               int(h5.attrs["image_size"]), str(h5.attrs["source"]), *published)
        except KeyError as err:
            raise ArtifactError(f"{path}: prepared dataset lacks attribute {err}") from None


def normalize(images_uint8: np.ndarray, info: DatasetInfo) -> torch.Tensor:
    """uint8 NHWC -> normalised float32 NCHW tensor (one float copy; the arithmetic is in place)."""
    x = torch.from_numpy(np.ascontiguousarray(images_uint8)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.from_numpy(info.mean).view(1, -1, 1, 1)
    std = torch.from_numpy(info.std).view(1, -1, 1, 1).clamp_min(1e-8)
    return x.sub_(mean).div_(std)


def _split_datasets(h5: h5py.File, path: str | os.PathLike, split: str) -> tuple[h5py.Dataset, h5py.Dataset]:
    if f"{split}/images" not in h5 or f"{split}/labels" not in h5:
        raise ArtifactError(f"{path}: no split {split!r} in prepared dataset")
    images, labels = h5[f"{split}/images"], h5[f"{split}/labels"]
    if len(images) != len(labels):
        raise ArtifactError(f"{path}: {split} has {len(images)} images but {len(labels)} labels")
    return images, labels


def has_split(path: str | os.PathLike, split: str) -> bool:
    """Whether ``data.h5`` holds ``split`` (``val`` exists only where the dataset block sets val_size)."""
    with open_h5(path) as h5:
        return f"{split}/images" in h5


def split_size(path: str | os.PathLike, split: str) -> int:
    """Number of images in one split of ``data.h5``."""
    with open_h5(path) as h5:
        return len(_split_datasets(h5, path, split)[1])


def split_nbytes(path: str | os.PathLike, split: str, limit: int | None = None) -> int:
    """Bytes the split takes once loaded as normalised float32 (what ``load_split`` allocates)."""
    with open_h5(path) as h5:
        images, _ = _split_datasets(h5, path, split)
        n = min(len(images), limit) if limit else len(images)
        return 4 * n * int(np.prod(images.shape[1:]))


def load_split(path: str | os.PathLike, split: str, device: torch.device | str = "cpu",
               limit: int | None = None, max_in_memory: int | None = None) -> tuple[torch.Tensor, torch.Tensor, DatasetInfo]:
    """Load one split of ``data.h5`` as normalised images and labels on ``device``.

    The uint8 images are read and normalised one HDF5 block at a time into a single float32
    tensor, so the peak is that tensor plus one block.  ``max_in_memory`` (bytes) refuses splits
    whose float32 tensor would be larger, naming ``iter_batches`` as the way to stream them.
    """
    info = read_info(path)
    if max_in_memory is not None:
        needed = split_nbytes(path, split, limit)
        if needed > max_in_memory:
            raise ArtifactError(f"{path}: the {split} split needs {_size(needed)} as float32, more than "
                                f"max_in_memory ({_size(max_in_memory)}); stream it with elf_pipeline.data.iter_batches")
    with open_h5(path) as h5:
        images, labels = _split_datasets(h5, path, split)
        n = min(len(images), limit) if limit else len(images)
        height, width, channels = images.shape[1:]
        out = torch.empty((n, channels, height, width), dtype=torch.float32)
        step = _read_block(images)
        for start in range(0, n, step):
            stop = min(n, start + step)
            out[start:stop] = normalize(images[start:stop], info)
        label_tensor = torch.from_numpy(labels[:n].astype(np.int64))
    return out.to(device), label_tensor.to(device), info


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes} B"


def _read_block(images: h5py.Dataset) -> int:
    """Rows per read: whole HDF5 chunks, about WRITE_BLOCK_BYTES of uint8 at a time."""
    rows = images.chunks[0] if images.chunks else max(1, len(images))
    image_bytes = int(np.prod(images.shape[1:]))
    return rows * max(1, WRITE_BLOCK_BYTES // max(1, rows * image_bytes))


def iter_batches(path: str | os.PathLike, split: str, batch_size: int, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu", buffer_images: int | None = None,
                 drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Stream one split of ``data.h5`` as normalised ``(images, labels)`` batches in bounded memory.

    Without ``generator`` the batches come in stored order (evaluation).  With it, one pass is a
    shuffled epoch: the split's HDF5 chunks (contiguous blocks) are visited in a random order, a
    buffer of about ``buffer_images`` images (default: what fits in 256 MiB of uint8) is filled
    from consecutive blocks of that order and permuted, and batches are cut from it; leftovers carry
    over to the next buffer so every batch but the last is full.  Every image appears once per pass.
    Only whole chunks are read, so each compressed chunk is decoded once per pass; prepared
    datasets from image files are stored in shuffled order, so a block is a random sample too.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    info = read_info(path)
    with open_h5(path) as h5:
        images, labels_ds = _split_datasets(h5, path, split)
        n = len(labels_ds)
        labels_all = labels_ds[:].astype(np.int64)  # 8 bytes per image: small even for ImageNet
        block = images.chunks[0] if images.chunks else max(1, n)
        image_bytes = int(np.prod(images.shape[1:]))
        if buffer_images is None:
            buffer_images = max(batch_size, (256 << 20) // max(1, image_bytes))
        blocks_per_buffer = max(1, math.ceil(buffer_images / block))
        starts = np.arange(0, n, block)
        if generator is not None:
            starts = starts[torch.randperm(len(starts), generator=generator).numpy()]
        pending_x = np.empty((0, *images.shape[1:]), dtype=np.uint8)
        pending_y = np.empty((0,), dtype=np.int64)
        for first in range(0, len(starts), blocks_per_buffer):
            group = starts[first:first + blocks_per_buffer]
            if generator is None:
                chunk_x = images[group[0]:min(n, group[-1] + block)]
                chunk_y = labels_all[group[0]:min(n, group[-1] + block)]
            else:
                chunk_x = np.concatenate([images[s:min(n, s + block)] for s in group])
                chunk_y = np.concatenate([labels_all[s:min(n, s + block)] for s in group])
                order = torch.randperm(len(chunk_y), generator=generator).numpy()
                chunk_x, chunk_y = chunk_x[order], chunk_y[order]
            if len(pending_y):
                chunk_x, chunk_y = np.concatenate([pending_x, chunk_x]), np.concatenate([pending_y, chunk_y])
            full = len(chunk_y) - len(chunk_y) % batch_size
            for start in range(0, full, batch_size):
                yield (normalize(chunk_x[start:start + batch_size], info).to(device),
                       torch.from_numpy(chunk_y[start:start + batch_size]).to(device))
            pending_x, pending_y = chunk_x[full:], chunk_y[full:]
        if len(pending_y) and not drop_last:
            yield normalize(pending_x, info).to(device), torch.from_numpy(pending_y).to(device)

"""``data.h5``: a prepared dataset, its writer and its readers.

Layout: ``train/images`` and ``test/images`` (and ``val/images`` where the dataset block sets
``val_size``) uint8 NHWC, ``<split>/labels`` int64; attrs ``mean``/``std`` (per channel, on [0, 1]
pixels of the prepared train split), ``published_mean``/``published_std`` (the reference code's
constants, where known), ``classes``, ``source``, ``image_size``, ``train_order`` and provenance.

The writer streams: images are written one block at a time into pre-sized, chunked HDF5 datasets,
and the statistics are accumulated exactly (integer sums), so a dataset larger than memory is
written in bounded memory.  Readers of large splits use ``iter_batches`` (shuffled blocks, bounded
memory) instead of ``load_split``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import h5py
import numpy as np

from elf_pipeline.infra.errors import DataSourceError, InputError
from elf_pipeline.infra.io import ArtifactError, atomic_path, open_h5, write_provenance

if TYPE_CHECKING:
    import torch

WRITE_BLOCK_BYTES = 64 << 20  # decoded images held at once while writing or reading
_VALUES = np.arange(256, dtype=np.int64)
CHUNK_BYTES = 4 << 20  # target size of one HDF5 chunk (whole images)


# --------------------------------------------------------------------------- writing

@dataclass
class Split:
    """One split to write: ``labels`` in output order and ``read(index) -> uint8 NHWC`` (resized)."""

    labels: np.ndarray
    read: Callable[[np.ndarray], np.ndarray]


def _chunk_rows(image_bytes: int, n: int) -> int:
    return max(1, min(n, 1024, CHUNK_BYTES // max(1, image_bytes)))


def _write_split(group: h5py.Group, split: Split, size: int, channels: int, stats: list[int] | None) -> None:
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




def write_data(out: str | os.PathLike, splits: dict[str, Split], image_size: int, channels: int, classes: list[str],
               attrs: dict, config: dict) -> tuple[np.ndarray, np.ndarray]:
    """Write ``data.h5``: every split (``train`` first; its pixel statistics become ``mean``/``std``),
    the dataset ``attrs`` (``source``, ``train_order``, published statistics ...) and provenance of
    ``config``. Returns the per-channel mean and std."""
    stats = [0] * (1 + 2 * channels)
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as h5:
        for name, split in splits.items():
            _write_split(h5.create_group(name), split, image_size, channels, stats if name == "train" else None)
        mean, std = _mean_std(stats, channels)
        h5.attrs.update({"mean": mean.astype(np.float32), "std": std.astype(np.float32),
                         "classes": np.array(classes, dtype=h5py.string_dtype()), "image_size": image_size, **attrs})
        write_provenance(h5, "data", config, {})
    return mean, std


# --------------------------------------------------------------------------- reading

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
    import torch

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
    import torch

    info = read_info(path)
    if max_in_memory is not None:
        needed = split_nbytes(path, split, limit)
        if needed > max_in_memory:
            raise ArtifactError(f"{path}: the {split} split needs {_size(needed)} as float32, more than "
                                f"max_in_memory ({_size(max_in_memory)}); stream it with artifacts.data.iter_batches")
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
    import torch

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

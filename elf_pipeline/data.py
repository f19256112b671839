"""Dataset preparation (raw files -> ``data.h5``) and loading of prepared splits.

``data.h5`` layout: ``train/images`` and ``test/images`` uint8 NHWC, ``train/labels`` and
``test/labels`` int64; attrs ``mean``/``std`` (per channel, on [0, 1] pixels of the train split),
``classes``, ``source``, ``image_size`` and provenance.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from elf_pipeline.io import ArtifactError, atomic_path, open_h5, write_provenance


class DataSourceError(RuntimeError):
    """Raw data is missing or malformed; the message says where and how to get it."""


@dataclass
class RawDataset:
    train_images: np.ndarray  # uint8 NHWC
    train_labels: np.ndarray  # int64 N
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]


# --------------------------------------------------------------------------- raw loaders

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FASHION_MNIST_HELP = (
    "install Debian's package with `apt-get install dataset-fashion-mnist` (puts the files in "
    "/usr/share/datasets/fashion-mnist) or download the four *-ubyte.gz files of the Fashion-MNIST "
    "release into that folder and set datasets.<name>.root"
)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) as used by MNIST and Fashion-MNIST."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as err:
        raise DataSourceError(f"{path}: cannot read IDX file ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataSourceError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    header_end = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(raw) - header_end != expected:
        raise DataSourceError(f"{path}: IDX header promises {shape} ({expected} bytes) but file holds {len(raw) - header_end}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_end).reshape(shape)


def _find_idx(root: Path, stem: str, help_text: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    raise DataSourceError(f"{root}: expected {stem}[.gz] there; {help_text}")


def load_idx_dataset(root: str | os.PathLike, classes: list[str], help_text: str) -> RawDataset:
    root = Path(root)
    if not root.is_dir():
        raise DataSourceError(f"{root}: dataset folder not found; {help_text}")
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_find_idx(root, f"{prefix}-images-idx3-ubyte", help_text))
        labels = read_idx(_find_idx(root, f"{prefix}-labels-idx1-ubyte", help_text))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataSourceError(f"{root}: {split} images {images.shape} and labels {labels.shape} do not match")
        arrays[split] = (images[..., None], labels.astype(np.int64))
    return RawDataset(*arrays["train"], *arrays["test"], classes=classes)


def load_fashion_mnist(root: str | os.PathLike, **_: object) -> RawDataset:
    return load_idx_dataset(root, FASHION_MNIST_CLASSES, FASHION_MNIST_HELP)


def load_digits(root: str | os.PathLike | None = None, test_fraction: float = 0.2, split_seed: int = 0, **_: object) -> RawDataset:
    """scikit-learn's 8x8 digits (1,797 real images): a stratified, seeded train/test split."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    rng = np.random.default_rng(split_seed)
    test_mask = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        n_test = int(round(len(idx) * test_fraction))
        test_mask[rng.choice(idx, size=n_test, replace=False)] = True
    return RawDataset(images[~test_mask], labels[~test_mask], images[test_mask], labels[test_mask],
                      classes=[str(d) for d in range(10)])


SOURCES: dict[str, Callable[..., RawDataset]] = {
    "fashion_mnist": load_fashion_mnist,
    "digits": load_digits,
}


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


def prepare_data(source: str, out: str | os.PathLike, image_size: int, resize: str = "pad",
                 root: str | None = None, train_limit: int | None = None, seed: int = 0) -> dict:
    """Read a raw dataset, resize it and write ``data.h5``; returns a summary dict."""
    if source not in SOURCES:
        raise DataSourceError(f"unknown dataset source {source!r} (allowed: {', '.join(sorted(SOURCES))})")
    raw = SOURCES[source](root=root)
    train_images, train_labels = raw.train_images, raw.train_labels
    if train_limit is not None and train_limit < len(train_labels):
        # Class-balanced, seeded subset so a small config still sees every class.
        rng = np.random.default_rng(seed)
        per_class = max(1, train_limit // len(raw.classes))
        keep = np.sort(np.concatenate([
            rng.permutation(np.flatnonzero(train_labels == c))[:per_class] for c in range(len(raw.classes))
        ]))
        train_images, train_labels = train_images[keep], train_labels[keep]
    train_images = resize_images(train_images, image_size, resize)
    test_images = resize_images(raw.test_images, image_size, resize)
    pixels = train_images.reshape(-1, train_images.shape[-1]).astype(np.float64) / 255.0
    mean, std = pixels.mean(axis=0), pixels.std(axis=0)
    config = {"source": source, "image_size": image_size, "resize": resize, "train_limit": train_limit, "seed": seed}
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as h5:
        for split, images, labels in (("train", train_images, train_labels), ("test", test_images, raw.test_labels)):
            group = h5.create_group(split)
            group.create_dataset("images", data=images, chunks=(min(len(images), 1024), *images.shape[1:]),
                                 compression="gzip", compression_opts=1)
            group.create_dataset("labels", data=labels.astype(np.int64))
        h5.attrs.update({"mean": mean.astype(np.float32), "std": std.astype(np.float32),
                         "classes": np.array(raw.classes, dtype=h5py.string_dtype()), "source": source,
                         "image_size": image_size})
        write_provenance(h5, "prepare_data", config, {})
    return {"train": len(train_labels), "test": len(raw.test_labels), "mean": mean.tolist(), "std": std.tolist()}


# --------------------------------------------------------------------------- loading

@dataclass
class DatasetInfo:
    mean: np.ndarray
    std: np.ndarray
    classes: list[str]
    image_size: int
    source: str

    @property
    def channels(self) -> int:
        return len(self.mean)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def read_info(path: str | os.PathLike) -> DatasetInfo:
    with open_h5(path) as h5:
        try:
            return DatasetInfo(np.asarray(h5.attrs["mean"], dtype=np.float32), np.asarray(h5.attrs["std"], dtype=np.float32),
                               [c.decode() if isinstance(c, bytes) else str(c) for c in h5.attrs["classes"]],
                               int(h5.attrs["image_size"]), str(h5.attrs["source"]))
        except KeyError as err:
            raise ArtifactError(f"{path}: prepared dataset lacks attribute {err}") from None


def normalize(images_uint8: np.ndarray, info: DatasetInfo) -> torch.Tensor:
    """uint8 NHWC -> normalised float32 NCHW tensor."""
    x = torch.from_numpy(np.ascontiguousarray(images_uint8)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.from_numpy(info.mean).view(1, -1, 1, 1)
    std = torch.from_numpy(info.std).view(1, -1, 1, 1).clamp_min(1e-8)
    return (x - mean) / std


def load_split(path: str | os.PathLike, split: str, device: torch.device | str = "cpu",
               limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, DatasetInfo]:
    """Load one split of ``data.h5`` as normalised images and labels on ``device``."""
    info = read_info(path)
    with open_h5(path) as h5:
        if f"{split}/images" not in h5:
            raise ArtifactError(f"{path}: no split {split!r} in prepared dataset")
        images = h5[f"{split}/images"][:limit] if limit else h5[f"{split}/images"][:]
        labels = h5[f"{split}/labels"][:limit] if limit else h5[f"{split}/labels"][:]
    if len(images) != len(labels):
        raise ArtifactError(f"{path}: {split} has {len(images)} images but {len(labels)} labels")
    return normalize(images, info).to(device), torch.from_numpy(labels.astype(np.int64)).to(device), info

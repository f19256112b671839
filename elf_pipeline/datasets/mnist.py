"""MNIST and Fashion-MNIST (IDX files, optionally gzip-compressed), and scikit-learn's 8x8 digits."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from elf_pipeline.datasets.base import DataSourceError, RawDataset, stratified_split, torchvision_download

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FASHION_MNIST_HELP = (
    "install Debian's package with `apt-get install dataset-fashion-mnist` (puts the files in "
    "/usr/share/datasets/fashion-mnist) or download the four *-ubyte.gz files of the Fashion-MNIST "
    "release into that folder and set datasets.<name>.root"
)
MNIST_HELP = (
    "download the four *-ubyte.gz files of the MNIST release into that folder and set datasets.<name>.root, "
    "or set download: true where a network exists"
)
DIGIT_CLASSES = [str(d) for d in range(10)]


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


def _find_idx(folders: list[Path], stem: str, help_text: str) -> Path:
    for folder in folders:
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.is_file():
                return candidate
    raise DataSourceError(f"{folders[0]}: expected {stem}[.gz] there; {help_text}")


def load_idx_dataset(root: str | os.PathLike, classes: list[str], help_text: str,
                     subfolders: tuple[str, ...] = ()) -> RawDataset:
    root = Path(root)
    if not root.is_dir():
        raise DataSourceError(f"{root}: dataset folder not found; {help_text}")
    folders = [root, *(root / sub for sub in subfolders)]
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_find_idx(folders, f"{prefix}-images-idx3-ubyte", help_text))
        labels = read_idx(_find_idx(folders, f"{prefix}-labels-idx1-ubyte", help_text))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataSourceError(f"{root}: {split} images {images.shape} and labels {labels.shape} do not match")
        if labels.size and labels.max() >= len(classes):
            raise DataSourceError(f"{root}: {split} labels reach {labels.max()}, expected 0..{len(classes) - 1}")
        arrays[split] = (images[..., None], labels.astype(np.int64))
    return RawDataset(*arrays["train"], *arrays["test"], classes=classes)


def load_fashion_mnist(root: str | os.PathLike | None, download: bool = False, **_: object) -> RawDataset:
    if root is None:
        raise DataSourceError(f"fashion_mnist: no root configured; {FASHION_MNIST_HELP}")
    if download:
        torchvision_download("fashion_mnist", "FashionMNIST", Path(root), ({"train": True}, {"train": False}))
    return load_idx_dataset(root, FASHION_MNIST_CLASSES, FASHION_MNIST_HELP, subfolders=("FashionMNIST/raw",))


def load_mnist(root: str | os.PathLike | None, download: bool = False, **_: object) -> RawDataset:
    if root is None:
        raise DataSourceError(f"mnist: no root configured; {MNIST_HELP}")
    if download:
        torchvision_download("mnist", "MNIST", Path(root), ({"train": True}, {"train": False}))
    return load_idx_dataset(root, DIGIT_CLASSES, MNIST_HELP, subfolders=("MNIST/raw",))


def load_digits(root: str | os.PathLike | None = None, test_fraction: float = 0.2, split_seed: int = 0,
                **_: object) -> RawDataset:
    """scikit-learn's 8x8 digits (1,797 real images): a stratified, seeded train/test split."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    test_mask = stratified_split(labels, test_fraction, split_seed)
    return RawDataset(images[~test_mask], labels[~test_mask], images[test_mask], labels[test_mask],
                      classes=list(DIGIT_CLASSES))

"""SVHN, cropped digits: train_32x32.mat and test_32x32.mat (MATLAB v5; ``extra`` is not used)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from elf_pipeline.datasets.base import DataSourceError, RawDataset, require_root, torchvision_download

CLASSES = [str(d) for d in range(10)]


def _read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import scipy.io

    if not path.is_file():
        raise DataSourceError(f"{path}: not found (SVHN cropped digits, format 2)")
    try:
        mat = scipy.io.loadmat(str(path))
    except (ValueError, OSError, NotImplementedError, TypeError) as err:
        raise DataSourceError(f"{path}: not a readable MATLAB v5 file ({err})") from None
    if "X" not in mat or "y" not in mat:
        raise DataSourceError(f"{path}: expected variables X and y, found {', '.join(k for k in mat if not k.startswith('__'))}")
    images, labels = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
    if images.ndim != 4 or images.shape[:3] != (32, 32, 3):
        raise DataSourceError(f"{path}: X should be 32 x 32 x 3 x N, got {images.shape}")
    if images.shape[3] != len(labels):
        raise DataSourceError(f"{path}: X holds {images.shape[3]} images but y has {len(labels)} labels")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise DataSourceError(f"{path}: y spans {labels.min()}..{labels.max()}, expected 1..10 (10 = digit 0)")
    labels[labels == 10] = 0
    return np.ascontiguousarray(images.transpose(3, 0, 1, 2), dtype=np.uint8), labels


def load_svhn(root: str | os.PathLike | None, download: bool = False, **_: object) -> RawDataset:
    if download and root is not None:
        torchvision_download("svhn", "SVHN", Path(root), ({"split": "train"}, {"split": "test"}))
    root = require_root(root, "svhn")
    train_images, train_labels = _read_mat(root / "train_32x32.mat")
    test_images, test_labels = _read_mat(root / "test_32x32.mat")
    return RawDataset(train_images, train_labels, test_images, test_labels, list(CLASSES))

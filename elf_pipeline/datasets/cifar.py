"""CIFAR-10 and CIFAR-100 in their "python version" release: pickled batches.

The batches are Python pickles, which can run arbitrary code when loaded.  They are read here with
a restricted unpickler that resolves only the numpy names needed to rebuild arrays (and refuses
every other global), so a tampered file in a configured root fails with a message instead of
executing anything.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np

from elf_pipeline.datasets.base import DataSourceError, RawDataset, find_dir, require_root, torchvision_download

# Globals a pickled numpy array may reference (numpy 1.x and 2.x spellings); nothing else loads.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 rebuild bytes (as in re-saved copies)
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} (only numpy arrays are allowed)")


def read_pickle(path: Path) -> dict:
    """One CIFAR batch file as a dict with ``str`` keys."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataSourceError(f"{path}: cannot read ({err})") from None
    try:
        # encoding="bytes": the release was pickled by Python 2 (its str keys arrive as bytes)
        value = _ArrayOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise DataSourceError(f"{path}: not a CIFAR batch pickle ({err})") from None
    if not isinstance(value, dict):
        raise DataSourceError(f"{path}: expected a pickled dict, got {type(value).__name__}")
    return {key.decode() if isinstance(key, bytes) else str(key): item for key, item in value.items()}


def _names(values: object, path: Path, key: str) -> list[str]:
    if not isinstance(values, (list, tuple)):
        raise DataSourceError(f"{path}: {key!r} should be a list of class names")
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataSourceError(f"{path}: CIFAR batch file not found")
    batch = read_pickle(path)
    for key in ("data", label_key):
        if key not in batch:
            raise DataSourceError(f"{path}: batch lacks {key!r} (has {', '.join(sorted(batch))})")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataSourceError(f"{path}: 'data' should be uint8 N x 3072 (32x32x3 channel-major), got {data.dtype} {data.shape}")
    if labels.shape != (len(data),):
        raise DataSourceError(f"{path}: {len(data)} images but {label_key!r} has shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataSourceError(f"{path}: {label_key!r} spans {labels.min()}..{labels.max()}, expected 0..{num_classes - 1}")
    # rows are 1024 red, 1024 green, 1024 blue values of a 32x32 image
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def load_cifar10(root: str | os.PathLike | None, download: bool = False, **_: object) -> RawDataset:
    if download and root is not None:
        torchvision_download("cifar10", "CIFAR10", Path(root), ({"train": True},))
    root = require_root(root, "cifar10")
    folder = find_dir(root, ("cifar-10-batches-py",), "batches.meta")
    if folder is None:
        raise DataSourceError(f"{root}: expected cifar-10-batches-py/batches.meta (with data_batch_1..5 and test_batch) "
                              "from the CIFAR-10 python release")
    classes = _names(read_pickle(folder / "batches.meta").get("label_names"), folder / "batches.meta", "label_names")
    if len(classes) != 10:
        raise DataSourceError(f"{folder / 'batches.meta'}: expected 10 label_names, got {len(classes)}")
    train = [_batch(folder / f"data_batch_{i}", "labels", 10) for i in range(1, 6)]
    test_images, test_labels = _batch(folder / "test_batch", "labels", 10)
    return RawDataset(np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train]),
                      test_images, test_labels, classes)


def load_cifar100(root: str | os.PathLike | None, download: bool = False, **_: object) -> RawDataset:
    if download and root is not None:
        torchvision_download("cifar100", "CIFAR100", Path(root), ({"train": True},))
    root = require_root(root, "cifar100")
    folder = find_dir(root, ("cifar-100-python",), "meta")
    if folder is None:
        raise DataSourceError(f"{root}: expected cifar-100-python/meta (with train and test) from the CIFAR-100 python release")
    classes = _names(read_pickle(folder / "meta").get("fine_label_names"), folder / "meta", "fine_label_names")
    if len(classes) != 100:
        raise DataSourceError(f"{folder / 'meta'}: expected 100 fine_label_names, got {len(classes)}")
    train_images, train_labels = _batch(folder / "train", "fine_labels", 100)
    test_images, test_labels = _batch(folder / "test", "fine_labels", 100)
    return RawDataset(train_images, train_labels, test_images, test_labels, classes)

"""Method ``import``: a synthetic set distilled elsewhere (e.g. released by MTT, DATM, DM or DC).

Accepted files (paths relative to the working directory):

- ``.pt`` / ``.pth``, loaded with ``torch.load(weights_only=True)`` (anything holding Python objects
  beyond tensors and plain containers is refused): a dict with ``images``/``labels`` (also
  ``image_syn``/``label_syn``, ``x``/``y``), an ``(images, labels)`` tuple or list, DC/DSA/DM's
  ``{"data": [[images, labels], ...]}`` (the first experiment), or a bare images tensor with the
  labels in ``labels_path`` (MTT's ``images_best.pt`` + ``labels_best.pt``);
- ``.npz`` (no pickled objects) and ``.h5``/``.hdf5`` with arrays named as above.

``normalization`` declares the pixel space of the file: ``dataset`` (normalised with this
``data.h5``'s mean/std), ``{published: <code>}`` (normalised with the constants of the code that
wrote it, ``datasets.catalog.RELEASE_STATS``: ``dc`` for DC/DSA/DM, ``mtt``, ``elf``), bare
``published`` (only where those codes agree, e.g. CIFAR-10; CIFAR-100's disagree), ``{mean, std}``
(the constants themselves), ``unit`` ([0, 1] pixels) or ``uint8`` (0..255).  The
images are converted to the dataset's normalised space and validated (NCHW shape matching the
dataset's channels and image size, finite values, labels in range, exactly ``ipc`` per class).

Soft labels (DATM's ``labels_best.pt``): an N x C table of class probabilities (non-negative, rows
summing to 1, C the dataset's class count), kept as such; N must be ``ipc`` x C and the set is
ordered by each row's most probable class.  ``lr_path`` (MTT/DATM's ``lr_best.pt``) holds the
student lr learned with the set: a positive scalar, stored as ``syn_lr`` for ``train.lr: learned``.
``zca: {eps}`` declares a set released in ZCA space (MTT/DATM CIFAR sets, whitened after the
normalisation): its values are kept, ``normalization`` must be ``dataset``, and later stages refit
the whitening on this dataset's training split with that ``eps`` (kornia's ``ZCAWhitening``, as
MTT does) to test students on whitened test images.

Beyond the structure, the declared pixel space is compared with the images' statistics
(``pixel_space``; ``space_check``), ``label_map`` re-labels a file whose classes are in another
order (feature extraction checks the order with the teacher; ``label_check``) and ``expected``
records the accuracies the release's authors report, for the report.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import torch

from elf_pipeline.artifacts.data_file import DatasetInfo, normalize, read_info
from elf_pipeline.artifacts.synset import SyntheticSet, check_soft_labels
from elf_pipeline.config.vocab import IMPORT_NORMALIZATIONS
from elf_pipeline.datasets.catalog import RELEASE_STATS, release_stats
from elf_pipeline.engine.zca import DEFAULT_EPS
from elf_pipeline.infra.io import ArtifactError, not_torch_file, open_h5, sha256_file
from elf_pipeline.stages.distill import pixel_space
from elf_pipeline.stages.distill.import_options import SPACE_CHECKS, ImportedSetError, expected_json, relabel

log = logging.getLogger(__name__)

NORMALIZATIONS = IMPORT_NORMALIZATIONS
SPECTRUM_IMAGES = 1000  # training images whose principal components the whitening check compares with
IMAGE_KEYS = ("images", "image_syn", "images_syn", "x")
LABEL_KEYS = ("labels", "label_syn", "labels_syn", "y")


def _to_numpy(value: object, path: Path, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) for v in value):
        return np.asarray(value)
    raise ImportedSetError(f"{path}: {what} should be a tensor or array, got {type(value).__name__}")


def _pick(mapping: dict, keys: tuple[str, ...]) -> object | None:
    return next((mapping[key] for key in keys if key in mapping), None)


def _from_container(value: object, path: Path) -> tuple[object, object | None]:
    """(images, labels or None) out of what a released ``.pt`` file holds."""
    if isinstance(value, dict):
        if isinstance(value.get("data"), (list, tuple)) and value["data"]:  # DC/DSA/DM: {'data': [[img, lab], ...]}
            first = value["data"][0]
            if isinstance(first, (list, tuple)) and len(first) == 2:
                return first[0], first[1]
        images = _pick(value, IMAGE_KEYS)
        if images is None:
            raise ImportedSetError(f"{path}: no images found (keys: {', '.join(map(str, value))}; expected one of "
                                   f"{', '.join(IMAGE_KEYS)})")
        return images, _pick(value, LABEL_KEYS)
    if isinstance(value, (list, tuple)):
        if len(value) == 2:
            return value[0], value[1]
        raise ImportedSetError(f"{path}: a list/tuple should be (images, labels), got {len(value)} items")
    return value, None


def _load_torch(path: Path) -> object:
    kind = not_torch_file(path)
    if kind is not None:
        raise ImportedSetError(f"{path}: not a torch file (torch.save writes a zip archive); it holds {kind}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else "unsupported content"
        raise ImportedSetError(f"{path}: refused: the file holds Python objects beyond tensors and plain containers, "
                               f"which weights_only loading does not run ({reason[:160]}); re-save the tensors alone") from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError) as err:
        raise ImportedSetError(f"{path}: not a readable torch file ({err.__class__.__name__}: {str(err)[:160]})") from None


def _load_arrays(path: Path) -> tuple[object, object | None]:
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        return _from_container(_load_torch(path), path)
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        except ValueError as err:
            raise ImportedSetError(f"{path}: refused or unreadable .npz ({err}); store plain numeric arrays") from None
        except (OSError, EOFError) as err:
            raise ImportedSetError(f"{path}: not a readable .npz file ({err})") from None
        if len(arrays) == 1:
            return next(iter(arrays.values())), None
        return _from_container(arrays, path)
    if suffix in (".h5", ".hdf5"):
        with open_h5(path) as h5:
            arrays = {key: h5[key][()] for key in h5 if isinstance(h5[key], h5py.Dataset)}
        return _from_container(arrays, path)
    raise ImportedSetError(f"{path}: unsupported file type {suffix!r} (use .pt, .pth, .npz, .h5 or .hdf5)")


def _soft_labels(labels: np.ndarray, path: Path, n: int, num_classes: int) -> np.ndarray:
    if len(labels) != n:
        raise ImportedSetError(f"{path}: {n} images but {len(labels)} soft label rows")
    try:
        check_soft_labels(labels.astype(np.float64), path, num_classes)
    except ArtifactError as err:
        raise ImportedSetError(str(err)) from None
    return labels.astype(np.float32)


def _labels_array(raw: object, path: Path, n: int, num_classes: int) -> np.ndarray:
    labels = _to_numpy(raw, path, "labels")
    if labels.ndim == 2:
        one_hot = labels.shape == (n, num_classes) and np.isin(labels, (0, 1)).all() and (labels.sum(axis=1) == 1).all()
        if not one_hot:
            return _soft_labels(labels, path, n, num_classes)
        labels = labels.argmax(axis=1)
    if labels.ndim != 1:
        raise ImportedSetError(f"{path}: labels should be a vector of class indices, got shape {labels.shape}")
    if len(labels) != n:
        raise ImportedSetError(f"{path}: {n} images but {len(labels)} labels")
    if not np.isfinite(labels.astype(np.float64)).all() or (labels.astype(np.float64) % 1 != 0).any():
        raise ImportedSetError(f"{path}: labels must be whole class indices")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ImportedSetError(f"{path}: labels span {labels.min()}..{labels.max()} but the dataset has {num_classes} "
                               f"classes (0..{num_classes - 1})")
    return labels


def _to_dataset_space(images: np.ndarray, normalization: str, info: DatasetInfo, path: Path) -> np.ndarray:
    low, high = float(images.min()), float(images.max())
    if normalization == "uint8":
        if low < 0 or high > 255:
            raise ImportedSetError(f"{path}: values span [{low:.3g}, {high:.3g}] but normalization: uint8 means 0..255")
        images = images / 255.0
    elif normalization == "unit":
        if low < -0.5 or high > 1.5:
            raise ImportedSetError(f"{path}: values span [{low:.3g}, {high:.3g}], far outside [0, 1] for normalization: unit "
                                   "(already normalised? declare dataset or published)")
    elif normalization not in ("dataset", "unit", "uint8"):
        mean, std = _release_constants(normalization, info, path)
        if len(mean) != images.shape[1]:
            raise ImportedSetError(f"{path}: normalization {_label(normalization)} has {len(mean)} mean/std values but "
                                   f"the images have {images.shape[1]} channels")
        images = images * np.asarray(std).reshape(1, -1, 1, 1) + np.asarray(mean).reshape(1, -1, 1, 1)
    if normalization != "dataset":
        images = (images - info.mean.reshape(1, -1, 1, 1)) / np.maximum(info.std, 1e-8).reshape(1, -1, 1, 1)
    return images


def _valid_normalization(value: object) -> bool:
    if isinstance(value, dict):
        return set(value) == {"published"} or set(value) == {"mean", "std"}
    return value in NORMALIZATIONS


def _label(normalization: object) -> str:
    """The normalisation as one string (recorded as ``imported_normalization``): ``published:mtt``,
    ``mean=[...],std=[...]`` or the plain name."""
    if isinstance(normalization, dict) and "published" in normalization:
        return f"published:{normalization['published']}"
    if isinstance(normalization, dict):
        return f"mean={json.dumps(list(normalization['mean']))},std={json.dumps(list(normalization['std']))}"
    return str(normalization)


def _release_constants(normalization: object, info: DatasetInfo, path: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the releasing code's space: from the catalog for the dataset's source, or the
    block's own mean/std; a bare ``published`` on a source the catalog does not cover falls back to
    the statistics recorded in ``data.h5``."""
    if normalization == "published" and info.source not in RELEASE_STATS:
        if info.published_mean is None or info.published_std is None:
            raise ImportedSetError(f"{path}: normalization: published, but the prepared dataset ({info.source}) records no "
                                   "published statistics; declare dataset, unit or uint8, or give mean and std")
        return tuple(map(float, info.published_mean)), tuple(map(float, info.published_std))
    try:
        stats = release_stats(info.source, normalization)
    except ValueError as err:
        raise ImportedSetError(f"{path}: normalization {_label(normalization)}: {err}") from None
    assert stats is not None
    return stats


def _declared_space(normalization: object, info: DatasetInfo, path: Path) -> pixel_space.Space:
    channels = info.channels
    if normalization in ("uint8", "unit", "dataset"):
        return next(space for space in pixel_space.candidate_spaces(info.mean, info.std, {})
                    if space.name == normalization)
    mean, std = _release_constants(normalization, info, path)
    if len(mean) != channels:
        raise ImportedSetError(f"{path}: normalization {_label(normalization)} has {len(mean)} mean/std values but "
                               f"the images have {channels} channels")
    declare = (f"{{published: {normalization['published']}}}" if isinstance(normalization, dict) and "published" in normalization
               else _label(normalization))
    return pixel_space.Space(_label(normalization), declare, tuple(map(float, std)), tuple(map(float, mean)))


def _training_spectrum(data: str | os.PathLike, info: DatasetInfo) -> pixel_space.Spectrum | None:
    """Principal components of the first ``SPECTRUM_IMAGES`` normalised training images (None where
    ``data.h5`` holds no training split)."""
    with open_h5(data) as h5:
        if "train/images" not in h5 or len(h5["train/images"]) < 2:
            return None
        sample = h5["train/images"][:SPECTRUM_IMAGES]
    return pixel_space.spectrum(normalize(sample, info).numpy())


def check_pixel_space(images: np.ndarray, normalization: object, zca: dict | None, info: DatasetInfo,
                      data: str | os.PathLike, path: Path, mode: str = "error") -> dict:
    """Compare the declared pixel space with the images' statistics (``pixel_space``): a declaration
    they rule out raises (``mode: error``) or warns (``warn``); returns the attrs recorded in
    ``synset.h5`` (``import_space_check``: ok, warning or off; the spaces the images fit)."""
    if mode == "off":
        return {"import_space_check": "off"}
    declared = _declared_space(normalization, info, path)
    spaces = pixel_space.candidate_spaces(info.mean, info.std, RELEASE_STATS.get(info.source, {}), declared)
    detection = pixel_space.detect(images, info.mean, info.std, spaces, _training_spectrum(data, info))
    verdict = pixel_space.judge(detection, declared, zca is not None, path)
    if verdict.level == "error" and mode == "error":
        raise ImportedSetError(verdict.message + " (or set space_check: warn)")
    if verdict.level != "ok":
        log.warning("%s", verdict.message)
    else:
        log.info("%s: pixel space %s fits the images (consistent: %s)", path, declared.name, ", ".join(verdict.consistent))
    return {"import_space_check": "ok" if verdict.level == "ok" else "warning",
            "import_space_note": verdict.message or "", "import_consistent_spaces": ", ".join(verdict.consistent),
            "import_whitening_slope": float("nan") if detection.slope is None else detection.slope}


def _learned_lr(path: Path) -> float:
    if not path.is_file():
        raise ImportedSetError(f"{path}: learned lr file not found")
    value = _load_torch(path) if path.suffix.lower() in (".pt", ".pth") else _load_arrays(path)[0]
    array = np.asarray(_to_numpy(value, path, "the learned lr") if not isinstance(value, (int, float)) else value,
                       dtype=np.float64)
    if array.size != 1 or not np.isfinite(array).all() or float(array.reshape(-1)[0]) <= 0:
        raise ImportedSetError(f"{path}: the learned lr must be one positive, finite number, got shape "
                               f"{tuple(array.shape)}" + (f" value {float(array.reshape(-1)[0]):.4g}" if array.size == 1 else ""))
    return float(array.reshape(-1)[0])


def _checked_images(raw: object, path: Path, info: DatasetInfo) -> np.ndarray:
    """The imported images as float64 N x C x H x W, refused (naming the file) where the layout, size,
    dtype or values do not fit the dataset."""
    images = _to_numpy(raw, path, "images")
    shape, size = images.shape, info.image_size
    if images.ndim != 4:
        raise ImportedSetError(f"{path}: images should be N x C x H x W, got shape {shape}")
    if shape[1] != info.channels and shape[3] == info.channels and shape[1] == size:
        raise ImportedSetError(f"{path}: images have shape {shape}, which looks N x H x W x C; expected N x {info.channels} x "
                               f"{size} x {size} (NCHW)")
    if shape[1] != info.channels:
        raise ImportedSetError(f"{path}: images have {shape[1]} channels but the dataset ({info.source}) has {info.channels}")
    if shape[2:] != (size, size):
        raise ImportedSetError(f"{path}: images are {shape[2]}x{shape[3]} but the dataset is prepared at {size}x{size}")
    if not np.issubdtype(images.dtype, np.number):
        raise ImportedSetError(f"{path}: images have non-numeric dtype {images.dtype}")
    images = images.astype(np.float64)
    bad = int((~np.isfinite(images)).sum())
    if bad:
        raise ImportedSetError(f"{path}: images hold {bad} non-finite values (NaN/Inf)")
    return images


def import_synset(data: str | os.PathLike, ipc: int, path: str | os.PathLike | None = None,
                  labels_path: str | os.PathLike | None = None, normalization: str | None = None,
                  lr_path: str | os.PathLike | None = None, zca: dict | None = None,
                  space_check: str = "error", expected: dict | None = None, label_check: str = "error",
                  label_map: list[int] | None = None) -> SyntheticSet:
    """Read, validate and convert an externally distilled set to the space of ``data.h5``.

    ``space_check``: ``error`` (default) fails on a declared pixel space the images' statistics rule
    out, ``warn`` logs and records it, ``off`` skips the comparison.  ``expected``: the accuracies the
    release's authors report (``{accuracy: {arch: fraction}, source, tolerance}``), shown in the report
    beside the baselines.  ``label_check`` (error, warn, off): what feature extraction does when the
    teacher's predictions follow a permutation of the labels (``elf_pipeline.engine.label_order``);
    ``label_map``: file label ``i`` is class ``label_map[i]`` (accepts such a permutation)."""
    if path is None:
        raise ImportedSetError("method import: no path configured (distillation.methods.import.path, per IPC via by_ipc)")
    if not _valid_normalization(normalization):
        raise ImportedSetError(f"method import: normalization must be one of {', '.join(NORMALIZATIONS)}, "
                               f"{{published: <code>}} or {{mean: [...], std: [...]}}, got {normalization!r}")
    expected_record = expected_json(expected) if expected is not None else None
    if label_check not in SPACE_CHECKS:
        raise ImportedSetError(f"method import: label_check must be one of {', '.join(SPACE_CHECKS)}, got {label_check!r}")
    if space_check not in SPACE_CHECKS:
        raise ImportedSetError(f"method import: space_check must be one of {', '.join(SPACE_CHECKS)}, got {space_check!r}")
    if zca is not None and normalization != "dataset":
        raise ImportedSetError(f"method import: a set in ZCA space (zca) holds whitened values; declare normalization: "
                               f"dataset, got {normalization!r}")
    info = read_info(data)
    path = Path(path)
    for file in (path, *([Path(labels_path)] if labels_path else [])):
        if file.is_dir():
            raise ImportedSetError(f"{file}: a folder, not a file; name the synthetic set file in it (e.g. images_best.pt)")
        if not file.is_file():
            raise ImportedSetError(f"{file}: imported synthetic set file not found")
    raw_images, raw_labels = _load_arrays(path)
    if labels_path is not None:
        raw_labels = _load_arrays(Path(labels_path))[0]
    if raw_labels is None:
        raise ImportedSetError(f"{path}: holds images only; give the labels file as labels_path")
    images = _checked_images(raw_images, path, info)
    labels = _labels_array(raw_labels, Path(labels_path) if labels_path else path, len(images), info.num_classes)
    soft = labels.ndim == 2
    if label_map is not None:
        labels = relabel(labels, label_map, info.num_classes)
    if soft and len(labels) != ipc * info.num_classes:
        raise ImportedSetError(f"{path}: expected {ipc * info.num_classes} images (ipc {ipc} x {info.num_classes} "
                               f"classes), got {len(labels)}")
    classes = labels.argmax(axis=1) if soft else labels
    counts = np.bincount(classes, minlength=info.num_classes) if not soft else np.full(info.num_classes, ipc)
    if (counts != ipc).any():
        wrong = {int(c): int(counts[c]) for c in np.flatnonzero(counts != ipc)[:5]}
        raise ImportedSetError(f"{path}: expected {ipc} images per class (ipc {ipc}) for {info.num_classes} classes, "
                               f"got {len(labels)} images; classes with other counts (class: count): {wrong}")
    checked = check_pixel_space(images, normalization, zca, info, data, path, space_check)
    if zca is None:
        images = _to_dataset_space(images, normalization, info, path)
    order = np.argsort(classes, kind="stable")  # class-major, like the other methods
    extra = {"imported_from": str(path), "imported_sha256": sha256_file(path), "imported_normalization": _label(normalization),
             **checked, **({"imported_expected": expected_record} if expected_record else {}),
             **({"imported_label_map": json.dumps([int(v) for v in label_map])} if label_map is not None else {})}
    if zca is not None:
        extra["zca_eps"] = float(zca.get("eps", DEFAULT_EPS))
    if lr_path:
        extra.update(syn_lr=_learned_lr(Path(lr_path)), imported_lr_from=str(lr_path))
    if labels_path:
        extra.update(imported_labels_from=str(labels_path), imported_labels_sha256=sha256_file(labels_path))
    return SyntheticSet(torch.from_numpy(images[order].astype(np.float32)), torch.from_numpy(labels[order]),
                        extra_attrs=extra)

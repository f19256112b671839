"""``synset.h5``: a synthetic set, its writer and its readers.

Layout: ``images`` float32 NCHW (in the dataset's normalised space, or ZCA-whitened where the
attrs carry ``zca_eps``), ``labels`` int64 class indices or float32 N x C class probabilities (soft
labels, attr ``label_kind: soft``), ``history/<name>`` float64 per-iteration curves of the method;
attrs ``method``, ``ipc``, method extras (``syn_lr``: a learned student lr, ``zca_eps`` ...) and
provenance (``config``: the method's block).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import h5py
import numpy as np

from elf_pipeline.infra.errors import NonFiniteResult
from elf_pipeline.infra.io import (
    ArtifactError,
    atomic_path,
    canonical_json,
    config_hash,
    open_h5,
    read_arrays,
    require_finite,
    sha256_file,
    write_provenance,
)

if TYPE_CHECKING:
    import torch


@dataclass
class SyntheticSet:
    images: torch.Tensor  # float32 NCHW, in the dataset's normalised space
    labels: torch.Tensor  # int64 class indices, or float32 N x C probabilities (soft labels)
    history: dict[str, list[float]] = field(default_factory=dict)
    extra_attrs: dict[str, float] = field(default_factory=dict)


def write_synset(path: str | os.PathLike, synset: SyntheticSet, method: str, ipc: int, config: dict, data_path: str) -> None:
    images = synset.images.detach().cpu().float().numpy()
    if not np.isfinite(images).all():
        raise NonFiniteResult(f"{method} produced non-finite synthetic images; nothing written to {path}")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("images", data=images)
        soft = synset.labels.ndim == 2
        labels = synset.labels.detach().cpu().numpy()
        h5.create_dataset("labels", data=labels.astype(np.float32) if soft else labels.astype(np.int64))
        for name, values in synset.history.items():
            h5.create_dataset(f"history/{name}", data=np.asarray(values, dtype=np.float64))
        h5.attrs.update({"method": method, "ipc": ipc, "label_kind": "soft" if soft else "hard", **synset.extra_attrs})
        write_provenance(h5, "distill", {"method": method, "ipc": ipc, **config}, {"data": sha256_file(data_path)})


def read_synset(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    images, labels = read_arrays(path, "images", "labels")
    if images.ndim != 4 or len(images) != len(labels):
        raise ArtifactError(f"{path}: images {images.shape} and labels {labels.shape} do not form an NCHW set")
    require_finite(images, f"{path}: images")
    if labels.ndim == 2:
        check_soft_labels(labels, path, labels.shape[1])
        return torch.from_numpy(images.astype(np.float32)), torch.from_numpy(labels.astype(np.float32))
    return torch.from_numpy(images.astype(np.float32)), torch.from_numpy(labels.astype(np.int64))


SOFT_TOLERANCE = 1e-3  # how far a soft-label row may sum from 1


def check_soft_labels(labels: np.ndarray, path: str | os.PathLike, num_classes: int) -> None:
    """Soft labels are an N x ``num_classes`` array of class probabilities: finite, non-negative,
    each row summing to 1; anything else is an ArtifactError naming the file and the problem."""
    if labels.ndim != 2 or labels.shape[1] != num_classes:
        raise ArtifactError(f"{path}: soft labels have shape {labels.shape}, expected N x {num_classes} "
                            f"(one probability per class of the dataset)")
    if not np.isfinite(labels).all():
        raise ArtifactError(f"{path}: soft labels hold non-finite values (NaN/Inf)")
    if (labels < 0).any():
        raise ArtifactError(f"{path}: soft labels hold negative entries (min {float(labels.min()):.4g}); rows must be "
                            "class probabilities (logits? apply a softmax first)")
    sums = labels.sum(axis=1)
    worst = int(np.abs(sums - 1).argmax()) if len(sums) else 0
    if len(sums) and abs(sums[worst] - 1) > SOFT_TOLERANCE:
        raise ArtifactError(f"{path}: soft label rows must sum to 1 (row {worst} sums to {float(sums[worst]):.4g})")


def synset_label_kind(synset: str | os.PathLike) -> str:
    """``hard`` (class indices) or ``soft`` (class probabilities)."""
    with open_h5(synset) as h5:
        return "soft" if h5["labels"].ndim == 2 else "hard"


def synset_learned_lr(synset: str | os.PathLike) -> float | None:
    """The student lr learned with the set (MTT's ``syn_lr``, an imported ``lr_best.pt``), if any."""
    with open_h5(synset) as h5:
        return float(h5.attrs["syn_lr"]) if "syn_lr" in h5.attrs else None


def synset_zca_eps(synset: str | os.PathLike) -> float:
    """``zca_eps`` of a synthetic set (0.0: its images are in the normalised pixel space)."""
    with open_h5(synset) as h5:
        return float(h5.attrs.get("zca_eps", 0.0))


def synset_protocol(synset: str | os.PathLike) -> dict:
    """The distillation protocol recorded in a synthetic set's attrs, as report columns."""
    with open_h5(synset) as h5:
        config = json.loads(h5.attrs["config"]) if "config" in h5.attrs else {}
        syn_lr = float(h5.attrs["syn_lr"]) if "syn_lr" in h5.attrs else None
        imported = ("import_space_check", "import_space_note", "imported_expected")
        checks = {key: str(h5.attrs[key]) if key in h5.attrs else None for key in imported}
    return {**checks, "distill_config": canonical_json(config), "distill_config_hash": config_hash(config),
            "distill_iterations": config.get("iterations"), "distill_lr_img": config.get("lr_img"),
            "distill_syn_lr": syn_lr, "distill_zca_eps": synset_zca_eps(synset), "label_kind": synset_label_kind(synset)}

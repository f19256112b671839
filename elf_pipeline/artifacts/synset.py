"""``synset.h5``: a synthetic set, its writer and its readers.

Layout: ``images`` float32 NCHW (in the dataset's normalised space, or ZCA-whitened where the
attrs carry ``zca_eps``), ``labels`` int64, ``history/<name>`` float64 per-iteration curves of the
method; attrs ``method``, ``ipc``, method extras (``syn_lr``, ``zca_eps`` ...) and provenance
(``config``: the method's block).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import h5py
import numpy as np

from elf_pipeline.errors import NonFiniteResult
from elf_pipeline.io import (
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
    labels: torch.Tensor  # int64
    history: dict[str, list[float]] = field(default_factory=dict)
    extra_attrs: dict[str, float] = field(default_factory=dict)


def write_synset(path: str | os.PathLike, synset: SyntheticSet, method: str, ipc: int, config: dict, data_path: str) -> None:
    images = synset.images.detach().cpu().float().numpy()
    if not np.isfinite(images).all():
        raise NonFiniteResult(f"{method} produced non-finite synthetic images; nothing written to {path}")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("images", data=images)
        h5.create_dataset("labels", data=synset.labels.cpu().numpy().astype(np.int64))
        for name, values in synset.history.items():
            h5.create_dataset(f"history/{name}", data=np.asarray(values, dtype=np.float64))
        h5.attrs.update({"method": method, "ipc": ipc, **synset.extra_attrs})
        write_provenance(h5, "distill", {"method": method, "ipc": ipc, **config}, {"data": sha256_file(data_path)})


def read_synset(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    images, labels = read_arrays(path, "images", "labels")
    if images.ndim != 4 or len(images) != len(labels):
        raise ArtifactError(f"{path}: images {images.shape} and labels {labels.shape} do not form an NCHW set")
    require_finite(images, f"{path}: images")
    return torch.from_numpy(images.astype(np.float32)), torch.from_numpy(labels.astype(np.int64))


def synset_zca_eps(synset: str | os.PathLike) -> float:
    """``zca_eps`` of a synthetic set (0.0: its images are in the normalised pixel space)."""
    with open_h5(synset) as h5:
        return float(h5.attrs.get("zca_eps", 0.0))


def synset_protocol(synset: str | os.PathLike) -> dict:
    """The distillation protocol recorded in a synthetic set's attrs, as report columns."""
    with open_h5(synset) as h5:
        config = json.loads(h5.attrs["config"]) if "config" in h5.attrs else {}
        syn_lr = float(h5.attrs["syn_lr"]) if "syn_lr" in h5.attrs else None
    return {"distill_config": canonical_json(config), "distill_config_hash": config_hash(config),
            "distill_iterations": config.get("iterations"), "distill_lr_img": config.get("lr_img"),
            "distill_syn_lr": syn_lr, "distill_zca_eps": synset_zca_eps(synset)}

"""``features.h5``: teacher features of every synthetic image at every layer, stored once.

Layout: ``/layers/<name>`` float32 (N, ...) for every feature stage of the teacher; attrs
``layer_names`` (ordered), ``default_layer`` (the teacher's split layer), ``teacher_arch``,
``teacher_test_acc``, ``synset_sha256``, ``teacher_sha256``, ``synset_zca_eps`` and provenance.
Choosing another teacher layer for an evaluation therefore never re-extracts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import h5py
import numpy as np

from elf_pipeline.infra.io import ArtifactError, atomic_path, open_h5, read_arrays, require_finite, sha256_file, write_provenance

if TYPE_CHECKING:
    import torch


def write_features(out: str | os.PathLike, layers: dict[str, np.ndarray], default_layer: str, meta: dict,
                   synset: str | os.PathLike, teacher: str | os.PathLike, zca_eps: float, config: dict,
                   extra: dict | None = None) -> None:
    """Write every layer (in ``layers``' order) of ``teacher`` (checkpoint metadata ``meta``) on ``synset``;
    ``extra``: further attrs (an imported set's ``label_check``/``label_order``)."""
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as h5:
        for name, array in layers.items():
            require_finite(array, f"teacher {teacher} layer {name}")
            h5.create_dataset(f"layers/{name}", data=array)
        h5.attrs.update({"layer_names": np.array(list(layers), dtype=h5py.string_dtype()),
                         "default_layer": default_layer, "teacher_arch": meta["arch"],
                         "teacher_test_acc": float(meta.get("test_acc", float("nan"))),
                         "synset_sha256": sha256_file(synset), "teacher_sha256": sha256_file(teacher),
                         "synset_zca_eps": zca_eps, **(extra or {})})
        write_provenance(h5, "features", config,
                         {"synset": h5.attrs["synset_sha256"], "teacher": h5.attrs["teacher_sha256"]})


@dataclass
class TeacherFeatures:
    layer: str
    values: torch.Tensor
    teacher_arch: str
    teacher_test_acc: float
    sha256: str


def load_features(path: str | os.PathLike, layer: str | None, synset: str | os.PathLike,
                  num_images: int) -> TeacherFeatures:
    """Read one layer, refusing a features file that was made from another synthetic set."""
    import torch

    with open_h5(path) as h5:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in h5.attrs.get("layer_names", [])]
        layer = layer or str(h5.attrs.get("default_layer", ""))
        if layer not in names:
            raise ArtifactError(f"{path}: teacher layer {layer!r} not stored (layers: {', '.join(names)})")
        expected = str(h5.attrs.get("synset_sha256", ""))
        arch, acc = str(h5.attrs.get("teacher_arch", "?")), float(h5.attrs.get("teacher_test_acc", float("nan")))
    (values,) = read_arrays(path, f"layers/{layer}")
    if expected != sha256_file(synset):
        raise ArtifactError(f"{path}: stale features, made from a different synthetic set than {synset} (sha256 mismatch)")
    if len(values) != num_images:
        raise ArtifactError(f"{path}: {len(values)} feature rows for {num_images} synthetic images")
    require_finite(values, f"{path}: layer {layer}")
    return TeacherFeatures(layer, torch.from_numpy(values), arch, acc, sha256_file(path))


def features_label_order(path: str | os.PathLike) -> dict:
    """An imported set's label check as recorded by feature extraction: ``label_check`` and
    ``label_order`` (JSON: per-class agreement of the teacher with the file's labels), or {}."""
    with open_h5(path) as h5:
        return {key: str(h5.attrs[key]) for key in ("label_check", "label_order") if key in h5.attrs}

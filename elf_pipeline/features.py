"""Teacher features of every synthetic image at every layer, stored once in HDF5.

Layout: ``/layers/<name>`` float32 (N, ...) for every feature stage of the teacher; attrs
``layer_names`` (ordered), ``default_layer`` (the teacher's split layer), ``teacher_arch``,
``teacher_test_acc``, ``synset_sha256``, ``teacher_sha256`` and provenance.  Choosing another
teacher layer for an evaluation therefore never re-extracts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import h5py
import numpy as np
import torch

from elf_pipeline.checkpoint import load_model
from elf_pipeline.io import ArtifactError, atomic_path, open_h5, read_arrays, require_finite, sha256_file, write_provenance
from elf_pipeline.training import resolve_device, retry_on_oom
from elf_pipeline.zca import fit_zca_to_data, synset_zca_eps


def read_synset(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = read_arrays(path, "images", "labels")
    if images.ndim != 4 or len(images) != len(labels):
        raise ArtifactError(f"{path}: images {images.shape} and labels {labels.shape} do not form an NCHW set")
    require_finite(images, f"{path}: images")
    return torch.from_numpy(images.astype(np.float32)), torch.from_numpy(labels.astype(np.int64))


@torch.inference_mode()
def extract_features(synset: str | os.PathLike, teacher: str | os.PathLike, out: str | os.PathLike,
                     device: str = "auto", batch_size: int = 256,
                     data: str | os.PathLike | None = None) -> dict[str, tuple[int, ...]]:
    """Write ``teacher``'s output at every layer for every image of ``synset`` to ``out``.

    A ZCA-whitened synthetic set (``zca_eps`` attr) is mapped back to the pixel space the teacher
    was trained in, with the inverse of the transform refitted on ``data``'s training split."""
    torch_device = resolve_device(device)
    images, labels = read_synset(synset)
    zca_eps = synset_zca_eps(synset)
    if zca_eps:
        if data is None:
            raise ArtifactError(f"{synset}: ZCA-whitened synthetic set (zca_eps={zca_eps}); feature extraction needs "
                                "the dataset (--data) to map it back to the teacher's input space")
        images = fit_zca_to_data(data, zca_eps).inverse(images)
    model, meta = load_model(teacher, torch_device)
    if images.shape[1] != meta["channels"] or images.shape[2] != meta["image_size"]:
        raise ArtifactError(f"{synset}: images {tuple(images.shape[1:])} do not fit teacher {teacher} "
                            f"({meta['channels']} channels, {meta['image_size']} px)")
    if int(labels.max()) >= meta["num_classes"] or int(labels.min()) < 0:
        raise ArtifactError(f"{synset}: labels outside 0..{meta['num_classes'] - 1} of teacher {teacher}")

    def run(size: int) -> dict[str, list[np.ndarray]]:
        chunks: dict[str, list[np.ndarray]] = {name: [] for name in model.layer_names}
        for start in range(0, len(images), size):
            for name, value in model.layers(images[start:start + size].to(torch_device)).items():
                chunks[name].append(value.float().cpu().numpy())
        return chunks

    chunks = retry_on_oom(run, batch_size, f"feature extraction from {teacher}")
    shapes = {}
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as h5:
        for name, parts in chunks.items():
            array = np.concatenate(parts)
            require_finite(array, f"teacher {teacher} layer {name}")
            h5.create_dataset(f"layers/{name}", data=array)
            shapes[name] = tuple(array.shape[1:])
        h5.attrs.update({"layer_names": np.array(model.layer_names, dtype=h5py.string_dtype()),
                         "default_layer": model.split, "teacher_arch": meta["arch"],
                         "teacher_test_acc": float(meta.get("test_acc", float("nan"))),
                         "synset_sha256": sha256_file(synset), "teacher_sha256": sha256_file(teacher),
                         "synset_zca_eps": zca_eps})
        write_provenance(h5, "extract_features", {"batch_size": batch_size, "unwhitened": bool(zca_eps)},
                         {"synset": h5.attrs["synset_sha256"], "teacher": h5.attrs["teacher_sha256"]})
    return shapes


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

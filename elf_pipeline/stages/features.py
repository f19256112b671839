"""Feature extraction, the ``features`` stage: synthetic set + teacher -> ``features.h5``.

The teacher's output at every layer for every synthetic image is stored once (layout in
``artifacts.features``), so choosing another teacher layer for an evaluation never re-extracts.
For an imported set the teacher also classifies the images: per-class agreement with the file's
labels is recorded (``label_order``), and a permutation of the classes that explains the teacher
much better than the file's order fails the stage naming it (``elf_pipeline.engine.label_order``; the
import's ``label_check``/``label_map`` decide).
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import torch

from elf_pipeline.artifacts.checkpoint import load_model
from elf_pipeline.artifacts.feature_file import write_features
from elf_pipeline.artifacts.synset import read_synset, synset_zca_eps
from elf_pipeline.engine.evaluation import retry_on_oom
from elf_pipeline.engine.label_order import check_label_order, describe
from elf_pipeline.engine.precision import Numerics, autocast
from elf_pipeline.engine.training import resolve_device
from elf_pipeline.engine.zca import fit_zca_to_data
from elf_pipeline.infra.io import ArtifactError, open_h5

log = logging.getLogger(__name__)


@torch.inference_mode()
def extract_features(synset: str | os.PathLike, teacher: str | os.PathLike, out: str | os.PathLike,
                     device: str = "auto", batch_size: int = 256,
                     data: str | os.PathLike | None = None, precision: str = "fp32") -> dict[str, tuple[int, ...]]:
    """Write ``teacher``'s output at every layer for every image of ``synset`` to ``out``.

    A ZCA-whitened synthetic set (``zca_eps`` attr) is mapped back to the pixel space the teacher
    was trained in, with the inverse of the transform refitted on ``data``'s training split.
    The teacher runs at ``precision``; the features are stored in float32 either way."""
    torch_device = resolve_device(device)
    numerics = Numerics.resolve(precision, False, torch_device)
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
            with autocast(torch_device, numerics.precision):
                outputs = model.layers(images[start:start + size].to(torch_device))
            for name, value in outputs.items():
                chunks[name].append(value.float().cpu().numpy())
        return chunks

    chunks = retry_on_oom(run, batch_size, f"feature extraction from {teacher}")
    layers = {name: np.concatenate(parts) for name, parts in chunks.items()}

    def predict(size: int) -> np.ndarray:
        parts = []
        for start in range(0, len(images), size):
            with autocast(torch_device, numerics.precision):
                parts.append(model(images[start:start + size].to(torch_device)).argmax(dim=1).cpu().numpy())
        return np.concatenate(parts)

    checked = _label_order(synset, labels, lambda: retry_on_oom(predict, batch_size, f"classification by {teacher}"),
                           meta["num_classes"], teacher)
    write_features(out, layers, model.split, meta, synset, teacher, zca_eps,
                   {"batch_size": batch_size, "unwhitened": bool(zca_eps), **numerics.protocol()}, extra=checked)
    return {name: tuple(array.shape[1:]) for name, array in layers.items()}


def _label_order(synset: str | os.PathLike, labels: torch.Tensor, predict, num_classes: int,
                 teacher: str | os.PathLike) -> dict:
    """For an imported set: the teacher's agreement with the file's labels (``label_order`` JSON,
    ``label_check``: identity, possible, likely or off); a likely permutation fails with
    ``label_check: error`` (the default), naming the imported file and the permutation."""
    with open_h5(synset) as h5:
        if h5.attrs.get("method") != "import":
            return {}
        config = json.loads(h5.attrs["config"]) if "config" in h5.attrs else {}
        source = str(h5.attrs.get("imported_labels_from", h5.attrs.get("imported_from", synset)))
    mode = config.get("label_check", "error")
    if mode == "off":
        return {"label_check": "off"}
    file_labels = (labels.argmax(dim=1) if labels.ndim == 2 else labels).numpy()
    order = check_label_order(file_labels, predict(), num_classes)
    if order.verdict != "identity":
        message = (f"{source}: the teacher ({teacher}) agrees with a permutation of the labels on "
                   f"{order.permuted_agreement:.0%} of the images against {order.agreement:.0%} in the file's order "
                   f"({describe(order)}); if the file's classes are in another order, accept it with label_map: "
                   f"{order.permutation} in the import block (or label_check: warn)")
        if order.verdict == "likely" and mode == "error":
            raise ArtifactError(message)
        log.warning("%s%s", message, "" if order.verdict == "likely" else " (too few images to be sure)")
    return {"label_check": order.verdict, "label_order": order.record()}

"""The distillation model itself as the ELF teacher (evaluation ``teacher: {source: distillation}``).

Of the methods here only MTT keeps its distillation models: the expert trajectories, networks of
the distillation architecture (``experts.arch``) trained on the real data, with their parameters
after every epoch. Expert ``k`` after ``epoch`` (default: its last) is written as an ordinary
teacher checkpoint, so feature extraction and online targets use it unchanged. DC/DSA's
networks are re-initialised and discarded during distillation and DM's are random, so those
methods have no distillation-model teacher.

Like MTT itself, this reads expert files through ``artifacts.experts``.
"""

from __future__ import annotations

import logging
import os

import torch
from torch.nn.utils import vector_to_parameters

from elf_pipeline.artifacts.checkpoint import save_checkpoint
from elf_pipeline.artifacts.data_file import load_split
from elf_pipeline.artifacts.expert_file import parameter_layout, read_epochs, read_expert_info
from elf_pipeline.engine.evaluation import evaluate
from elf_pipeline.engine.precision import Numerics
from elf_pipeline.engine.training import resolve_device
from elf_pipeline.infra.errors import InputError
from elf_pipeline.infra.io import ArtifactError, sha256_file
from elf_pipeline.models import build

log = logging.getLogger(__name__)


def teacher_from_expert(expert: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike,
                        epoch: int | None = None, device: str = "auto", precision: str = "fp32") -> dict:
    """Write expert ``expert`` after ``epoch`` as a teacher checkpoint; returns its metadata."""
    info = read_expert_info(expert)
    if info.zca_eps:
        raise ArtifactError(f"{expert}: the expert was trained on ZCA-whitened data; as a teacher it would see "
                            "un-whitened images (use a teachers: entry instead)")
    epoch = info.epochs if epoch is None else epoch
    if not 1 <= epoch <= info.epochs:
        raise InputError(f"expert epoch {epoch} outside 1..{info.epochs} (the epochs stored in {expert})")
    test_images, test_labels, data_info = load_split(data, "test")
    if (data_info.channels, data_info.image_size, data_info.num_classes) != (info.channels, info.image_size, info.num_classes):
        raise ArtifactError(f"{expert}: expert of {info.channels}x{info.image_size}px, {info.num_classes} classes "
                            f"does not fit {data}")
    model = build(info.arch, info.channels, info.num_classes, info.image_size)
    if [(name, tuple(shape)) for name, shape in parameter_layout(model)] != info.layout:
        raise ArtifactError(f"{expert}: parameter layout does not match architecture {info.arch!r}")
    if any(name.endswith(("running_mean", "running_var")) for name, _ in model.named_buffers()):
        raise ArtifactError(f"{expert}: {info.arch!r} has batch-norm statistics, which expert files do not store")
    with torch.no_grad():
        vector_to_parameters(read_epochs(expert, [epoch])[0], model.parameters())
    torch_device = resolve_device(device)
    numerics = Numerics.resolve(precision, False, torch_device)
    accuracy = evaluate(model.to(torch_device), test_images, test_labels, precision=numerics.precision)
    save_checkpoint(out, model, info.arch, info.channels, info.num_classes, info.image_size, epoch=epoch,
                    test_acc=accuracy, source="distillation", expert_sha256=sha256_file(expert), **numerics.protocol())
    log.info("distillation model %s (expert %s, epoch %d): test accuracy %.4f", info.arch, expert, epoch, accuracy)
    return {"arch": info.arch, "epoch": epoch, "test_acc": accuracy}

"""Train evaluation models (students) on a synthetic set, with or without ELF, and test them.

ELF loss for a batch of augmented synthetic images ``x`` with labels ``y`` and the teacher's
features ``t`` of the same (un-augmented) images:

    task  = CE(rear(front(x)), y)
    front = FL(to_teacher(front(x)), t)        # student imitates the teacher's features
    rear  = CE(rear(from_teacher(t)), y)       # student's rear classifies teacher features

``to_teacher``/``from_teacher`` are learned adapters, present only when the student's split output
and the teacher feature differ in shape; each result row says whether they were used.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from elf_pipeline import __version__
from elf_pipeline.data import load_split
from elf_pipeline.features import TeacherFeatures, load_features, read_synset
from elf_pipeline.io import atomic_path, config_hash, sha256_file
from elf_pipeline.losses import LOSS_MODES, feature_loss
from elf_pipeline.models import build
from elf_pipeline.models.adapter import make_adapter
from elf_pipeline.training import Timer, TrainConfig, build_seeded, evaluate, resolve_device, seeded_generator, train

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    """One named evaluation block of the config."""

    loss_mode: str = "task"
    feature_loss: str = "ce"
    lambda_front: float = 1.0
    lambda_rear: float = 1.0
    teacher: str | None = None
    teacher_layer: str | None = None
    student_layer: str | None = None

    def __post_init__(self) -> None:
        if self.loss_mode not in LOSS_MODES:
            raise ValueError(f"unknown loss_mode {self.loss_mode!r} (allowed: {', '.join(LOSS_MODES)})")

    @property
    def terms(self) -> tuple[bool, bool, bool]:
        return LOSS_MODES[self.loss_mode]

    @property
    def uses_teacher(self) -> bool:
        front, rear, _ = self.terms
        return front or rear


class ElfLoss(nn.Module):
    """Holds the adapters (so the optimiser sees them) and computes the ELF objective."""

    def __init__(self, evaluation: Evaluation, features: torch.Tensor | None, student_shape: tuple[int, ...]):
        super().__init__()
        self.evaluation = evaluation
        self.features = features
        self.to_teacher = self.from_teacher = None
        if features is not None:
            teacher_shape = tuple(features.shape[1:])
            front, rear, _ = evaluation.terms
            self.to_teacher = make_adapter(student_shape, teacher_shape) if front else None
            self.from_teacher = make_adapter(teacher_shape, student_shape) if rear else None

    @property
    def adapted(self) -> bool:
        return self.to_teacher is not None or self.from_teacher is not None

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        use_front, use_rear, use_task = self.evaluation.terms
        student_features = model.front(x)  # one front pass serves both the task and the front term
        loss = F.cross_entropy(model.rear(student_features), y) if use_task else torch.zeros((), device=x.device)
        if use_front or use_rear:
            teacher = self.features[index.to(self.features.device)]
            if use_front:
                mapped = self.to_teacher(student_features) if self.to_teacher is not None else student_features
                loss = loss + self.evaluation.lambda_front * feature_loss(self.evaluation.feature_loss, mapped, teacher)
            if use_rear:
                mapped = self.from_teacher(teacher) if self.from_teacher is not None else teacher
                loss = loss + self.evaluation.lambda_rear * F.cross_entropy(model.rear(mapped), y)
        return loss


def train_students(data: str | os.PathLike, synset: str | os.PathLike, features: str | os.PathLike | None,
                   arch: str, evaluation: dict, train_config: dict, seeds: list[int], out: str | os.PathLike,
                   identity: dict, device: str = "auto") -> pd.DataFrame:
    """Train ``arch`` once per seed and write one Parquet row per run to ``out``."""
    torch_device = resolve_device(device)
    spec = Evaluation(**evaluation)
    config = TrainConfig.from_dict(train_config)
    images, labels = read_synset(synset)
    test_images, test_labels, info = load_split(data, "test")
    if images.shape[1:] != (info.channels, info.image_size, info.image_size):
        raise ValueError(f"{synset}: images {tuple(images.shape[1:])} do not match dataset "
                         f"({info.channels}, {info.image_size}, {info.image_size})")
    teacher: TeacherFeatures | None = None
    if spec.uses_teacher:
        if features is None:
            raise ValueError(f"evaluation {identity.get('evaluation')!r} uses a teacher but no features file was given")
        teacher = load_features(features, spec.teacher_layer, synset, len(labels))
    images, labels = images.to(torch_device), labels.to(torch_device)
    test_images, test_labels = test_images.to(torch_device), test_labels.to(torch_device)
    target = teacher.values.to(torch_device) if teacher else None
    protocol = {**{f"train_{k}": v for k, v in config.to_dict().items() if k != "dsa"},
                "dsa_strategy": config.dsa.strategy if config.dsa else "none",
                **{k: v for k, v in vars(spec).items() if k != "teacher"}}
    protocol["teacher_layer"] = teacher.layer if teacher else None
    rows = []
    for seed in seeds:
        model = build_seeded(lambda: build(arch, info.channels, info.num_classes, info.image_size,
                                           split=spec.student_layer), seed).to(torch_device)
        with torch.no_grad():
            student_shape = tuple(model.front(images[:1]).shape[1:])
        objective = build_seeded(lambda shape=student_shape: ElfLoss(spec, target, shape), seed + 1).to(torch_device)
        with Timer() as timer:
            train(model, images, labels, config, seeded_generator(seed), loss_fn=objective,
                  extra_parameters=objective.parameters(), desc=f"{arch} {identity.get('evaluation')} seed {seed}")
        accuracy = evaluate(model, test_images, test_labels, config.eval_batch_size)
        log.info("%s %s seed %d: test accuracy %.4f (%.1fs)", arch, identity.get("evaluation"), seed, accuracy, timer.seconds)
        rows.append({**identity, "arch": arch, "seed": seed, "test_acc": accuracy, "train_seconds": timer.seconds,
                     "num_synthetic": len(labels), "student_layer": model.split,
                     "student_feature_shape": "x".join(map(str, student_shape)),
                     "teacher_feature_shape": "x".join(map(str, target.shape[1:])) if target is not None else None,
                     "adapter": objective.adapted, "teacher_arch": teacher.teacher_arch if teacher else None,
                     "teacher_test_acc": teacher.teacher_test_acc if teacher else None, **protocol,
                     "device": torch_device.type, "torch_version": torch.__version__, "package_version": __version__,
                     "python_version": platform.python_version(), "synset_sha256": sha256_file(synset),
                     "features_sha256": teacher.sha256 if teacher else None,
                     "config_hash": config_hash({"evaluation": evaluation, "train": train_config})})
    frame = pd.DataFrame(rows)
    with atomic_path(out) as tmp:
        frame.to_parquet(tmp, index=False)
    return frame

"""Feature losses and the ELF loss modes (pure functions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def feature_ce(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over channels with the teacher's channel softmax as the soft target,
    averaged over samples and spatial positions (the official ELF default)."""
    if student.dim() == 2:
        student, teacher = student[..., None], teacher[..., None]
    target = F.softmax(teacher.flatten(2), dim=1)
    return -(target * F.log_softmax(student.flatten(2), dim=1)).sum(dim=1).mean()


def feature_l2(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(student, teacher)


def feature_l1(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(student, teacher)


def feature_cos(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity per sample, averaged.  (The official code computes one cosine over
    the whole flattened batch, which lets large samples dominate; this is per sample.)"""
    return (1 - F.cosine_similarity(student.flatten(1), teacher.flatten(1), dim=1)).mean()


def feature_cos_batch(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The official variant: one cosine over the whole flattened batch."""
    return 1 - F.cosine_similarity(student.flatten(), teacher.flatten(), dim=0)


FEATURE_LOSSES = {"ce": feature_ce, "l2": feature_l2, "l1": feature_l1, "cos": feature_cos, "cos_batch": feature_cos_batch}

# loss mode -> which of (front, rear, task) terms are on
LOSS_MODES: dict[str, tuple[bool, bool, bool]] = {
    "front_rear_task": (True, True, True),
    "front_task": (True, False, True),
    "rear_task": (False, True, True),
    "front_rear": (True, True, False),
    "task": (False, False, True),
}


def feature_loss(name: str, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    if name not in FEATURE_LOSSES:
        raise ValueError(f"unknown feature loss {name!r} (allowed: {', '.join(FEATURE_LOSSES)})")
    if student.shape != teacher.shape:
        raise ValueError(f"feature shapes differ: student {tuple(student.shape)} vs teacher {tuple(teacher.shape)}")
    return FEATURE_LOSSES[name](student, teacher)

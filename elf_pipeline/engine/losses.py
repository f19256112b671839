"""Feature losses and the ELF loss modes (pure functions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from elf_pipeline.config.vocab import LOSS_MODES  # noqa: F401  (the loss modes, re-exported)
from elf_pipeline.engine.precision import full_precision
from elf_pipeline.infra.errors import InputError


def feature_ce(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The official ELF feature loss: ``nn.CrossEntropyLoss()(student, teacher)`` on N×C(×H×W)
    maps. PyTorch reads a float target as class probabilities over the channel dimension *without
    normalising it*, so this is ``-sum_c t_c * log_softmax(s)_c``, averaged over samples and
    positions, with the raw (post-ReLU) teacher features ``t`` as weights."""
    return -(teacher * F.log_softmax(student, dim=1)).sum(dim=1).mean()


def feature_ce_softmax(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over channels against the teacher's channel *softmax* (a normalised target).
    Not the official loss: the target is nearly uniform for typical feature magnitudes, so its
    gradient is far smaller than ``feature_ce``'s."""
    return -(F.softmax(teacher, dim=1) * F.log_softmax(student, dim=1)).sum(dim=1).mean()


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


FEATURE_LOSSES = {"ce": feature_ce, "ce_softmax": feature_ce_softmax, "l2": feature_l2, "l1": feature_l1,
                  "cos": feature_cos, "cos_batch": feature_cos_batch}


def feature_loss(name: str, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    if name not in FEATURE_LOSSES:
        raise InputError(f"unknown feature loss {name!r} (allowed: {', '.join(FEATURE_LOSSES)})")
    if student.shape != teacher.shape:
        raise InputError(f"feature shapes differ: student {tuple(student.shape)} vs teacher {tuple(teacher.shape)}")
    return FEATURE_LOSSES[name](full_precision(student), full_precision(teacher))  # float32 under bfloat16 autocast too


def kd_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.'s logit distillation term: ``tau^2 * KL(softmax(t / tau) || softmax(s / tau))``,
    averaged over the batch (the tau^2 keeps its gradient on the scale of the cross-entropy's)."""
    if temperature <= 0:
        raise InputError(f"kd_temperature {temperature}: must be positive")
    log_student = F.log_softmax(full_precision(student_logits) / temperature, dim=1)
    log_teacher = F.log_softmax(full_precision(teacher_logits) / temperature, dim=1)
    return temperature**2 * F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a probability target per sample (N×C): ``-sum_c p_c log_softmax(z)_c``,
    averaged; equals ``F.cross_entropy(logits, labels)`` on one-hot targets."""
    return -(target * F.log_softmax(full_precision(logits), dim=1)).sum(dim=1).mean()


def task_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on hard labels (N, integer) or soft labels (N×C probabilities)."""
    if target.is_floating_point():
        return soft_cross_entropy(logits, target)
    return F.cross_entropy(full_precision(logits), target)

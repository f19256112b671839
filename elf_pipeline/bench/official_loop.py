"""(a) of the student-training benchmark: one seed at a time, written the way the official ELF/DC code
trains a student (``elf_pipeline/bench/run.py`` describes both variants)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from elf_pipeline.engine.augment import dsa
from elf_pipeline.engine.elf import Evaluation, build_objective
from elf_pipeline.engine.losses import feature_loss
from elf_pipeline.engine.training import Timer, TrainConfig, build_seeded, decay_lr, seeded_generator
from elf_pipeline.models import build

log = logging.getLogger(__name__)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class SeedOutcome:
    seed: int
    test_acc: float
    train_seconds: float
    test_seconds: float


def official_loop(arch: str, spec: Evaluation, config: TrainConfig, images: torch.Tensor, labels: torch.Tensor,
                  target: torch.Tensor | None, test_images: torch.Tensor, test_labels: torch.Tensor, seeds: list[int],
                  num_classes: int, eval_batch_size: int = 256) -> list[SeedOutcome]:
    """Per-seed training as the official code writes it (see the module docstring).

    Same initialisation (``build_seeded``: model with ``seed``, adapters with ``seed + 1``), objective,
    optimiser and lr schedule as the pipeline; ``test_images`` stay on the host as a DataLoader's
    dataset would.
    """
    device = images.device
    use_front, use_rear, use_task = spec.terms
    decay_epoch = config.decay_epoch
    outcomes = []
    for seed in seeds:
        model = build_seeded(lambda: build(arch, images.shape[1], num_classes, images.shape[-1],
                                           split=spec.student_layer), seed).to(device)
        objective, _ = build_objective(spec, model, images, seed + 1, target)
        optimizer = torch.optim.SGD(list(model.parameters()) + list(objective.parameters()), lr=config.lr,
                                    momentum=config.momentum, weight_decay=config.weight_decay)
        generator = seeded_generator(seed)
        dataset = TensorDataset(images, labels, torch.arange(len(labels), device=device))
        loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, generator=generator, num_workers=0)
        with Timer() as train_timer:
            for epoch in range(config.total_epochs):
                if epoch == decay_epoch:
                    decay_lr(optimizer, config)
                loss_sum, correct = 0.0, 0
                for x, y, index in loader:
                    if config.dsa is not None:
                        x = dsa(x, config.dsa, generator)
                    output = model(x)  # full pass for the logits ...
                    loss = F.cross_entropy(output, y) if use_task else torch.zeros((), device=device)
                    if use_front or use_rear:
                        teacher = target[index]
                        mapped = objective.from_teacher(teacher) if objective.from_teacher is not None else teacher
                    if use_front:  # ... and a second pass through the front for the feature term
                        student, imitated = model.front(x), teacher
                        if objective.coupled:
                            imitated = mapped.detach()
                        elif objective.to_teacher is not None:
                            student = objective.to_teacher(student)
                        loss = loss + spec.lambda_front * feature_loss(spec.feature_loss, student, imitated)
                    if use_rear:
                        loss = loss + spec.lambda_rear * F.cross_entropy(model.rear(mapped), y)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    loss_sum += loss.item() * len(y)
                    correct += int(np.sum(np.equal(np.argmax(output.cpu().data.numpy(), axis=-1), y.cpu().data.numpy())))
            synchronize(device)
        model.eval()
        test_correct = 0
        with Timer() as test_timer, torch.no_grad():
            for x, y in DataLoader(TensorDataset(test_images, test_labels), batch_size=eval_batch_size, shuffle=False):
                output = model(x.to(device))
                test_correct += int(np.sum(np.equal(np.argmax(output.cpu().data.numpy(), axis=-1), y.numpy())))
        outcomes.append(SeedOutcome(seed, test_correct / len(test_labels), train_timer.seconds, test_timer.seconds))
        log.info("official loop %s seed %d: test accuracy %.4f (%.1fs)", arch, seed, outcomes[-1].test_acc,
                 train_timer.seconds)
    return outcomes

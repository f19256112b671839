"""The ELF objective and the trainer of evaluation models (students) on in-memory tensors.

ELF loss for a batch of augmented synthetic images ``x`` with labels ``y`` and the teacher's
features ``t`` of the same (un-augmented) images:

    task  = CE(rear(front(x)), y)
    front = FL(to_teacher(front(x)), t)        # student imitates the teacher's features
    rear  = CE(rear(from_teacher(t)), y)       # student's rear classifies teacher features

Where the student's split output and the teacher feature differ in shape, learned adapters bridge
them (each result row says whether they were used, and which form):

- ``adapter: pair`` (default) -- two independent adapters, ``to_teacher`` in the front term
  (``FL(to_teacher(front(x)), t)``) and ``from_teacher`` in the rear term. Nothing ties them: the
  rear learns from ``from_teacher(t)``, a distribution the front is never pushed to produce.
- ``adapter: coupled`` -- one adapter ``A = from_teacher``, trained by the rear term
  (``CE(rear(A(t)), y)``); the front term imitates its detached output in the student's own feature
  space (``FL(front(x), sg(A(t)))``), so the rear learns what the front is pushed to produce, as
  without adapters. ``A`` ends in a ReLU when the student's split features are non-negative
  (post-ReLU), so it stays a valid ``ce`` target. Without a rear term (``front_task``) ``A`` is
  trained by nothing and stays a fixed random projection of the teacher features.

``teacher_targets: cached`` (the published protocol) reads ``t`` from the features file, computed
once on the un-augmented images; ``online`` runs the teacher checkpoint on the same augmented batch
the student sees (under no_grad), so ``t`` matches ``x`` exactly.

The ``students`` stage and the benchmark (``bench``) both train through
``fit_students``.
"""

from __future__ import annotations

import logging
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from elf_pipeline.config.vocab import ADAPTER_FORMS, TEACHER_TARGETS
from elf_pipeline.engine.evaluation import evaluate
from elf_pipeline.engine.losses import LOSS_MODES, feature_loss, kd_divergence
from elf_pipeline.engine.precision import full_precision
from elf_pipeline.engine.training import Timer, TrainConfig, build_seeded, seeded_generator, train
from elf_pipeline.engine.vectorized import choose_trainer, evaluate_vectorized, train_vectorized, vectorize_setting
from elf_pipeline.infra.errors import InputError
from elf_pipeline.models import build
from elf_pipeline.models.adapter import make_adapter

log = logging.getLogger(__name__)

RELABEL = (None, "teacher")


class OnlineTeacher:
    """Teacher features of the batch the student sees (``teacher_targets: online``).

    Deliberately not an ``nn.Module`` attribute of ElfLoss: the optimiser must not see the frozen
    teacher's parameters."""

    def __init__(self, model: nn.Module, layer: str | None, sample: torch.Tensor,
                 input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.model = model.eval().requires_grad_(False)
        if layer is not None:
            model.set_split(layer)
        self.layer = model.split
        self.input_transform = input_transform  # e.g. un-whitening for a teacher trained without ZCA
        self.feature_shape = tuple(self(sample[:1]).shape[1:])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.input_transform is not None:
                x = self.input_transform(x)
            return self.model.front(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's class logits of the batch (for logit distillation)."""
        with torch.no_grad():
            if self.input_transform is not None:
                x = self.input_transform(x)
            return self.model(x)


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
    teacher_targets: str = "cached"
    adapter: str = "pair"  # chosen on validation accuracy (docs/results.md): coupled lost 1.4-43 points
    lambda_kd: float = 0.0  # > 0 adds logit distillation from the teacher, run on the student's augmented batch
    kd_temperature: float = 4.0
    relabel: str | None = None  # "teacher": soft labels = the teacher's softmax on the un-augmented images

    def __post_init__(self) -> None:
        if self.adapter not in ADAPTER_FORMS:
            raise InputError(f"unknown adapter {self.adapter!r} (allowed: {', '.join(ADAPTER_FORMS)})")
        if self.loss_mode not in LOSS_MODES:
            raise InputError(f"unknown loss_mode {self.loss_mode!r} (allowed: {', '.join(LOSS_MODES)})")
        if self.teacher_targets not in TEACHER_TARGETS:
            raise InputError(f"unknown teacher_targets {self.teacher_targets!r} (allowed: {', '.join(TEACHER_TARGETS)})")
        if self.relabel not in RELABEL:
            raise InputError(f"unknown relabel {self.relabel!r} (allowed: teacher, or none)")
        if self.lambda_kd < 0 or self.kd_temperature <= 0:
            raise InputError(f"lambda_kd {self.lambda_kd} / kd_temperature {self.kd_temperature}: need lambda_kd >= 0 "
                             "and kd_temperature > 0")

    @property
    def terms(self) -> tuple[bool, bool, bool]:
        return LOSS_MODES[self.loss_mode]

    @property
    def uses_teacher(self) -> bool:
        """Whether an ELF term (front or rear) reads teacher features."""
        front, rear, _ = self.terms
        return front or rear

    @property
    def uses_kd(self) -> bool:
        return self.lambda_kd > 0

    @property
    def needs_checkpoint(self) -> bool:
        """Whether the teacher network itself runs during training (online targets or KD logits)."""
        return self.uses_kd or self.relabel is not None or (self.uses_teacher and self.teacher_targets == "online")


class ElfLoss(nn.Module):
    """Holds the adapters (so the optimiser sees them) and computes the ELF objective."""

    def __init__(self, evaluation: Evaluation, features: torch.Tensor | None, student_shape: tuple[int, ...],
                 online: OnlineTeacher | None = None, student_nonnegative: bool = False, kd: OnlineTeacher | None = None):
        super().__init__()
        self.evaluation = evaluation
        self.features = features
        self.online = online
        if evaluation.uses_kd and kd is None:
            raise InputError("lambda_kd > 0 needs the teacher network (a teacher checkpoint) for its logits")
        self.kd = kd if evaluation.uses_kd else None
        self.coupled = evaluation.adapter == "coupled"
        self.to_teacher = self.from_teacher = None
        if features is not None or online is not None:
            teacher_shape = online.feature_shape if online is not None else tuple(features.shape[1:])
            front, rear, _ = evaluation.terms
            if self.coupled:
                self.from_teacher = make_adapter(teacher_shape, student_shape, nonnegative=student_nonnegative)
            else:
                self.to_teacher = make_adapter(student_shape, teacher_shape) if front else None
                self.from_teacher = make_adapter(teacher_shape, student_shape) if rear else None

    @property
    def adapted(self) -> bool:
        return self.to_teacher is not None or self.from_teacher is not None

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        use_front, use_rear, use_task = self.evaluation.terms
        student_features = model.front(x)  # one front pass serves both the task and the front term
        logits = full_precision(model.rear(student_features)) if use_task or self.kd is not None else None  # float32 losses
        loss = F.cross_entropy(logits, y) if use_task else torch.zeros((), device=x.device)
        if self.kd is not None:
            loss = loss + self.evaluation.lambda_kd * kd_divergence(logits, self.kd.logits(x), self.evaluation.kd_temperature)
        if use_front or use_rear:
            teacher = self.online(x) if self.online is not None else self.features[index.to(self.features.device)]
            rear_input = self.from_teacher(teacher) if self.from_teacher is not None else teacher
            if use_front:
                if self.coupled:  # imitate what the rear learns from, in the student's own space
                    student, target = student_features, rear_input.detach()
                else:
                    student = self.to_teacher(student_features) if self.to_teacher is not None else student_features
                    target = teacher
                loss = loss + self.evaluation.lambda_front * feature_loss(self.evaluation.feature_loss, student, target)
            if use_rear:
                loss = loss + self.evaluation.lambda_rear * F.cross_entropy(full_precision(model.rear(rear_input)), y)
        return loss


def build_objective(spec: Evaluation, model: nn.Module, images: torch.Tensor, seed: int,
                    target: torch.Tensor | None = None, online: OnlineTeacher | None = None,
                    kd: OnlineTeacher | None = None) -> tuple[ElfLoss, tuple[int, ...]]:
    """The ELF objective of one student (adapters initialised with ``seed``) and its split shape,
    read from a few synthetic images (whether the split features are non-negative, too)."""
    with torch.no_grad():
        sample = model.eval().front(images[:8])
    model.train()
    shape, nonnegative = tuple(sample.shape[1:]), bool((sample >= 0).all())
    objective = build_seeded(lambda: ElfLoss(spec, target, shape, online, nonnegative, kd), seed).to(images.device)
    return objective, shape


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


@dataclass
class SeedResult:
    """One trained and tested student."""

    seed: int
    test_acc: float
    train_seconds: float
    test_seconds: float
    history: list[float]
    student_layer: str
    student_shape: tuple[int, ...]
    adapted: bool
    val_acc: float | None = None


@dataclass
class StudentFit:
    """All seeds of one architecture and evaluation, and how they were trained.

    Under the vectorised trainer the seeds share one pass: each seed's ``train_seconds`` and
    ``test_seconds`` are the shared time divided by the number of seeds.
    """

    trainer: str  # "vectorized" or "loop"
    reason: str
    cuda_graph: bool = False  # the vectorised step was replayed as a CUDA graph
    seeds: list[SeedResult] = field(default_factory=list)
    peak_memory_mb: float = 0.0  # peak resident memory of the process (host)
    device_peak_memory_mb: float | None = None  # torch.cuda.max_memory_allocated during the fit (CUDA only)
    compiled: bool = False
    notes: list[str] = field(default_factory=list)  # e.g. a torch.compile failure that fell back to eager


def prefers_channels_last(model: nn.Module, device: torch.device) -> bool:
    """Channels-last weights (oneDNN's and cuDNN's preferred layout), except on a CPU for a model with
    group or instance norm (``GroupNorm``), whose channels-last CPU kernels are several times slower
    than the contiguous ones, most of all under bfloat16 (docs/performance.md)."""
    return device.type != "cpu" or not any(isinstance(module, nn.GroupNorm) for module in model.modules())


def fit_students(arch: str, spec: Evaluation, config: TrainConfig, images: torch.Tensor, labels: torch.Tensor,
                 test_images: torch.Tensor, test_labels: torch.Tensor, seeds: list[int], num_classes: int,
                 target: torch.Tensor | None = None, online: OnlineTeacher | None = None, vectorize: str | bool = "auto",
                 channels_last: bool | None = None, precision: str = "fp32", compile: bool = False, desc: str = "",
                 cuda_graphs: str | bool = "auto", val: tuple[torch.Tensor, torch.Tensor] | None = None,
                 kd: OnlineTeacher | None = None) -> StudentFit:
    """Train ``arch`` once per seed on in-memory tensors (all on one device) and test each student.

    Seed ``s`` is initialised with ``build_seeded(..., s)`` (adapters with ``s + 1``) and draws its
    shuffles and augmentations from ``seeded_generator(s)``, whichever trainer runs:
    ``vectorize`` (``auto``/``true``/``false``, see ``vectorized.choose_trainer``) picks the
    vectorised multi-seed trainer or the per-seed loop.  The loop keeps convolution weights in
    channels-last memory format (``channels_last``; default ``prefers_channels_last``; same numbers
    up to float rounding).  ``precision`` (``fp32``/``bf16``: autocast for training and testing) and
    ``compile`` (``torch.compile`` of the training step) apply to both trainers, ``cuda_graphs``
    (``vectorized.GraphedStep``) to the vectorised one.  ``val`` (images, labels) is the validation
    split: each student is also tested on it (``val_acc``).
    """
    device = images.device
    channels, image_size = images.shape[1], images.shape[-1]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def build_seed(seed: int) -> tuple[nn.Module, ElfLoss, tuple[int, ...]]:
        model = build_seeded(lambda: build(arch, channels, num_classes, image_size, split=spec.student_layer), seed).to(device)
        objective, student_shape = build_objective(spec, model, images, seed + 1, target, online, kd)
        return model, objective, student_shape

    first = build_seed(seeds[0])
    trainer, reason = choose_trainer(vectorize_setting(vectorize), first[:2], device, len(seeds))
    fit = StudentFit(trainer, reason)
    log.info("%s %s: %s trainer for %d seed(s) (%s)", arch, desc, trainer, len(seeds), reason)
    if trainer == "vectorized":
        built = [first] + [build_seed(seed) for seed in seeds[1:]]
        models, objectives = [b[0] for b in built], [b[1] for b in built]
        with Timer() as train_timer:
            run = train_vectorized(models, objectives, images, labels, config, [seeded_generator(s) for s in seeds],
                                   desc=f"{arch} {desc} seeds {seeds[0]}..{seeds[-1]}", amp=precision == "bf16",
                                   compile=compile, cuda_graphs=cuda_graphs)
        with Timer() as test_timer:
            accuracies = evaluate_vectorized(models, test_images, test_labels, config.eval_batch_size,
                                             amp=precision == "bf16")
        val_accuracies = (evaluate_vectorized(models, *val, config.eval_batch_size, amp=precision == "bf16")
                          if val is not None
                          else [None] * len(models))
        fit.compiled, fit.notes, fit.cuda_graph = run.compiled, run.notes, run.graphed
        for seed, (model, objective, shape), history, accuracy, val_acc in zip(seeds, built, run.histories, accuracies,
                                                                                val_accuracies, strict=True):
            fit.seeds.append(SeedResult(seed, accuracy, train_timer.seconds / len(seeds), test_timer.seconds / len(seeds),
                                        history, model.split, shape, objective.adapted, val_acc))
    else:
        for position, seed in enumerate(seeds):
            model, objective, shape = first if position == 0 else build_seed(seed)
            first = None  # let each seed's model go once it is tested
            if prefers_channels_last(model, device) if channels_last is None else channels_last:
                model = model.to(memory_format=torch.channels_last)
            with Timer() as train_timer:
                history = train(model, images, labels, config, seeded_generator(seed), loss_fn=objective,
                                extra_parameters=objective.parameters(), desc=f"{arch} {desc} seed {seed}",
                                precision=precision, compile=compile, notes=fit.notes)
            with Timer() as test_timer:
                accuracy = evaluate(model, test_images, test_labels, config.eval_batch_size, precision)
            val_acc = evaluate(model, *val, config.eval_batch_size, precision) if val is not None else None
            fit.compiled = compile and not fit.notes
            fit.seeds.append(SeedResult(seed, accuracy, train_timer.seconds, test_timer.seconds, history, model.split,
                                        shape, objective.adapted, val_acc))
            del model, objective
    fit.peak_memory_mb = peak_memory_mb()
    if device.type == "cuda":
        fit.device_peak_memory_mb = torch.cuda.max_memory_allocated(device) / 2**20
    return fit


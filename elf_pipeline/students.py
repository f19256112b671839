"""Train evaluation models (students) on a synthetic set, with or without ELF, and test them.

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
the student sees (under no_grad), so ``t`` matches ``x`` exactly. Rows record which was used.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from elf_pipeline import __version__
from elf_pipeline.checkpoint import load_model
from elf_pipeline.data import DatasetInfo, has_split, load_split
from elf_pipeline.errors import InputError
from elf_pipeline.features import TeacherFeatures, load_features, read_synset
from elf_pipeline.io import atomic_path, canonical_json, config_hash, open_h5, sha256_file
from elf_pipeline.losses import feature_loss
from elf_pipeline.models import build
from elf_pipeline.models.adapter import make_adapter
from elf_pipeline.training import Timer, TrainConfig, build_seeded, evaluate, resolve_device, seeded_generator, train
from elf_pipeline.vectorized import choose_trainer, evaluate_vectorized, train_vectorized, vectorize_setting
from elf_pipeline.vocab import ADAPTER_FORMS, LOSS_MODES, TEACHER_TARGETS
from elf_pipeline.zca import ZCA, fit_zca_to_data, synset_zca_eps

log = logging.getLogger(__name__)


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

    def __post_init__(self) -> None:
        if self.adapter not in ADAPTER_FORMS:
            raise InputError(f"unknown adapter {self.adapter!r} (allowed: {', '.join(ADAPTER_FORMS)})")
        if self.loss_mode not in LOSS_MODES:
            raise InputError(f"unknown loss_mode {self.loss_mode!r} (allowed: {', '.join(LOSS_MODES)})")
        if self.teacher_targets not in TEACHER_TARGETS:
            raise InputError(f"unknown teacher_targets {self.teacher_targets!r} (allowed: {', '.join(TEACHER_TARGETS)})")

    @property
    def terms(self) -> tuple[bool, bool, bool]:
        return LOSS_MODES[self.loss_mode]

    @property
    def uses_teacher(self) -> bool:
        front, rear, _ = self.terms
        return front or rear


class ElfLoss(nn.Module):
    """Holds the adapters (so the optimiser sees them) and computes the ELF objective."""

    def __init__(self, evaluation: Evaluation, features: torch.Tensor | None, student_shape: tuple[int, ...],
                 online: OnlineTeacher | None = None, student_nonnegative: bool = False):
        super().__init__()
        self.evaluation = evaluation
        self.features = features
        self.online = online
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
        loss = F.cross_entropy(model.rear(student_features), y) if use_task else torch.zeros((), device=x.device)
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
                loss = loss + self.evaluation.lambda_rear * F.cross_entropy(model.rear(rear_input), y)
        return loss


def build_objective(spec: Evaluation, model: nn.Module, images: torch.Tensor, seed: int,
                    target: torch.Tensor | None = None, online: OnlineTeacher | None = None) -> tuple[ElfLoss, tuple[int, ...]]:
    """The ELF objective of one student (adapters initialised with ``seed``) and its split shape,
    read from a few synthetic images (whether the split features are non-negative, too)."""
    with torch.no_grad():
        sample = model.eval().front(images[:8])
    model.train()
    shape, nonnegative = tuple(sample.shape[1:]), bool((sample >= 0).all())
    objective = build_seeded(lambda: ElfLoss(spec, target, shape, online, nonnegative), seed).to(images.device)
    return objective, shape


# Keys of a student ``train`` block that choose how the seeds are trained, not what they learn:
# they stay out of TrainConfig, the protocol columns and config_hash.
RUNTIME_KEYS = ("vectorize_seeds", "cuda_graphs")


def protocol_train_config(train_config: dict) -> dict:
    """The ``train`` block without its runtime keys (what TrainConfig and config_hash see)."""
    return {key: value for key, value in train_config.items() if key not in RUNTIME_KEYS}


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


def fit_students(arch: str, spec: Evaluation, config: TrainConfig, images: torch.Tensor, labels: torch.Tensor,
                 test_images: torch.Tensor, test_labels: torch.Tensor, seeds: list[int], num_classes: int,
                 target: torch.Tensor | None = None, online: OnlineTeacher | None = None, vectorize: str | bool = "auto",
                 channels_last: bool = True, amp: bool = False, compile: bool = False, desc: str = "",
                 cuda_graphs: str | bool = "auto", val: tuple[torch.Tensor, torch.Tensor] | None = None) -> StudentFit:
    """Train ``arch`` once per seed on in-memory tensors (all on one device) and test each student.

    Seed ``s`` is initialised with ``build_seeded(..., s)`` (adapters with ``s + 1``) and draws its
    shuffles and augmentations from ``seeded_generator(s)``, whichever trainer runs:
    ``vectorize`` (``auto``/``true``/``false``, see ``vectorized.choose_trainer``) picks the
    vectorised multi-seed trainer or the per-seed loop.  The loop keeps convolution weights in
    channels-last memory format (``channels_last``; faster with oneDNN and cuDNN, same numbers up
    to float rounding).  ``amp`` (bfloat16 autocast), ``compile`` (``torch.compile``) and
    ``cuda_graphs`` (``vectorized.GraphedStep``) apply to the vectorised trainer.  ``val`` (images,
    labels) is the validation split: each student is also tested on it (``val_acc``).
    """
    device = images.device
    channels, image_size = images.shape[1], images.shape[-1]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def build_seed(seed: int) -> tuple[nn.Module, ElfLoss, tuple[int, ...]]:
        model = build_seeded(lambda: build(arch, channels, num_classes, image_size, split=spec.student_layer), seed).to(device)
        objective, student_shape = build_objective(spec, model, images, seed + 1, target, online)
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
                                   desc=f"{arch} {desc} seeds {seeds[0]}..{seeds[-1]}", amp=amp, compile=compile,
                                   cuda_graphs=cuda_graphs)
        with Timer() as test_timer:
            accuracies = evaluate_vectorized(models, test_images, test_labels, config.eval_batch_size, amp=amp)
        val_accuracies = (evaluate_vectorized(models, *val, config.eval_batch_size, amp=amp) if val is not None
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
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            with Timer() as train_timer:
                history = train(model, images, labels, config, seeded_generator(seed), loss_fn=objective,
                                extra_parameters=objective.parameters(), desc=f"{arch} {desc} seed {seed}")
            with Timer() as test_timer:
                accuracy = evaluate(model, test_images, test_labels, config.eval_batch_size)
            val_acc = evaluate(model, *val, config.eval_batch_size) if val is not None else None
            fit.seeds.append(SeedResult(seed, accuracy, train_timer.seconds, test_timer.seconds, history, model.split,
                                        shape, objective.adapted, val_acc))
            del model, objective
    fit.peak_memory_mb = peak_memory_mb()
    if device.type == "cuda":
        fit.device_peak_memory_mb = torch.cuda.max_memory_allocated(device) / 2**20
    return fit


def synset_protocol(synset: str | os.PathLike) -> dict:
    """The distillation protocol recorded in a synthetic set's attrs, as report columns."""
    with open_h5(synset) as h5:
        config = json.loads(h5.attrs["config"]) if "config" in h5.attrs else {}
        syn_lr = float(h5.attrs["syn_lr"]) if "syn_lr" in h5.attrs else None
        zca_eps = float(h5.attrs["zca_eps"]) if "zca_eps" in h5.attrs else 0.0
    return {"distill_config": canonical_json(config), "distill_config_hash": config_hash(config),
            "distill_iterations": config.get("iterations"), "distill_lr_img": config.get("lr_img"),
            "distill_syn_lr": syn_lr, "distill_zca_eps": zca_eps}


def student_test_split(data: str | os.PathLike, synset: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor, DatasetInfo,
                                                                                 ZCA | None]:
    """The test split in the synthetic set's space: whitened by the ZCA transform (refitted on the
    training split) when the set was distilled in whitened space, else as stored."""
    test_images, test_labels, info = load_split(data, "test")
    whitening = None
    if zca_eps := synset_zca_eps(synset):
        whitening = fit_zca_to_data(data, zca_eps)
        test_images = whitening.transform(test_images)
    return test_images, test_labels, info, whitening


def student_val_split(data: str | os.PathLike, whitening: ZCA | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The validation split in the synthetic set's space, or None where ``data.h5`` has none."""
    if not has_split(data, "val"):
        return None
    images, labels, _ = load_split(data, "val")
    return (whitening.transform(images) if whitening is not None else images), labels


def train_students(data: str | os.PathLike, synset: str | os.PathLike, features: str | os.PathLike | None,
                   arch: str, evaluation: dict, train_config: dict, seeds: list[int], out: str | os.PathLike,
                   identity: dict, device: str = "auto", teacher_model: str | os.PathLike | None = None) -> pd.DataFrame:
    """Train ``arch`` once per seed and write one Parquet row per run to ``out``.

    ``teacher_model``: the teacher checkpoint, needed (instead of ``features``) for
    ``teacher_targets: online``."""
    torch_device = resolve_device(device)
    spec = Evaluation(**evaluation)
    config = TrainConfig.from_dict(protocol_train_config(train_config))
    vectorize = vectorize_setting(train_config.get("vectorize_seeds", "auto"))
    images, labels = read_synset(synset)
    test_images, test_labels, info, whitening = student_test_split(data, synset)
    if images.shape[1:] != (info.channels, info.image_size, info.image_size):
        raise InputError(f"{synset}: images {tuple(images.shape[1:])} do not match dataset "
                         f"({info.channels}, {info.image_size}, {info.image_size})")
    teacher: TeacherFeatures | None = None
    online: OnlineTeacher | None = None
    if spec.uses_teacher and spec.teacher_targets == "online":
        if teacher_model is None:
            raise InputError(f"evaluation {identity.get('evaluation')!r} has teacher_targets: online but no teacher "
                             "checkpoint was given (--teacher-model)")
        network, meta = load_model(teacher_model, torch_device)
        online = OnlineTeacher(network, spec.teacher_layer, images[:1].to(torch_device),
                               input_transform=whitening.inverse if whitening is not None else None)
        teacher = TeacherFeatures(online.layer, torch.empty(0, *online.feature_shape), meta["arch"],
                                  float(meta.get("test_acc", float("nan"))), sha256_file(teacher_model))
    elif spec.uses_teacher:
        if features is None:
            raise InputError(f"evaluation {identity.get('evaluation')!r} uses a teacher but no features file was given")
        teacher = load_features(features, spec.teacher_layer, synset, len(labels))
    images, labels = images.to(torch_device), labels.to(torch_device)
    test_images, test_labels = test_images.to(torch_device), test_labels.to(torch_device)
    val = student_val_split(data, whitening)
    val = tuple(t.to(torch_device) for t in val) if val is not None else None
    target = teacher.values.to(torch_device) if teacher and online is None else None
    protocol = {**{f"train_{k}": v for k, v in config.to_dict().items() if k != "dsa"},
                "dsa_strategy": config.dsa.strategy if config.dsa else "none",
                **{k: v for k, v in vars(spec).items() if k not in ("teacher", "student_layer", "adapter")},
                "adapter_form": spec.adapter}
    protocol["teacher_layer"] = teacher.layer if teacher else None
    fit = fit_students(arch, spec, config, images, labels, test_images, test_labels, seeds, info.num_classes,
                       target=target, online=online, vectorize=vectorize, desc=str(identity.get("evaluation")),
                       cuda_graphs=train_config.get("cuda_graphs", "auto"), val=val)
    distillation = synset_protocol(synset)
    rows = []
    for result in fit.seeds:
        seed, accuracy = result.seed, result.test_acc
        log.info("%s %s seed %d: test accuracy %.4f (%.1fs)", arch, identity.get("evaluation"), seed, accuracy,
                 result.train_seconds)
        rows.append({**identity, "arch": arch, "seed": seed, "test_acc": accuracy, "val_acc": result.val_acc,
                     "train_seconds": result.train_seconds,
                     "test_seconds": result.test_seconds, "trainer": fit.trainer, "cuda_graph": fit.cuda_graph,
                     "peak_memory_mb": fit.peak_memory_mb,
                     "device_peak_memory_mb": fit.device_peak_memory_mb,
                     "num_synthetic": len(labels), "student_layer": result.student_layer,
                     "student_feature_shape": "x".join(map(str, result.student_shape)),
                     "teacher_feature_shape": "x".join(map(str, teacher.values.shape[1:])) if teacher else None,
                     "adapter": result.adapted, "teacher_arch": teacher.teacher_arch if teacher else None,
                     "teacher_test_acc": teacher.teacher_test_acc if teacher else None, **protocol,
                     "device": torch_device.type, "torch_version": torch.__version__, "package_version": __version__,
                     "python_version": platform.python_version(), "synset_sha256": sha256_file(synset),
                     "features_sha256": teacher.sha256 if teacher and online is None else None,
                     "teacher_sha256": teacher.sha256 if online is not None else None,
                     "config_hash": config_hash({"evaluation": evaluation, "train": protocol_train_config(train_config)}),
                     "normalization": "mean_std", "zca": bool(distillation["distill_zca_eps"]),
                     **distillation})
    frame = pd.DataFrame(rows)
    with atomic_path(out) as tmp:
        frame.to_parquet(tmp, index=False)
    return frame

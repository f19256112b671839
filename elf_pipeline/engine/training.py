"""The trainer shared by teachers, experts, the distillation methods' inner loops and students.

``run_epochs`` is the one epoch loop: the schedule (epochs, lr decay), each epoch's batches, the
loss history and the divergence check, and resuming. It drives a step strategy, which owns the
model(s), the optimiser, how an epoch is shuffled and augmented, and how one step runs:

- ``SeedLoop`` (here): one model, eager or compiled (``train`` is its entry point);
- ``vectorized.VectorizedSeeds``: every seed of a student at once under ``vmap``, eager, compiled
  or replayed as a CUDA graph (``vectorized.train_vectorized``).

Evaluation (test passes, OOM retries, real-data splits) lives in ``engine.evaluation``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from elf_pipeline.engine.augment import DSAConfig, dsa, dsa_config
from elf_pipeline.engine.compiled_step import CompiledLoss, LossFn
from elf_pipeline.engine.precision import full_precision
from elf_pipeline.infra.errors import InputError, TrainingDiverged
from elf_pipeline.infra.resume import ResumeFile

SCHEDULES = ("step", "official")


def decay_lr(optimizer: torch.optim.Optimizer, config: TrainConfig) -> None:
    """Multiply the lr by ``lr_decay``; under the official schedule also reset the momentum, as
    recreating the SGD optimiser does (a zeroed buffer gives the same next step as a fresh one)."""
    for group in optimizer.param_groups:
        group["lr"] *= config.lr_decay
    if config.schedule == "official":
        for state in optimizer.state.values():
            if state.get("momentum_buffer") is not None:
                state["momentum_buffer"].zero_()


@dataclass
class TrainConfig:
    epochs: int
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    lr_decay_at: float = 0.5  # fraction of epochs after which the lr is multiplied by lr_decay
    lr_decay: float = 0.1
    dsa: DSAConfig | None = field(default_factory=DSAConfig)
    eval_batch_size: int = 1024
    schedule: str = "step"  # or "official": epochs + 1 epochs, optimiser recreated at the decay

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise InputError(f"unknown schedule {self.schedule!r} (allowed: {', '.join(SCHEDULES)})")

    @property
    def total_epochs(self) -> int:
        """Epochs actually run: the official ELF loop runs ``range(Epoch + 1)``."""
        return self.epochs + 1 if self.schedule == "official" else self.epochs

    @property
    def decay_epoch(self) -> int | None:
        """The (0-based) epoch from whose start on the lr is decayed; None when it never is."""
        if self.schedule == "official":  # decayed after epoch Epoch // 2 + 1 of range(Epoch + 1)
            epoch = self.epochs // 2 + 2
        elif self.lr_decay_at:
            epoch = int(math.ceil(self.epochs * self.lr_decay_at))
        else:
            return None
        return epoch if epoch < self.total_epochs else None

    @classmethod
    def from_dict(cls, block: dict) -> TrainConfig:
        block = dict(block)
        augmentation = dsa_config(block.pop("dsa", True))
        return cls(dsa=augmentation, **block)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["dsa"] = asdict(self.dsa) if self.dsa else None
        return out


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {name!r} requested but CUDA is not available (use device: auto or cpu)")
    return torch.device(name)


def seeded_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def build_seeded(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a module with a seeded initialisation without touching the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return factory()


def task_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(full_precision(model(x)), y)  # float32 loss under any precision


def progress(iterable: Iterable, total: int, desc: str):
    """tqdm progress on stderr when it is a terminal, otherwise silent."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not sys.stderr.isatty(), leave=False)


BatchStream = Callable[[torch.Generator], Iterable[tuple[torch.Tensor, torch.Tensor]]]

# The protocol every strategy shares: the optimiser, the epochs with their lr decay, the shuffle and
# batches of an epoch, the divergence check.


def sgd(parameters: Iterable[torch.Tensor], config: TrainConfig) -> torch.optim.SGD:
    return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def train_epochs(optimizer: torch.optim.Optimizer, config: TrainConfig, desc: str, start: int = 0,
                 on_decay: Callable[[], None] | None = None) -> Iterator[int]:
    """The (0-based) epochs from ``start`` on, with progress; the lr is decayed (then ``on_decay``
    called) at the start of ``config.decay_epoch``."""
    epochs = config.total_epochs
    for epoch in progress(range(start, epochs), epochs - start, desc):
        if epoch == config.decay_epoch:
            decay_lr(optimizer, config)
            if on_decay is not None:
                on_decay()
        yield epoch


def epoch_order(count: int, generator: torch.Generator) -> torch.Tensor:
    """The shuffled order of one epoch, drawn from the seed's generator."""
    return torch.randperm(count, generator=generator)


def batch_slices(count: int, batch_size: int) -> Iterator[slice]:
    """Positions in the epoch order of each batch (the last one may be smaller)."""
    for start in range(0, count, batch_size):
        yield slice(start, start + batch_size)


def check_finite(loss: float, epoch: int, desc: str, config: TrainConfig, seed_index: int | None = None) -> float:
    """``loss`` of (1-based) ``epoch``; NaN or Inf: TrainingDiverged naming the epoch (and seed)."""
    if not math.isfinite(loss):
        seed = f"seed index {seed_index}, " if seed_index is not None else ""
        raise TrainingDiverged(f"loss became {loss} in epoch {epoch} of {desc} ({seed}lr {config.lr})")
    return loss


class StepStrategy(Protocol):
    """What ``run_epochs`` drives.

    ``optimizer`` is the one whose lr the schedule decays; ``seeds`` is how many losses a step returns;
    ``sync_epochs`` is how many epochs pass between host reads of the losses (a read stalls a GPU);
    ``batches()`` is one epoch's ``(x, y, index)``, shuffled and augmented from the seeds' generators
    (``y``'s last dimension is the batch); ``step(x, y, index)`` runs forward, backward and the update and
    returns each seed's mean batch loss (detached, shape ``[seeds]``, on ``device``); ``lr_changed()``
    follows a decay. A resumable strategy also has ``state()`` and ``load_state(state)``.
    """

    optimizer: torch.optim.Optimizer
    seeds: int
    sync_epochs: int
    device: torch.device
    names_seeds: bool

    def batches(self) -> Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]: ...

    def step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor: ...

    def lr_changed(self) -> None: ...


def run_epochs(strategy: StepStrategy, config: TrainConfig, desc: str, histories: list[list[float]] | None = None,
               on_epoch: Callable[[int, float], None] | None = None, resume: ResumeFile | None = None,
               extra_state: dict | None = None) -> list[list[float]]:
    """Train ``strategy`` for ``config.total_epochs``; returns each seed's mean loss per epoch.

    An epoch's loss is the sum over its batches of (mean batch loss x batch size), over the images
    seen. Losses are read on the host every ``strategy.sync_epochs`` epochs and at the end; a NaN or
    Inf stops training with ``TrainingDiverged`` naming the epoch (and the seed). ``on_epoch(epoch,
    loss)`` follows each read epoch of the first seed. With ``resume``, the strategy's state, the
    history and ``extra_state`` are saved periodically and restored on the next call, so a killed
    job continues bit-identically.
    """
    histories = histories if histories is not None else [[] for _ in range(strategy.seeds)]
    start = 0
    state = resume.load() if resume is not None else None
    if state is not None:
        strategy.load_state(state)
        histories[0][:] = list(state["history"])
        start = int(state["epoch"])
        if extra_state is not None:
            extra_state.update(state["extra"])
    pending: list[tuple[torch.Tensor, int]] = []  # (summed losses [seeds], images) of epochs not read yet

    def read() -> None:
        first = len(histories[0])
        totals = torch.stack([total for total, _ in pending]).tolist()  # one host sync
        for offset, (epoch_totals, (_, seen)) in enumerate(zip(totals, pending, strict=True)):
            for s, total in enumerate(epoch_totals):
                loss = check_finite(total / max(seen, 1), first + offset + 1, desc, config, s if strategy.names_seeds else None)
                histories[s].append(loss)
            if on_epoch is not None:
                on_epoch(first + offset + 1, histories[0][-1])
        pending.clear()

    epochs = config.total_epochs
    for epoch in train_epochs(strategy.optimizer, config, desc, start, on_decay=strategy.lr_changed):
        total, seen = torch.zeros(strategy.seeds, device=strategy.device), 0
        for x, y, index in strategy.batches():
            total += strategy.step(x, y, index) * y.shape[-1]
            seen += y.shape[-1]
        pending.append((total, seen))
        if len(pending) >= strategy.sync_epochs or epoch + 1 == epochs:
            read()
        if resume is not None and not pending and resume.due() and epoch + 1 < epochs:
            resume.save({**strategy.state(), "history": histories[0], "epoch": epoch + 1, "extra": extra_state or {}})
    return histories


class SeedLoop:
    """One model trained by mini-batch SGD with per-batch DSA: the step strategy of ``train``.

    ``images``/``labels`` may live on the host while the model is on a device: each batch is moved
    on its own. With ``stream``, ``stream(generator)`` yields one shuffled epoch of ``(x, y)`` and the
    loss function gets ``index=None``. The loss runs under ``precision``'s autocast, through
    ``torch.compile`` with ``compile`` (``CompiledLoss``: a compiler failure runs eagerly from then on,
    noted in ``notes``).
    """

    seeds, sync_epochs, names_seeds = 1, 1, False

    def __init__(self, model: nn.Module, images: torch.Tensor | None, labels: torch.Tensor | None, config: TrainConfig,
                 generator: torch.Generator, loss_fn: LossFn, extra_parameters: Iterable[nn.Parameter],
                 stream: BatchStream | None, precision: str, compile: bool, notes: list[str]):
        self.model, self.images, self.labels, self.generator, self.stream = model, images, labels, generator, stream
        self.batch_size, self.dsa, self.precision = config.batch_size, config.dsa, precision
        self.device = next(model.parameters()).device
        self.optimizer = sgd([p for p in model.parameters() if p.requires_grad] + list(extra_parameters), config)
        self.loss = CompiledLoss(loss_fn, compile, notes)
        model.train()

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        batches = self._memory_batches() if self.stream is None else ((x, y, None) for x, y in self.stream(self.generator))
        for x, y, index in batches:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if self.dsa is not None:
                x = dsa(x, self.dsa, self.generator)
            yield x, y, index

    def _memory_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        order = epoch_order(len(self.labels), self.generator)
        for part in batch_slices(len(self.labels), self.batch_size):
            index = order[part]
            yield self.images[index.to(self.images.device)], self.labels[index.to(self.labels.device)], index

    def step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss.forward_backward(self.optimizer, self.model, x, y, index, self.precision)
        self.optimizer.step()
        return loss.detach().reshape(1)

    def lr_changed(self) -> None:
        pass

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state()}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])


def train(model: nn.Module, images: torch.Tensor | None, labels: torch.Tensor | None, config: TrainConfig,
          generator: torch.Generator, loss_fn: LossFn = task_loss, extra_parameters: Iterable[nn.Parameter] = (),
          on_epoch: Callable[[int, float], None] | None = None, desc: str = "train",
          resume: ResumeFile | None = None, extra_state: dict | None = None,
          stream: BatchStream | None = None, precision: str = "fp32", compile: bool = False,
          notes: list[str] | None = None) -> list[float]:
    """Mini-batch SGD with a step decay and per-batch DSA (``SeedLoop`` driven by ``run_epochs``);
    returns the mean loss of each epoch.

    ``loss_fn(model, x_augmented, y, index)`` receives the batch indices so callers can look up
    per-sample targets (ELF teacher features). ``on_epoch``, ``resume`` and ``extra_state``: see
    ``run_epochs``; ``stream``, ``precision``, ``compile`` and ``notes``: see ``SeedLoop``.
    """
    loop = SeedLoop(model, images, labels, config, generator, loss_fn, extra_parameters, stream, precision, compile,
                    notes if notes is not None else [])
    return run_epochs(loop, config, desc, on_epoch=on_epoch, resume=resume, extra_state=extra_state)[0]


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start

"""The one SGD training and evaluation loop shared by teachers, experts and students."""

from __future__ import annotations

import itertools
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from elf_pipeline.engine.augment import DSAConfig, dsa, dsa_config
from elf_pipeline.engine.compiled_step import CompiledLoss, LossFn
from elf_pipeline.engine.precision import autocast, full_precision
from elf_pipeline.infra.errors import InputError, TrainingDiverged
from elf_pipeline.infra.resume import ResumeFile

log = logging.getLogger(__name__)


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

# The protocol shared by the loop (``train``) and the vectorised trainer (``vectorized``): the
# optimiser, the epochs with their lr decay, the shuffle and batches of an epoch, the divergence check.


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


def _memory_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, generator: torch.Generator):
    order = epoch_order(len(labels), generator)
    for part in batch_slices(len(labels), batch_size):
        index = order[part]
        yield images[index.to(images.device)], labels[index.to(labels.device)], index


def train(model: nn.Module, images: torch.Tensor | None, labels: torch.Tensor | None, config: TrainConfig,
          generator: torch.Generator, loss_fn: LossFn = task_loss, extra_parameters: Iterable[nn.Parameter] = (),
          on_epoch: Callable[[int, float], None] | None = None, desc: str = "train",
          resume: ResumeFile | None = None, extra_state: dict | None = None,
          stream: BatchStream | None = None, precision: str = "fp32", compile: bool = False,
          notes: list[str] | None = None) -> list[float]:
    """Mini-batch SGD with a step decay and per-batch DSA; returns the mean loss of each epoch.

    ``images``/``labels`` may live on the host while the model is on a device: each batch is
    moved on its own, so the whole training set never has to fit in device memory.
    ``loss_fn(model, x_augmented, y, index)`` receives the batch indices so callers can look up
    per-sample targets (ELF teacher features).

    With ``resume``, the model, optimiser, generator, loss history and the caller's
    ``extra_state`` (a dict of tensors/primitives, e.g. records written by ``on_epoch``) are saved
    periodically and restored on the next call, so a killed job continues bit-identically.

    With ``stream`` (for data larger than memory, e.g. ``artifacts.data.iter_batches``), ``stream(generator)``
    yields one shuffled epoch of ``(x, y)`` batches and ``images``/``labels`` are unused; the loss
    function then gets ``index=None``.

    The loss function runs under ``precision``'s autocast (``fp32``/``bf16``; loss, gradients and
    optimiser state stay float32), through ``torch.compile`` with ``compile`` (``CompiledLoss``: a
    compiler failure runs eagerly from then on, its reason appended to ``notes``).
    """
    device = next(model.parameters()).device
    parameters = [p for p in model.parameters() if p.requires_grad] + list(extra_parameters)
    optimizer = sgd(parameters, config)
    epochs = config.total_epochs
    history: list[float] = []
    start_epoch = 0
    state = resume.load() if resume is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        history, start_epoch = list(state["history"]), int(state["epoch"])
        if extra_state is not None:
            extra_state.update(state["extra"])
    model.train()
    step = CompiledLoss(loss_fn, compile, notes if notes is not None else [])
    for epoch in train_epochs(optimizer, config, desc, start_epoch):
        if stream is None:
            batches = _memory_batches(images, labels, config.batch_size, generator)
        else:
            batches = ((x, y, None) for x, y in stream(generator))
        total = torch.zeros((), device=device)
        seen = 0
        for x, y, index in batches:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if config.dsa is not None:
                x = dsa(x, config.dsa, generator)
            optimizer.zero_grad(set_to_none=True)
            loss = step.forward_backward(optimizer, model, x, y, index, precision)
            optimizer.step()
            total += loss.detach() * len(y)
            seen += len(y)
        epoch_loss = check_finite(float(total) / max(seen, 1), epoch + 1, desc, config)  # one host sync per epoch
        history.append(epoch_loss)
        if on_epoch is not None:
            on_epoch(epoch + 1, epoch_loss)
        if resume is not None and resume.due() and epoch + 1 < epochs:
            resume.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                         "history": history, "epoch": epoch + 1, "extra": extra_state or {}})
    return history


T = TypeVar("T")


def retry_on_oom(run: Callable[[int], T], batch_size: int, what: str) -> T:
    """Call ``run(batch_size)``; on a GPU out-of-memory error halve the batch and try again."""
    while True:
        try:
            return run(batch_size)
        except torch.OutOfMemoryError:
            if batch_size <= 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            log.warning("%s ran out of device memory at batch size %d; retrying with %d", what, batch_size, batch_size // 2)
            batch_size //= 2


@torch.inference_mode()
def evaluate_stream(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], precision: str = "fp32") -> float:
    """Top-1 accuracy over streamed ``(x, y)`` batches (data larger than memory)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    for x, y in batches:
        y = y.to(device, non_blocking=True)
        with autocast(device, precision):  # the argmax of low-precision logits is exact
            correct += (model(x.to(device, non_blocking=True)).argmax(dim=1) == y).sum()
        seen += len(y)
    model.train(was_training)
    return float(correct) / max(seen, 1)


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024,
             precision: str = "fp32") -> float:
    """Top-1 accuracy in eval mode (batch norm uses running statistics) at ``precision``; halves the
    batch on OOM."""
    return retry_on_oom(lambda size: _evaluate(model, images, labels, size, precision), batch_size, "evaluation")


# On a CPU with one thread (the workflow's jobs), inference is fastest when one chunk's widest
# activation stays in the caches: the normalisation, activation and pooling between the convolutions
# are memory-bound, and a batch of hundreds of 32 px feature maps streams through DRAM at every one
# of them. With several threads every operator is a parallel region that ends in a barrier; when
# other work takes a core, a descheduled thread holds its siblings at every barrier, so small chunks
# lose most of their time there. Several threads therefore take chunks 8x larger (`make bench
# BENCH_CONTEND=2` measures the test pass idle and beside competing jobs; docs/performance.md).
CPU_CHUNK_BYTES = 8 * 2**20
PARALLEL_CHUNK_BYTES = 64 * 2**20


@torch.inference_mode()
def widest_activation_bytes(model: nn.Module, sample: torch.Tensor) -> int:
    """Bytes of the largest output of any leaf module for one image of ``sample``."""
    widest = [sample[:1].numel() * sample.element_size()]

    def record(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            widest[0] = max(widest[0], output.numel() * output.element_size())

    handles = [module.register_forward_hook(record) for module in model.modules() if not any(module.children())]
    was_training = model.training
    try:
        model.eval()(sample[:1])
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return widest[0]


def inference_chunk(model: nn.Module, sample: torch.Tensor, batch_size: int) -> int:
    """Images per forward pass of a test pass: ``batch_size`` on a GPU; on a CPU at most as many as
    keep the widest activation within ``CPU_CHUNK_BYTES`` with one torch thread, within
    ``PARALLEL_CHUNK_BYTES`` with several (the same predictions either way)."""
    if sample.device.type != "cpu":
        return batch_size
    budget = CPU_CHUNK_BYTES if torch.get_num_threads() == 1 else PARALLEL_CHUNK_BYTES
    return max(1, min(batch_size, budget // widest_activation_bytes(model, sample)))


def input_memory_format(model: nn.Module) -> torch.memory_format:
    """The memory format of the model's convolution weights, for its inputs (channels-last models
    take channels-last inputs, so oneDNN/cuDNN need no layout conversion)."""
    weight = next((p for p in model.parameters() if p.dim() == 4), None)
    if weight is not None and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


@torch.inference_mode()
def _evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int, precision: str) -> float:
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    chunk = inference_chunk(model, images[:1].to(device), batch_size) if len(labels) else batch_size
    layout = input_memory_format(model) if images.dim() == 4 else torch.contiguous_format
    for start in range(0, len(labels), chunk):
        x = images[start:start + chunk].to(device, non_blocking=True).contiguous(memory_format=layout)
        y = labels[start:start + chunk].to(device, non_blocking=True)
        with autocast(device, precision):
            correct += (model(x).argmax(dim=1) == y).sum()
    model.train(was_training)
    return float(correct) / len(labels)


@dataclass
class RealData:
    """A real training split, in memory (``images``/``labels``) or streamed from disk (``stream``)."""

    images: torch.Tensor | None
    labels: torch.Tensor | None
    stream: BatchStream | None
    count: int


def real_training_data(data: str, batch_size: int, generator: torch.Generator, train_limit: int | None = None,
                       max_in_memory_gb: float = 4.0) -> RealData:
    """The training split of ``data.h5`` (optionally a seeded subset of ``train_limit`` images): loaded
    when it fits in ``max_in_memory_gb`` as uint8, otherwise streamed in shuffled chunks."""
    from elf_pipeline.artifacts.data_file import iter_batches, load_split, split_nbytes, split_size

    if split_nbytes(data, "train", train_limit) <= max_in_memory_gb * (1 << 30):
        images, labels, _ = load_split(data, "train")
        if train_limit is not None and train_limit < len(labels):
            keep = torch.randperm(len(labels), generator=generator)[:train_limit]
            images, labels = images[keep], labels[keep]
        return RealData(images, labels, None, len(labels))
    count = min(train_limit or split_size(data, "train"), split_size(data, "train"))
    steps = math.ceil(count / batch_size)

    def stream(epoch_generator: torch.Generator):
        return itertools.islice(iter_batches(data, "train", batch_size, epoch_generator), steps)

    log.info("streaming %d training images from %s (larger than %.1f GB)", count, data, max_in_memory_gb)
    return RealData(None, None, stream, count)


def real_test_accuracy(data: str, batch_size: int, max_in_memory_gb: float = 4.0,
                       split: str = "test", precision: str = "fp32") -> Callable[[nn.Module], float]:
    """A function giving a model's accuracy on a split (test by default; loaded once, or streamed if large)."""
    from elf_pipeline.artifacts.data_file import iter_batches, load_split, split_nbytes

    if split_nbytes(data, split) <= max_in_memory_gb * (1 << 30):
        images, labels, _ = load_split(data, split)
        return lambda model: evaluate(model, images, labels, batch_size, precision)
    return lambda model: evaluate_stream(model, iter_batches(data, split, batch_size), precision)


def real_val_accuracy(data: str, batch_size: int, max_in_memory_gb: float = 4.0,
                      precision: str = "fp32") -> Callable[[nn.Module], float | None]:
    """Accuracy on the validation split, or a function giving None where ``data.h5`` has none."""
    from elf_pipeline.artifacts.data_file import has_split

    if not has_split(data, "val"):
        return lambda model: None
    return real_test_accuracy(data, batch_size, max_in_memory_gb, split="val", precision=precision)


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start

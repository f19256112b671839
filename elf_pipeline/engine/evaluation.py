"""Evaluation shared by every stage: top-1 accuracy of a model on in-memory or streamed images (test
passes chunked to the CPU caches, OOM retries) and the real-data splits of ``data.h5`` (training data
in memory or streamed, the test and validation accuracy functions)."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from elf_pipeline.engine.precision import autocast
from elf_pipeline.engine.training import BatchStream

log = logging.getLogger(__name__)

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

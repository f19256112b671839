"""Full-real-data reference: a student architecture trained on the real training set.

This is the upper bound row of every report table: what the architecture reaches with all the
data (or a class-balanced subset of ``train_limit`` images when the config says so), trained with
the students' protocol (the shared SGD loop) and tested on the full real test set.
"""

from __future__ import annotations

import logging
import os
import platform
import resource
import sys

import pandas as pd
import torch

from elf_pipeline import __version__
from elf_pipeline.artifacts.data_file import has_split, load_split
from elf_pipeline.engine.evaluation import evaluate
from elf_pipeline.engine.precision import Numerics
from elf_pipeline.engine.training import Timer, TrainConfig, build_seeded, resolve_device, seeded_generator, train
from elf_pipeline.infra.errors import InputError
from elf_pipeline.infra.io import atomic_path, config_hash, sha256_file
from elf_pipeline.models import build

log = logging.getLogger(__name__)


def balanced_subset(labels: torch.Tensor, limit: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``limit // num_classes`` (at least one) random images of every class, sorted."""
    per_class = max(1, limit // num_classes)
    chosen = []
    for label in range(num_classes):
        index = torch.nonzero(labels == label).flatten()
        chosen.append(index[torch.randperm(len(index), generator=generator)[:per_class]])
    return torch.sort(torch.cat(chosen)).values


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def train_full(data: str | os.PathLike, arch: str, train_config: dict, seeds: list[int], out: str | os.PathLike,
               identity: dict, train_limit: int | None = None, subset_seed: int = 0, device: str = "auto",
               precision: str = "fp32", compile: str = "false") -> pd.DataFrame:
    """Train ``arch`` on the real training split once per seed; write one Parquet row per model.

    Every seed trains on the same images (the subset, when ``train_limit`` is set, is drawn with
    ``subset_seed``), so the spread over seeds is that of training alone.
    """
    if not seeds:
        raise InputError("reference needs at least one seed")
    if train_limit is not None and train_limit < 1:
        raise InputError(f"train_limit must be >= 1, got {train_limit}")
    torch_device = resolve_device(device)
    numerics = Numerics.resolve(precision, compile, torch_device)
    config = TrainConfig.from_dict(train_config)
    images, labels, info = load_split(data, "train")  # stays on the host; batches move to the device
    total = len(labels)
    if train_limit is not None and train_limit > total:
        log.warning("reference train_limit %d: larger than the training split of %s (%d images): all of them are used",
                    train_limit, data, total)
    if train_limit is not None and train_limit < total:
        keep = balanced_subset(labels, train_limit, info.num_classes, seeded_generator(subset_seed))
        images, labels = images[keep], labels[keep]
    test_images, test_labels, _ = load_split(data, "test")
    val = load_split(data, "val")[:2] if has_split(data, "val") else None
    protocol = {**{f"train_{k}": v for k, v in config.to_dict().items() if k != "dsa"},
                "dsa_strategy": config.dsa.strategy if config.dsa else "none"}
    provenance = {"device": torch_device.type, **numerics.protocol(), "torch_version": torch.__version__,
                  "package_version": __version__,
                  "python_version": platform.python_version(), "data_sha256": sha256_file(data),
                  "config_hash": config_hash({"train": train_config, "seeds": list(seeds), "train_limit": train_limit,
                                              "subset_seed": subset_seed})}
    rows = []
    for seed in seeds:
        model = build_seeded(lambda: build(arch, info.channels, info.num_classes, info.image_size), seed).to(torch_device)
        if torch_device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(torch_device)
        with Timer() as timer:
            train(model, images, labels, config, seeded_generator(seed), desc=f"full-data {arch} seed {seed}",
                  on_epoch=lambda epoch, loss, seed=seed: log.info("%s seed %d epoch %d loss %.4f", arch, seed, epoch, loss),
                  precision=numerics.precision, compile=numerics.compile)
        accuracy = evaluate(model, test_images, test_labels, config.eval_batch_size, numerics.precision)
        val_acc = evaluate(model, *val, config.eval_batch_size, numerics.precision) if val is not None else None
        log.info("full-data %s seed %d: test accuracy %.4f on %d training images (%.1fs)", arch, seed, accuracy,
                 len(labels), timer.seconds)
        rows.append({**identity, "arch": arch, "seed": seed, "test_acc": accuracy, "val_acc": val_acc,
                     "test_images": len(test_labels), "val_images": len(val[1]) if val is not None else 0,
                     "train_seconds": timer.seconds, "peak_memory_mb": peak_memory_mb(), "train_images": len(labels),
                     "device_peak_memory_mb": torch.cuda.max_memory_allocated(torch_device) / 2**20
                     if torch_device.type == "cuda" else None,
                     "train_images_total": total, **protocol, **provenance})
    frame = pd.DataFrame(rows)
    with atomic_path(out) as tmp:
        frame.to_parquet(tmp, index=False)
    return frame

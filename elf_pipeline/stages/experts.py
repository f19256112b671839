"""Expert trajectories for MTT, the ``experts`` stage: networks trained on real data,
parameters saved after every epoch.

One file per expert (layout in ``artifacts.experts``), so adding experts never retrains the others.

Published protocol (MTT's buffer.py): ConvNet, 50 epochs, SGD lr 0.01 without momentum or weight
decay, batch 256, DSA on every batch, constant learning rate.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from elf_pipeline.artifacts.data_file import load_split, read_info
from elf_pipeline.artifacts.expert_file import expert_writer, parameter_layout
from elf_pipeline.config.schema import defaults
from elf_pipeline.engine.augment import dsa_config
from elf_pipeline.engine.evaluation import evaluate, real_test_accuracy, real_training_data
from elf_pipeline.engine.precision import Numerics
from elf_pipeline.engine.training import Timer, TrainConfig, build_seeded, resolve_device, seeded_generator, train
from elf_pipeline.engine.zca import fit_zca
from elf_pipeline.infra.errors import InputError
from elf_pipeline.infra.io import sha256_file
from elf_pipeline.models import build

log = logging.getLogger(__name__)

DTYPES = ("float32", "float16")


_DEFAULTS = defaults("experts")  # the schema's experts block is the one place its defaults are written


@dataclass
class ExpertConfig:
    epochs: int = _DEFAULTS["epochs"]
    lr: float = _DEFAULTS["lr"]
    momentum: float = _DEFAULTS["momentum"]
    weight_decay: float = _DEFAULTS["weight_decay"]
    batch_size: int = _DEFAULTS["batch_size"]
    dsa: bool | dict = _DEFAULTS["dsa"]
    dtype: str = _DEFAULTS["dtype"]
    seed: int = _DEFAULTS["seed"]               # expert k trains with seed + k
    train_limit: int | None = None
    max_in_memory_gb: float = _DEFAULTS["max_in_memory_gb"]  # larger training splits are streamed (not with zca)
    zca: bool = _DEFAULTS["zca"]
    zca_eps: float = _DEFAULTS["zca_eps"]

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise InputError(f"experts.dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")


def flat_parameters(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).cpu()


def train_expert(data: str | os.PathLike, out: str | os.PathLike, arch: str, index: int, config: dict,
                 device: str = "auto", precision: str = "fp32", compile: str = "false") -> dict:
    """Train expert ``index`` of ``arch`` on the real training set and write its trajectory."""
    settings = ExpertConfig(**config)
    seed = settings.seed + index
    torch_device = resolve_device(device)
    numerics = Numerics.resolve(precision, compile, torch_device)
    info = read_info(data)
    zca_eps = 0.0
    generator = seeded_generator(seed)
    stream = None
    if settings.zca:  # fitted on the whole training split, exactly as MTT's distillation refits it
        images, labels, _ = load_split(data, "train")
        test_images, test_labels, _ = load_split(data, "test")
        whitening = fit_zca(images, settings.zca_eps)
        images, test_images = whitening.transform(images), whitening.transform(test_images)
        zca_eps = whitening.eps
        if settings.train_limit is not None and settings.train_limit < len(labels):
            keep = torch.randperm(len(labels), generator=generator)[:settings.train_limit]
            images, labels = images[keep], labels[keep]
        train_count = len(labels)

        def test_accuracy(model: nn.Module) -> float:
            return evaluate(model, test_images, test_labels, precision=numerics.precision)
    else:  # loaded, or streamed from disk when larger than max_in_memory_gb
        real = real_training_data(data, settings.batch_size, generator, settings.train_limit, settings.max_in_memory_gb)
        images, labels, stream, train_count = real.images, real.labels, real.stream, real.count
        test_accuracy = real_test_accuracy(data, 1024, settings.max_in_memory_gb, precision=numerics.precision)
    model = build_seeded(lambda: build(arch, info.channels, info.num_classes, info.image_size), seed).to(torch_device)
    train_config = TrainConfig(epochs=settings.epochs, lr=settings.lr, momentum=settings.momentum,
                               weight_decay=settings.weight_decay, batch_size=settings.batch_size, lr_decay_at=0.0,
                               dsa=dsa_config(settings.dsa))
    initial = flat_parameters(model)
    with expert_writer(out, settings.epochs, initial.numel(), settings.dtype) as writer:
        writer.write_epoch(0, initial.numpy())

        def snapshot(epoch: int, loss: float) -> None:
            writer.write_epoch(epoch, flat_parameters(model).numpy())
            log.info("expert %s #%d epoch %d/%d loss %.4f", arch, index, epoch, settings.epochs, loss)

        with Timer() as timer:
            losses = train(model, images, labels, train_config, generator, on_epoch=snapshot, desc=f"expert {index}",
                           stream=stream, precision=numerics.precision, compile=numerics.compile)
        test_acc = test_accuracy(model)
        attrs = {"arch": arch, "index": index, "seed": seed, "epochs": settings.epochs,
                 "num_params": initial.numel(), "layout": json.dumps(parameter_layout(model)),
                 "channels": info.channels, "num_classes": info.num_classes, "image_size": info.image_size,
                 "zca_eps": zca_eps, "lr": settings.lr, "test_acc": test_acc, "train_images": train_count,
                 "train_seconds": timer.seconds, **numerics.protocol()}
        storage = writer.finish(losses, attrs, {"arch": arch, "index": index, **asdict(settings)},
                                {"data": sha256_file(data)})
    size = Path(out).stat().st_size
    log.info("expert %s #%d: test accuracy %.4f, %d parameters x %d epochs (%s) = %.1f MiB on disk",
             arch, index, test_acc, initial.numel(), settings.epochs + 1, settings.dtype, size / 2**20)
    return {"arch": arch, "index": index, "test_acc": test_acc, "disk_bytes": size, "storage_bytes": storage,
            "train_seconds": timer.seconds}

"""Train the ELF teacher: a network of the distillation family trained on the real training set."""

from __future__ import annotations

import copy
import logging
import os

from elf_pipeline.artifacts.checkpoint import save_checkpoint
from elf_pipeline.artifacts.data_file import read_info
from elf_pipeline.config.schema import default
from elf_pipeline.engine.evaluation import real_test_accuracy, real_training_data, real_val_accuracy
from elf_pipeline.engine.precision import Numerics
from elf_pipeline.engine.training import Timer, TrainConfig, build_seeded, resolve_device, seeded_generator, train
from elf_pipeline.infra.errors import InputError
from elf_pipeline.infra.io import config_hash, sha256_file, write_json
from elf_pipeline.infra.resume import ResumeFile, resume_path
from elf_pipeline.models import build

log = logging.getLogger(__name__)


def train_teacher(data: str | os.PathLike, out_model: str | os.PathLike, out_history: str | os.PathLike, arch: str,
                  train_config: dict, checkpoint_epoch: int | None = None, train_limit: int | None = None,
                  seed: int = 0, device: str = "auto", eval_every: int = 1, resume_every: float = 60.0,
                  max_in_memory_gb: float | None = None, precision: str = "fp32", compile: str = "false") -> dict:
    """Train ``arch`` on real data; save the weights after ``checkpoint_epoch`` (default: last).

    A training split larger than ``max_in_memory_gb`` (as uint8) is streamed from ``data.h5`` in
    shuffled chunks instead of being loaded, so ImageNet-sized sets train in bounded memory
    (default: the schema's ``teachers.<name>.max_in_memory_gb``).
    """
    if max_in_memory_gb is None:
        max_in_memory_gb = default("teachers", "*", "max_in_memory_gb")
    torch_device = resolve_device(device)
    numerics = Numerics.resolve(precision, compile, torch_device)
    config = TrainConfig.from_dict(train_config)
    last_epoch = config.total_epochs
    checkpoint_epoch = checkpoint_epoch or last_epoch
    if not 1 <= checkpoint_epoch <= last_epoch:
        raise InputError(f"checkpoint_epoch {checkpoint_epoch} must lie in 1..epochs ({last_epoch})")
    info = read_info(data)
    generator = seeded_generator(seed)
    real = real_training_data(data, config.batch_size, generator, train_limit, max_in_memory_gb)
    images, labels, stream, train_images = real.images, real.labels, real.stream, real.count
    accuracy_of = real_test_accuracy(data, config.eval_batch_size, max_in_memory_gb, precision=numerics.precision)
    val_accuracy_of = real_val_accuracy(data, config.eval_batch_size, max_in_memory_gb, numerics.precision)

    def test_accuracy() -> float:
        return accuracy_of(model)
    model = build_seeded(lambda: build(arch, info.channels, info.num_classes, info.image_size), seed).to(torch_device)
    progress_state: dict = {"epochs": [], "saved": {}}  # part of the resume state

    def on_epoch(epoch: int, loss: float) -> None:
        record: dict = {"epoch": epoch, "train_loss": loss}
        if epoch % eval_every == 0 or epoch in (checkpoint_epoch, last_epoch):
            record["test_acc"] = test_accuracy()
            if (val_acc := val_accuracy_of(model)) is not None:
                record["val_acc"] = val_acc
        progress_state["epochs"].append(record)
        log.info("teacher %s epoch %d loss %.4f %s", arch, epoch, loss, record.get("test_acc", ""))
        if epoch == checkpoint_epoch:
            progress_state["saved"].update(state=copy.deepcopy(model.state_dict()), test_acc=record["test_acc"],
                                           val_acc=record.get("val_acc"))

    fingerprint = config_hash({"arch": arch, "train": config.to_dict(), "checkpoint_epoch": checkpoint_epoch,
                               "train_limit": train_limit, "seed": seed, "eval_every": eval_every, "data": sha256_file(data),
                               "streamed": stream is not None, "precision": numerics.precision,
                               "compile": numerics.compile})
    resume = ResumeFile(resume_path(out_model), resume_every, fingerprint)
    notes: list[str] = []
    with Timer() as timer:
        train(model, images, labels, config, generator, on_epoch=on_epoch, desc=f"teacher {arch}",
              resume=resume, extra_state=progress_state, stream=stream, precision=numerics.precision,
              compile=numerics.compile, notes=notes)
    epochs, saved = progress_state["epochs"], progress_state["saved"]
    model.load_state_dict(saved["state"])
    save_checkpoint(out_model, model, arch, info.channels, info.num_classes, info.image_size,
                    epoch=checkpoint_epoch, test_acc=saved["test_acc"], **numerics.protocol())
    history = {"arch": arch, "checkpoint_epoch": checkpoint_epoch, "test_acc": saved["test_acc"],
               "val_acc": saved.get("val_acc"),
               "train_images": train_images, "train_seconds": timer.seconds, "seed": seed,
               "config": config.to_dict(), **numerics.protocol(), "compiled": numerics.compile and not notes,
               "notes": notes, "epochs": epochs}
    write_json(out_history, history)
    resume.clear()
    return history

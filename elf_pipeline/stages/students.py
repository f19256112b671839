"""The ``students`` stage: train evaluation models (students) on a synthetic set, with or
without ELF (the objective and the trainer are in ``elf``), test them and write one row per run.

``teacher_targets: cached`` (the published protocol) reads the teacher's features from the
features file, computed once on the un-augmented images; ``online`` runs the teacher checkpoint on
the same augmented batch the student sees. Rows record which was used, the adapter form and the
distillation protocol of the synthetic set.
"""

from __future__ import annotations

import logging
import os
import platform

import pandas as pd
import torch

from elf_pipeline import __version__
from elf_pipeline.artifacts.checkpoint import load_model
from elf_pipeline.artifacts.choice import apply_choice, read_choice, selection_columns
from elf_pipeline.artifacts.data_file import DatasetInfo, has_split, load_split
from elf_pipeline.artifacts.feature_file import TeacherFeatures, features_label_order, load_features
from elf_pipeline.artifacts.side_info import side_information
from elf_pipeline.artifacts.synset import read_synset, synset_learned_lr, synset_protocol, synset_zca_eps
from elf_pipeline.engine.elf import Evaluation, OnlineTeacher, fit_students
from elf_pipeline.engine.precision import Numerics
from elf_pipeline.engine.training import TrainConfig, resolve_device
from elf_pipeline.engine.vectorized import vectorize_setting
from elf_pipeline.engine.zca import ZCA, fit_zca_to_data
from elf_pipeline.infra.errors import InputError
from elf_pipeline.infra.io import atomic_path, config_hash, sha256_file

log = logging.getLogger(__name__)

# Keys of a student ``train`` block that choose how the seeds are trained, not what they learn:
# they stay out of TrainConfig, the protocol columns and config_hash.
RUNTIME_KEYS = ("vectorize_seeds", "cuda_graphs")


def protocol_train_config(train_config: dict) -> dict:
    """The ``train`` block without its runtime keys (what TrainConfig and config_hash see)."""
    return {key: value for key, value in train_config.items() if key not in RUNTIME_KEYS}


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
                   identity: dict, device: str = "auto", teacher_model: str | os.PathLike | None = None,
                   precision: str = "fp32", compile: str = "false", choice: str | os.PathLike | None = None,
                   select_keys: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """Train ``arch`` once per seed and write one Parquet row per run to ``out``.

    ``teacher_model``: the teacher checkpoint, needed (instead of ``features``) for
    ``teacher_targets: online``. ``precision`` and ``compile``: ``elf_pipeline.engine.precision``.
    ``choice``: the ``choice.json`` of ``students.select``, whose chosen values of ``select_keys``
    replace those of ``train_config`` (rows then record ``selected``)."""
    torch_device = resolve_device(device)
    train_config, selection = _selected(train_config, choice, select_keys)
    numerics = Numerics.resolve(precision, compile, torch_device)
    spec = Evaluation(**evaluation)
    train_config, lr_source = _resolve_lr(train_config, synset)
    config = TrainConfig.from_dict(protocol_train_config(train_config))
    vectorize = vectorize_setting(train_config.get("vectorize_seeds", "auto"))
    images, labels = read_synset(synset)
    test_images, test_labels, info, whitening = student_test_split(data, synset)
    if images.shape[1:] != (info.channels, info.image_size, info.image_size):
        raise InputError(f"{synset}: images {tuple(images.shape[1:])} do not match dataset "
                         f"({info.channels}, {info.image_size}, {info.image_size})")
    if labels.ndim == 2 and labels.shape[1] != info.num_classes:
        raise InputError(f"{synset}: soft labels over {labels.shape[1]} classes, but the dataset has {info.num_classes}")
    teacher, running, kd, checkpoint_sha = _teachers(spec, features, teacher_model, synset, images, len(labels),
                                                    whitening, torch_device, identity.get("evaluation"))
    online = running if spec.uses_teacher and spec.teacher_targets == "online" else None
    distillation = synset_protocol(synset)
    if spec.relabel == "teacher":  # static relabelling (SRe2L/RDED style): the teacher's softmax, once
        relabeller = running
        labels = torch.softmax(relabeller.logits(images.to(torch_device)), dim=1).cpu()
        distillation["label_kind"] = "teacher"
    images, labels = images.to(torch_device), labels.to(torch_device)
    test_images, test_labels = test_images.to(torch_device), test_labels.to(torch_device)
    val = student_val_split(data, whitening)
    val = tuple(t.to(torch_device) for t in val) if val is not None else None
    target = teacher.values.to(torch_device) if spec.uses_teacher and online is None else None
    protocol = _protocol(config, spec, teacher.layer if teacher and spec.uses_teacher else None)
    side = side_information(tuple(images.shape[1:]), len(labels), info.num_classes,
                            soft_labels=distillation["label_kind"] in ("soft", "teacher"),
                            feature_shape=tuple(teacher.values.shape[1:]) if spec.uses_teacher and online is None else None,
                            teacher_param_bytes=_parameter_bytes(running.model) if running is not None and
                            (online is not None or kd is not None) else None)
    label_order = {f"teacher_{key}": value for key, value in features_label_order(features).items()} if features else {}
    fit = fit_students(arch, spec, config, images, labels, test_images, test_labels, seeds, info.num_classes,
                       target=target, online=online, vectorize=vectorize, desc=str(identity.get("evaluation")),
                       cuda_graphs=train_config.get("cuda_graphs", "auto"), val=val, kd=kd,
                       precision=numerics.precision, compile=numerics.compile)
    rows = []
    for result in fit.seeds:
        seed, accuracy = result.seed, result.test_acc
        log.info("%s %s seed %d: test accuracy %.4f (%.1fs)", arch, identity.get("evaluation"), seed, accuracy,
                 result.train_seconds)
        rows.append({**identity, "arch": arch, "seed": seed, "test_acc": accuracy, "val_acc": result.val_acc,
                     "test_images": len(test_labels), "val_images": len(val[1]) if val is not None else 0,
                     "lr_source": lr_source, **selection_columns(selection), "train_seconds": result.train_seconds,
                     "test_seconds": result.test_seconds, "trainer": fit.trainer, "cuda_graph": fit.cuda_graph,
                     "peak_memory_mb": fit.peak_memory_mb,
                     "device_peak_memory_mb": fit.device_peak_memory_mb,
                     "num_synthetic": len(labels), **side, **label_order, "student_layer": result.student_layer,
                     "student_feature_shape": "x".join(map(str, result.student_shape)),
                     "teacher_feature_shape": "x".join(map(str, teacher.values.shape[1:])) if teacher and spec.uses_teacher
                     else None,
                     "adapter": result.adapted, "teacher_arch": teacher.teacher_arch if teacher else None,
                     "teacher_test_acc": teacher.teacher_test_acc if teacher else None, **protocol,
                     "device": torch_device.type, **numerics.protocol(), "compiled": fit.compiled,
                     "notes": "; ".join(fit.notes) or None, "torch_version": torch.__version__, "package_version": __version__,
                     "python_version": platform.python_version(), "synset_sha256": sha256_file(synset),
                     "features_sha256": teacher.sha256 if spec.uses_teacher and online is None else None,
                     "teacher_sha256": checkpoint_sha,
                     "config_hash": config_hash({"evaluation": evaluation, "train": protocol_train_config(train_config)}),
                     "normalization": "mean_std", "zca": bool(distillation["distill_zca_eps"]),
                     **distillation})
    frame = pd.DataFrame(rows)
    with atomic_path(out) as tmp:
        frame.to_parquet(tmp, index=False)
    return frame


def _selected(train_config: dict, choice: str | os.PathLike | None, select_keys) -> tuple[dict, dict | None]:
    """``train_config`` with the values ``students.select`` chose for ``select_keys``, and the choice."""
    if not select_keys:
        return train_config, None
    if choice is None:
        raise InputError(f"settings select {', '.join(select_keys)} from a choice file, but none was given (--choice)")
    selection = read_choice(choice)
    return apply_choice(train_config, selection, list(select_keys)), selection


def _protocol(config: TrainConfig, spec: Evaluation, teacher_layer: str | None) -> dict:
    """The training and evaluation protocol columns of a student row."""
    return {**{f"train_{k}": v for k, v in config.to_dict().items() if k != "dsa"},
            "dsa_strategy": config.dsa.strategy if config.dsa else "none",
            **{k: v for k, v in vars(spec).items() if k not in ("teacher", "student_layer", "adapter")},
            "adapter_form": spec.adapter, "teacher_layer": teacher_layer}


def _teachers(spec: Evaluation, features, teacher_model, synset, images: torch.Tensor, count: int,
              whitening: ZCA | None, device: torch.device, name: object
              ) -> tuple[TeacherFeatures | None, OnlineTeacher | None, OnlineTeacher | None, str | None]:
    """What the evaluation reads of its teacher: (the teacher record, the running checkpoint or None,
    the KD logit teacher, the checkpoint's sha256).  Cached ELF features come from ``features``; the
    checkpoint runs during training for ``teacher_targets: online`` and for ``lambda_kd > 0``."""
    teacher = online = kd = checkpoint_sha = None
    if spec.needs_checkpoint:
        if teacher_model is None:
            raise InputError(f"evaluation {name!r} runs the teacher during training (teacher_targets: online or "
                             "lambda_kd > 0) but no teacher checkpoint was given (--teacher-model)")
        network, meta = load_model(teacher_model, device)
        transform = whitening.inverse if whitening is not None else None
        running = OnlineTeacher(network, spec.teacher_layer, images[:1].to(device), input_transform=transform)
        checkpoint_sha = sha256_file(teacher_model)
        kd = running if spec.uses_kd else None
        online = running if spec.uses_teacher and spec.teacher_targets == "online" else None
        teacher = TeacherFeatures(running.layer if online is not None else None, torch.empty(0, *running.feature_shape),
                                  meta["arch"], float(meta.get("test_acc", float("nan"))), checkpoint_sha)
    if spec.uses_teacher and online is None:
        if features is None:
            raise InputError(f"evaluation {name!r} uses a teacher but no features file was given")
        teacher = load_features(features, spec.teacher_layer, synset, count)
    return teacher, running if spec.needs_checkpoint else None, kd, checkpoint_sha


def _parameter_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _resolve_lr(train_config: dict, synset: str | os.PathLike) -> tuple[dict, str]:
    """``train.lr: learned`` takes the student lr learned with the set (as MTT's own evaluation
    does); returns the block with a numeric lr and where it came from (``config`` or ``learned``)."""
    if train_config.get("lr") != "learned":
        return train_config, "config"
    learned = synset_learned_lr(synset)
    if learned is None:
        raise InputError(f"{synset}: train.lr is learned but the synthetic set carries no learned lr "
                         "(MTT sets and imports with lr_path do)")
    return {**train_config, "lr": learned}, "learned"


"""Config checks beyond the JSON schema, and resolvers from the config to per-job blocks.

This module imports no torch: the Snakefile calls it while parsing, before any job starts.
Every error is one line that names the config key.
"""

from __future__ import annotations

import copy
from typing import Any

from elf_pipeline.models.registry import is_known, layer_names

# Kept in sync with the stage modules (tests assert it).
METHODS = ("random", "dm")
LOSS_MODES = ("front_rear_task", "front_task", "rear_task", "front_rear", "task")
FEATURE_LOSSES = ("ce", "l2", "l1", "cos", "cos_batch")
DATA_SOURCES = ("fashion_mnist", "digits")


class ConfigError(ValueError):
    pass


def merged(base: dict, override: dict | None) -> dict:
    """Recursive dict merge: ``override`` wins, nested dicts merge."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def method_config(config: dict, dataset: str, method: str, ipc: int) -> dict:
    """A method's hyperparameters for one dataset and IPC: the method block, then its ``by_ipc``
    entry, then the dataset's ``distillation.<method>`` override."""
    block = dict(config["distillation"]["methods"][method] or {})
    by_ipc = block.pop("by_ipc", {}) or {}
    block = merged(block, by_ipc.get(ipc, by_ipc.get(str(ipc))))
    dataset_override = (config["datasets"][dataset].get("distillation") or {}).get(method)
    return merged(block, dataset_override)


def evaluation_config(config: dict, name: str) -> dict:
    """The student-loss part of an evaluation (everything but its ``train`` override)."""
    return {k: v for k, v in config["evaluations"][name].items() if k != "train"}


def student_train_config(config: dict, evaluation: str) -> dict:
    return merged(config["students"]["train"], config["evaluations"][evaluation].get("train"))


def uses_teacher(config: dict, evaluation: str) -> bool:
    return config["evaluations"][evaluation].get("loss_mode", "task") != "task"


def student_jobs(config: dict) -> list[dict[str, Any]]:
    """Every (dataset, method, ipc, arch, evaluation) the study trains."""
    study = config["distillation"]
    return [{"dataset": d, "method": m, "ipc": i, "arch": a, "evaluation": e}
            for d in config["datasets"] for m in study["methods"] for i in study["ipc"]
            for a in config["students"]["archs"] for e in config["evaluations"]]


def _fail(key: str, problem: str) -> None:
    raise ConfigError(f"config key {key}: {problem}")


def _check_arch(key: str, name: str) -> None:
    if not is_known(name):
        _fail(key, f"unknown architecture {name!r} (e.g. convnet, convnet-bn, convnet-w512, resnet18, resnet18-bn, "
                   "vgg11, vgg11-bn, alexnet, alexnet-bn)")


def check_config(config: dict) -> None:
    """Semantic checks the schema cannot express; raises ConfigError naming the key."""
    for name, block in config["datasets"].items():
        if block["source"] not in DATA_SOURCES:
            _fail(f"datasets.{name}.source", f"unknown dataset {block['source']!r} (allowed: {', '.join(DATA_SOURCES)})")
    for method, block in config["distillation"]["methods"].items():
        if method not in METHODS:
            _fail(f"distillation.methods.{method}", f"unknown method (allowed: {', '.join(METHODS)})")
        if block and "model" in block:
            _check_arch(f"distillation.methods.{method}.model", block["model"])
    ipcs = config["distillation"]["ipc"]
    if len(set(ipcs)) != len(ipcs):
        _fail("distillation.ipc", f"values must be unique, got {ipcs}")
    for name, block in config["teachers"].items():
        _check_arch(f"teachers.{name}.arch", block["arch"])
        epochs = block["train"]["epochs"]
        checkpoint = block.get("checkpoint_epoch")
        if checkpoint is not None and not 1 <= checkpoint <= epochs:
            _fail(f"teachers.{name}.checkpoint_epoch", f"{checkpoint} must lie in 1..train.epochs ({epochs})")
    for index, arch in enumerate(config["students"]["archs"]):
        _check_arch(f"students.archs[{index}]", arch)
    seeds = config["students"]["seeds"]
    if len(set(seeds)) != len(seeds):
        _fail("students.seeds", f"seeds must be unique, got {seeds}")
    for name, block in config["evaluations"].items():
        teacher = block.get("teacher")
        if uses_teacher(config, name):
            if teacher is None:
                _fail(f"evaluations.{name}.teacher", f"loss_mode {block['loss_mode']!r} needs a teacher "
                                                     f"(one of: {', '.join(config['teachers']) or 'none configured'})")
            if teacher not in config["teachers"]:
                _fail(f"evaluations.{name}.teacher", f"unknown teacher {teacher!r} (configured: {', '.join(config['teachers'])})")
            layer = block.get("teacher_layer")
            known = layer_names(config["teachers"][teacher]["arch"])
            if layer is not None and known is not None and layer not in known:
                _fail(f"evaluations.{name}.teacher_layer",
                      f"teacher {teacher!r} has no layer {layer!r} (layers: {', '.join(known)})")
        split = block.get("student_layer")
        if split is not None:
            for arch in config["students"]["archs"]:
                known = layer_names(arch)
                if known is not None and split not in known:
                    _fail(f"evaluations.{name}.student_layer",
                          f"student {arch!r} has no layer {split!r} (layers: {', '.join(known)})")


def validate_schema(config: dict, schema_path: str) -> None:
    """JSON-schema validation with one line per problem: the key path and what is wrong."""
    import jsonschema
    import yaml

    with open(schema_path) as handle:
        schema = yaml.safe_load(handle)
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        return
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path).lstrip(".")
    key = key or "(top level)"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        raise ConfigError(f"config key {key + '.' if key != '(top level)' else ''}{extra[0] if extra else '?'}: "
                          f"unknown key{hint}")
    message = error.message if len(error.message) < 200 else error.message[:200] + "..."
    raise ConfigError(f"config key {key}: {message}")

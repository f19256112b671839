"""Resolvers from the config to per-job blocks (the ``--settings`` each rule passes its stage).

This module imports no torch: the Snakefile calls it while parsing, before any job starts.
Defaults come from the schema (``elf_pipeline.config.schema``); the names the config shares with the
stages from ``elf_pipeline.config.vocab``; the semantic checks live in ``elf_pipeline.config.checks``.
Every error is one line that names the config key.
"""

from __future__ import annotations

import copy
from typing import Any

from elf_pipeline.config.schema import defaults, validate_schema
from elf_pipeline.config.stages import parse_stage_settings
from elf_pipeline.config.studies import STUDY_PARTS, gap_archs, study_archs, study_jobs  # noqa: F401 (resolvers' API)
from elf_pipeline.config.vocab import (
    ADAPTER_FORMS,
    EXPERT_METHODS,
    FEATURE_LOSSES,
    IMPORT_NORMALIZATIONS,
    METHODS,
    TEACHER_TARGETS,
)
from elf_pipeline.config.vocab import LOSS_MODES as _LOSS_TERMS
from elf_pipeline.datasets.catalog import IMAGENET_SUBSETS
from elf_pipeline.infra.errors import ConfigError

LOSS_MODES = tuple(_LOSS_TERMS)
DATA_SOURCES = ("fashion_mnist", "digits", "mnist", "cifar10", "cifar100", "svhn", "tiny_imagenet", "imagenet", "image_folder",
                *IMAGENET_SUBSETS)
__all__ = ["ADAPTER_FORMS", "ConfigError", "EXPERT_METHODS", "FEATURE_LOSSES", "IMPORT_NORMALIZATIONS", "METHODS",
           "TEACHER_TARGETS", "validate_schema"]


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


def experts_config(config: dict) -> dict:
    """The top-level ``experts`` block with the schema's defaults filled in."""
    return merged(defaults("experts"), config.get("experts"))


def uses_experts(method: str) -> bool:
    return method in EXPERT_METHODS


def evaluation_config(config: dict, name: str, arch: str | None = None) -> dict:
    """The student-loss part of an evaluation (everything but its ``train`` override and ``methods``), with a
    teacher pool resolved to ``arch``'s teacher (so editing one pool entry reruns only its students)."""
    block = {k: v for k, v in config["evaluations"][name].items() if k not in ("train", "methods")}
    if is_teacher_pool(block.get("teacher")):
        block["teacher"] = teacher_value(config, name, arch)
    return block


def train_by_arch(config: dict) -> dict[str, dict]:
    """``students.train_by_arch``: architecture -> its overrides of ``students.train`` (may be empty)."""
    return config["students"].get("train_by_arch") or {}


def student_train_config(config: dict, evaluation: str | None, arch: str | None = None) -> dict:
    """A student's training block: ``students.train``, then ``students.train_by_arch[arch]`` (a
    per-architecture setting such as its lr, chosen on validation), then the evaluation's ``train``."""
    by_arch = train_by_arch(config).get(arch) if arch is not None else None
    own = config["evaluations"][evaluation].get("train") if evaluation is not None else None
    return merged(merged(config["students"]["train"], by_arch), own)


# Training keys ``students.select`` may choose, in the order candidates enumerate them (the grid's
# first key varies slowest); its other keys say how candidates are trained.
SELECT_KEYS = ("lr", "momentum", "weight_decay", "epochs")


def select_config(config: dict) -> dict | None:
    """``students.select``: the candidate values per training key and the ``seeds`` candidates train
    with (default [0]); None where the study selects nothing."""
    block = config["students"].get("select")
    if not block or not any(block.get(key) for key in SELECT_KEYS):
        return None
    return {"seeds": [0], **block}


def select_keys(config: dict) -> list[str]:
    block = select_config(config) or {}
    return [key for key in SELECT_KEYS if block.get(key)]


def select_candidates(config: dict) -> list[dict]:
    """Every candidate of ``students.select``, in config order (the grid over its keys, the first
    key varying slowest): ties between candidates go to the first of this list."""
    block = select_config(config)
    if block is None:
        return []
    candidates = [{}]
    for key in select_keys(config):
        candidates = [{**candidate, key: value} for candidate in candidates for value in block[key]]
    return candidates


def candidate_name(values: dict) -> str:
    """A candidate's name in result paths, e.g. ``lr0.005`` or ``lr0.01-epochs50``."""
    return "-".join(f"{key}{value}" for key, value in values.items())


def select_evaluation(config: dict) -> str:
    """The evaluation candidates train under: ``students.select.evaluation``, else ``baseline``, else
    the first evaluation without a teacher (ELF is never tuned apart from its baseline)."""
    block = select_config(config) or {}
    if block.get("evaluation"):
        return block["evaluation"]
    if "baseline" in config["evaluations"]:
        return "baseline"
    plain = [name for name in config["evaluations"] if not uses_teacher(config, name)]
    return plain[0] if plain else next(iter(config["evaluations"]))


def selected_arch(config: dict, arch: str) -> bool:
    """Whether ``arch``'s students train at a selected value: a study with ``students.select`` whose
    ``students.train_by_arch.<arch>`` sets none of the selected keys (an explicit override wins)."""
    keys = select_keys(config)
    return bool(keys) and not set(keys) & set(train_by_arch(config).get(arch) or {})


def select_jobs(config: dict) -> list[dict[str, Any]]:
    """Every (dataset, method, ipc, arch) whose students train at a selected value."""
    cells = {(job["dataset"], job["method"], job["ipc"], job["arch"]): None for job in student_jobs(config)
             if selected_arch(config, job["arch"])}
    return [dict(zip(("dataset", "method", "ipc", "arch"), cell, strict=True)) for cell in cells]


def applied_select_keys(config: dict, evaluation: str, arch: str) -> list[str]:
    """The selected keys a student of ``evaluation`` takes from its choice: all of them, except
    those the evaluation's own ``train`` block sets (it wins, as it does over train_by_arch)."""
    if not selected_arch(config, arch):
        return []
    own = config["evaluations"][evaluation].get("train") or {}
    return [key for key in select_keys(config) if key not in own]


def uses_teacher(config: dict, evaluation: str) -> bool:
    """The evaluation has a teacher: ELF's terms (a loss mode other than task), logit distillation
    (``lambda_kd`` > 0) or relabelling (``relabel: teacher``)."""
    block = config["evaluations"][evaluation]
    return (block.get("loss_mode", "task") != "task" or (block.get("lambda_kd") or 0) > 0
            or block.get("relabel") == "teacher")


def uses_teacher_features(config: dict, evaluation: str) -> bool:
    """ELF's terms read the teacher's cached features (the published protocol)."""
    block = config["evaluations"][evaluation]
    return block.get("loss_mode", "task") != "task" and block.get("teacher_targets", "cached") == "cached"


def uses_teacher_checkpoint(config: dict, evaluation: str) -> bool:
    """The teacher network runs while the student trains: online ELF targets, KD logits or relabelling."""
    block = config["evaluations"][evaluation]
    online = block.get("loss_mode", "task") != "task" and block.get("teacher_targets", "cached") == "online"
    return online or (block.get("lambda_kd") or 0) > 0 or block.get("relabel") == "teacher"


def student_jobs(config: dict) -> list[dict[str, Any]]:
    """Every (dataset, method, ipc, arch, evaluation) the study trains, for the evaluations of
    ``students.evaluations`` (an evaluation whose teacher is the distillation model only for the
    methods that keep one)."""
    study = config["distillation"]
    return [{"dataset": d, "method": m, "ipc": i, "arch": a, "evaluation": e}
            for d in config["datasets"] for m in study["methods"] for i in study["ipc"]
            for a in config["students"]["archs"] for e in student_evaluations(config) if evaluation_applies(config, m, e, a)]


def student_evaluations(config: dict) -> list[str]:
    """The evaluations of the main study: ``students.evaluations`` (default: every evaluation)."""
    chosen = config["students"].get("evaluations")
    return list(config["evaluations"]) if chosen is None else list(chosen)


DISTILLATION_TEACHER = "distillation-expert"  # prefix of the teacher names of teacher: {source: distillation}


def is_teacher_pool(value: object) -> bool:
    """A teacher pool maps student architectures (and ``default``) to teachers, as the official
    evaluation pools pair each student with the teacher whose split matches it."""
    return isinstance(value, dict) and "source" not in value and "name" not in value


def teacher_value(config: dict, evaluation: str, arch: str | None) -> str | dict | None:
    """The evaluation's ``teacher`` for one student: a pool's entry for ``arch`` (else its
    ``default``), or the single teacher; None where the pool has neither."""
    value = config["evaluations"][evaluation].get("teacher")
    if is_teacher_pool(value):
        return value.get(arch, value.get("default")) if arch is not None else value.get("default")
    return value


def teacher_ref(value: str | dict | None) -> dict | None:
    """An evaluation's ``teacher`` as ``{"source": "teachers", "name": ...}`` or
    ``{"source": "distillation", "expert": k, "epoch": e | None}`` (a plain string names a teacher)."""
    if value is None:
        return None
    if isinstance(value, str):
        return {"source": "teachers", "name": value}
    if value.get("source", "teachers") == "distillation":
        return {"source": "distillation", "expert": value.get("expert", 0), "epoch": value.get("epoch")}
    return {"source": "teachers", "name": value.get("name")}


def _ref(config: dict, evaluation: str, arch: str | None) -> dict | None:
    return teacher_ref(teacher_value(config, evaluation, arch)) if uses_teacher(config, evaluation) else None


def teacher_name(config: dict, evaluation: str, arch: str | None = None) -> str | None:
    """The teacher of ``arch``'s student under ``evaluation``, by its name in result paths and rows:
    the teachers key, or for the distillation model ``distillation-expert<k>[-epoch<e>]``; None
    without a teacher."""
    ref = _ref(config, evaluation, arch)
    if ref is None or ref["source"] == "teachers":
        return ref and ref["name"]
    return f"{DISTILLATION_TEACHER}{ref['expert']}" + (f"-epoch{ref['epoch']}" if ref["epoch"] else "")


def evaluation_teachers(config: dict, evaluation: str) -> dict[str, str | None]:
    """Student architecture -> teacher name, for every architecture the study trains."""
    return {arch: teacher_name(config, evaluation, arch) for arch in student_archs(config)}


def used_teacher_names(config: dict) -> list[str]:
    """Every teacher name some student job uses (pool entries no student needs are not trained)."""
    names = {teacher_name(config, job["evaluation"], job["arch"]) for job in [*student_jobs(config), *study_jobs(config)]}
    return sorted(name for name in names if name)


def distillation_teachers(config: dict) -> list[str]:
    """Names of the distillation-model teachers the evaluations use."""
    names = [name for e in config["evaluations"] for name in evaluation_teachers(config, e).values()]
    return sorted({n for n in names if n and n.startswith(DISTILLATION_TEACHER)})


def evaluation_applies(config: dict, method: str, evaluation: str, arch: str | None = None) -> bool:
    """False where the evaluation's ``methods`` leave ``method`` out, or where its teacher is the
    distillation model and ``method`` keeps none."""
    methods = config["evaluations"][evaluation].get("methods")
    if methods is not None and method not in methods:
        return False
    ref = _ref(config, evaluation, arch)
    return ref is None or ref["source"] == "teachers" or uses_experts(method)


def uses_online_teacher(config: dict, evaluation: str) -> bool:
    """The evaluation computes ELF targets on the augmented batch (needs the checkpoint, not features)."""
    block = config["evaluations"][evaluation]
    return block.get("loss_mode", "task") != "task" and block.get("teacher_targets", "cached") == "online"


def student_archs(config: dict) -> list[str]:
    """Every architecture any student job may use (the ``arch`` wildcard's choices)."""
    return list(dict.fromkeys([*config["students"]["archs"], *study_archs(config)]))


def reference_config(config: dict) -> dict:
    """The ``reference`` block with the schema's defaults filled in."""
    return merged(defaults("reference"), config.get("reference"))


def full_train_config(config: dict) -> dict:
    """Training block of the full-real-data reference: the students' protocol, its ``train``
    overrides, and its own epochs."""
    full = reference_config(config)["full"]
    return merged(merged(config["students"]["train"], full.get("train")), {"epochs": full["epochs"]})


def reference_jobs(config: dict) -> list[dict[str, str]]:
    """Every (dataset, arch) trained on the full real training set, when references are enabled."""
    if not reference_config(config)["enabled"]:
        return []
    return [{"dataset": d, "arch": a} for d in config["datasets"] for a in config["students"]["archs"]]


def distill_arch(config: dict, method: str) -> str:
    """The architecture a method distils with: the same-arch reference of gap closed (convnet for
    ``random``, which has none: it is the architecture distilled sets are conventionally tested on)."""
    if uses_experts(method):
        return experts_config(config)["arch"]
    return (config["distillation"]["methods"][method] or {}).get("model", "convnet")


def import_files(config: dict, dataset: str, method: str, ipc: int) -> list[str]:
    """The files method ``import`` reads for one job (inputs of its distill job); none for other methods."""
    if method != "import":
        return []
    block = method_config(config, dataset, method, ipc)
    return [str(block[key]) for key in ("path", "labels_path", "lr_path") if block.get(key)]


# --------------------------------------------------------------------------- the --settings block of each stage


def data_settings(config: dict, dataset: str) -> dict:
    """data: the dataset block without its distillation overrides (and without val_seed
    unless a validation split is drawn, so that editing it alone reruns nothing)."""
    block = {k: v for k, v in config["datasets"][dataset].items() if k != "distillation"}
    if not block.get("val_size"):
        block.pop("val_seed", None)
    return parse_stage_settings("data", block)


def distill_settings(config: dict, dataset: str, method: str, ipc: int) -> dict:
    return parse_stage_settings("distill", {"method": method, "ipc": ipc, "seed": config["distillation"].get("seed", 0),
                                            "hyperparameters": method_config(config, dataset, method, ipc)})


def expert_settings(config: dict, index: int) -> dict:
    """experts: what training expert ``index`` depends on (not num_experts: adding experts
    leaves the existing ones untouched)."""
    block = {k: v for k, v in experts_config(config).items() if k != "num_experts"}
    return parse_stage_settings("experts", {**block, "index": index})


def teacher_settings(config: dict, teacher: str) -> dict:
    return parse_stage_settings("teachers", config["teachers"][teacher])


def student_settings(config: dict, evaluation: str, arch: str, identity: dict) -> dict:
    """students: the resolved block; with ``students.select``, also the keys the job takes from
    its choice file (which then decides their values, not the config)."""
    block = {"arch": arch, "evaluation": evaluation_config(config, evaluation, arch),
             "train": student_train_config(config, evaluation, arch), "seeds": list(config["students"]["seeds"]),
             "identity": identity}
    if keys := applied_select_keys(config, evaluation, arch):
        block["train"] = {key: value for key, value in block["train"].items() if key not in keys}
        block["select_keys"] = keys
    return parse_stage_settings("students", block)


def candidate_settings(config: dict, arch: str, candidate: str, identity: dict) -> dict:
    """students for one candidate of ``students.select``: the selection evaluation's resolved
    block with the candidate's values on top, trained with the select seeds."""
    values = {candidate_name(c): c for c in select_candidates(config)}[candidate]
    evaluation = select_evaluation(config)
    return parse_stage_settings("students", {
        "arch": arch, "evaluation": evaluation_config(config, evaluation, arch),
        "train": merged(student_train_config(config, evaluation, arch), values),
        "seeds": list(select_config(config)["seeds"]),
        "identity": {**identity, "evaluation": evaluation, "teacher": None, "candidate": candidate}})


def selection_settings(config: dict, identity: dict) -> dict:
    """select: the candidates (in config order) and the cell they are chosen for."""
    return parse_stage_settings("select", {
        "candidates": select_candidates(config), "seeds": list(select_config(config)["seeds"]),
        "evaluation": select_evaluation(config), "identity": identity})


def full_settings(config: dict, dataset: str, arch: str) -> dict:
    full = reference_config(config)["full"]
    return parse_stage_settings("reference", {
        "arch": arch, "train": full_train_config(config), "seeds": list(full["seeds"]),
        "train_limit": full["train_limit"], "identity": {"dataset": dataset}})


"""Config checks beyond the JSON schema, and resolvers from the config to per-job blocks.

This module imports no torch: the Snakefile calls it while parsing, before any job starts.
Every error is one line that names the config key.
"""

from __future__ import annotations

import ast
import copy
import math
from pathlib import Path
from typing import Any

from elf_pipeline.datasets.catalog import (
    DOWNLOADABLE,
    IMAGENET_SOURCES,
    IMAGENET_SUBSETS,
    PUBLISHED_STATS,
    ROOT_LAYOUT,
    SPLIT_BY_FRACTION,
)
from elf_pipeline.errors import ConfigError
from elf_pipeline.models.registry import is_known, layer_names

# Kept in sync with the stage modules (tests assert it).
METHODS = ("random", "dm", "dc", "dsa", "mtt", "import")
EXPERT_METHODS = ("mtt",)  # methods that match expert trajectories (train_experts)
# The experts block keys that decide which files exist; its training defaults live in distill/experts.py.
EXPERT_DEFAULTS = {"arch": "convnet", "num_experts": 100}
LOSS_MODES = ("front_rear_task", "front_task", "rear_task", "front_rear", "task")
TEACHER_TARGETS = ("cached", "online")  # elf.TEACHER_TARGETS
FEATURE_LOSSES = ("ce", "ce_softmax", "l2", "l1", "cos", "cos_batch")
DATA_SOURCES = ("fashion_mnist", "digits", "mnist", "cifar10", "cifar100", "svhn", "tiny_imagenet", "imagenet", "image_folder",
                *IMAGENET_SUBSETS)
IMPORT_NORMALIZATIONS = ("dataset", "published", "unit", "uint8")  # distill/imported.py NORMALIZATIONS




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
    """The top-level ``experts`` block with ``arch`` and ``num_experts`` filled in."""
    return {**EXPERT_DEFAULTS, **(config.get("experts") or {})}


def expert_train_config(config: dict) -> dict:
    """What training one expert depends on: the experts block without ``arch`` (part of the path)
    and ``num_experts`` (so adding experts leaves the existing ones untouched)."""
    return {k: v for k, v in experts_config(config).items() if k not in EXPERT_DEFAULTS}


def uses_experts(method: str) -> bool:
    return method in EXPERT_METHODS


def evaluation_config(config: dict, name: str, arch: str | None = None) -> dict:
    """The student-loss part of an evaluation (everything but its ``train`` override and ``methods``), with a
    teacher pool resolved to ``arch``'s teacher (so editing one pool entry reruns only its students)."""
    block = {k: v for k, v in config["evaluations"][name].items() if k not in ("train", "methods")}
    if is_teacher_pool(block.get("teacher")):
        block["teacher"] = teacher_value(config, name, arch)
    return block


def student_train_config(config: dict, evaluation: str) -> dict:
    return merged(config["students"]["train"], config["evaluations"][evaluation].get("train"))


def uses_teacher(config: dict, evaluation: str) -> bool:
    return config["evaluations"][evaluation].get("loss_mode", "task") != "task"


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
    """The evaluation computes teacher targets on the augmented batch (needs the checkpoint, not features)."""
    return uses_teacher(config, evaluation) and config["evaluations"][evaluation].get("teacher_targets", "cached") == "online"


STUDY_PARTS = ("similarity", "norm", "ablation")


def _gap_archs(studies: dict) -> list[str]:
    """The architectures of the similarity and norm parts, reference first (none without those parts)."""
    if not (studies.get("similarity") or studies.get("norm")):
        return []
    names = [studies.get("reference", "convnet"), *((studies.get("similarity") or {}).get("archs") or [])]
    for own, instance in ((studies.get("norm") or {}).get("pairs") or {}).items():
        names += [own, instance]
    return list(dict.fromkeys(names))


def study_archs(config: dict) -> list[str]:
    """Architectures the optional ``studies`` block trains (reference first, then the similarity,
    norm and ablation architectures, each once, in config order)."""
    studies = config.get("studies")
    if not studies:
        return []
    names = [studies.get("reference", "convnet"), *_gap_archs(studies), *((studies.get("ablation") or {}).get("archs") or [])]
    return list(dict.fromkeys(names))


def study_jobs(config: dict) -> list[dict[str, Any]]:
    """The student jobs of the ``studies`` block on its one synthetic set: the similarity and norm
    archs x ``studies.evaluations``, and the ablation archs x ``studies.ablation.evaluations``
    (each job once)."""
    studies = config.get("studies")
    if not studies:
        return []
    ablation = studies.get("ablation") or {}
    pairs = [(a, e) for a in _gap_archs(studies) for e in studies.get("evaluations", ["baseline"])]
    pairs += [(a, e) for a in ablation.get("archs") or [] for e in ablation.get("evaluations") or []]
    return [{"dataset": studies["dataset"], "method": studies["method"], "ipc": studies["ipc"], "arch": a, "evaluation": e}
            for a, e in dict.fromkeys(pairs)]


def student_archs(config: dict) -> list[str]:
    """Every architecture any student job may use (the ``arch`` wildcard's choices)."""
    return list(dict.fromkeys([*config["students"]["archs"], *study_archs(config)]))


def _check_distillation_teacher(config: dict, name: str, ref: dict) -> None:
    keeping = [m for m in config["distillation"]["methods"] if uses_experts(m)]
    if not keeping:
        _fail(f"evaluations.{name}.teacher", "source distillation uses the distillation model of the synthetic set's "
              f"method, and only {', '.join(EXPERT_METHODS)} keeps one (its experts); configured methods: "
              f"{', '.join(config['distillation']['methods'])}")
    experts = experts_config(config)["num_experts"]
    if not 0 <= ref["expert"] < experts:
        _fail(f"evaluations.{name}.teacher.expert", f"{ref['expert']} is not one of the {experts} experts (0..{experts - 1})")


def _check_study_evaluations(config: dict, key: str, names: list[str], archs: list[str]) -> None:
    """Known evaluations that apply to the study's method, whose student layer every arch has."""
    method = config["studies"]["method"]
    for index, name in enumerate(names):
        if name not in config["evaluations"]:
            _fail(f"{key}[{index}]", f"unknown evaluation {name!r} (configured: {', '.join(config['evaluations'])})")
        if not all(evaluation_applies(config, method, name, arch) for arch in archs):
            _fail(f"{key}[{index}]", f"evaluation {name!r} does not apply to method {method!r} (its methods, or a "
                                     f"distillation-model teacher the method does not keep)")
        split = config["evaluations"][name].get("student_layer")
        for arch in archs:
            known = layer_names(arch)
            if split is not None and known is not None and split not in known:
                _fail(f"evaluations.{name}.student_layer",
                      f"study architecture {arch!r} has no layer {split!r} (layers: {', '.join(known)})")


def _check_studies(config: dict) -> None:
    studies = config.get("studies")
    if not studies:
        return
    for key, known in (("dataset", config["datasets"]), ("method", config["distillation"]["methods"])):
        if studies[key] not in known:
            _fail(f"studies.{key}", f"unknown {key} {studies[key]!r} (configured: {', '.join(known)})")
    if not any(studies.get(part) for part in STUDY_PARTS):
        _fail("studies", f"configures no part of the study (give at least one of {', '.join(STUDY_PARTS)})")
    _check_arch("studies.reference", studies.get("reference", "convnet"))
    for index, arch in enumerate((studies.get("similarity") or {}).get("archs") or []):
        _check_arch(f"studies.similarity.archs[{index}]", arch)
    for own, instance in ((studies.get("norm") or {}).get("pairs") or {}).items():
        _check_arch(f"studies.norm.pairs.{own}", own)
        _check_arch(f"studies.norm.pairs.{own}", instance)
    ablation = studies.get("ablation") or {}
    for index, arch in enumerate(ablation.get("archs") or []):
        _check_arch(f"studies.ablation.archs[{index}]", arch)
    _check_study_evaluations(config, "studies.evaluations", studies.get("evaluations", ["baseline"]), _gap_archs(studies))
    _check_study_evaluations(config, "studies.ablation.evaluations", ablation.get("evaluations") or [],
                             ablation.get("archs") or [])


def _check_student_evaluations(config: dict) -> None:
    """``students.evaluations`` names evaluations of the config."""
    for index, name in enumerate(config["students"].get("evaluations") or []):
        if name not in config["evaluations"]:
            _fail(f"students.evaluations[{index}]",
                  f"unknown evaluation {name!r} (configured: {', '.join(config['evaluations'])})")


# The optional `reference` block (report reference rows); the schema documents the same defaults.
REFERENCE_DEFAULTS = {"enabled": True, "full": {"epochs": 30, "train_limit": None, "seeds": [0]}}


def reference_config(config: dict) -> dict:
    """The ``reference`` block with its defaults filled in."""
    return merged(REFERENCE_DEFAULTS, config.get("reference"))


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


def _fail(key: str, problem: str) -> None:
    raise ConfigError(f"config key {key}: {problem}")


def _check_arch(key: str, name: str) -> None:
    if not is_known(name):
        _fail(key, f"unknown architecture {name!r} (e.g. convnet, convnet-bn, convnet-w512, resnet18, resnet18-bn, "
                   "vgg11, vgg11-bn, alexnet, alexnet-bn)")


def _check_dataset(name: str, block: dict) -> None:
    """Options that only some sources take; a root for every source that reads files."""
    source, key = block["source"], f"datasets.{name}"
    if block.get("root") is None and source != "digits":
        _fail(f"{key}.root", f"required for source {source} (a folder holding {ROOT_LAYOUT[source]})")
    if block.get("download") and source not in DOWNLOADABLE:
        _fail(f"{key}.download", f"{source} cannot be downloaded (only {', '.join(DOWNLOADABLE)}); "
                                 f"put {ROOT_LAYOUT[source]} into the root")
    for option in ("test_fraction", "split_seed"):
        if block.get(option) is not None and source not in SPLIT_BY_FRACTION:
            _fail(f"{key}.{option}", f"{source} has its own test split (only {', '.join(SPLIT_BY_FRACTION)} draw one)")
    if block.get("subset") is not None:
        if source not in IMAGENET_SOURCES:
            _fail(f"{key}.subset", f"only ImageNet sources take a subset ({', '.join(IMAGENET_SOURCES)})")
        if isinstance(block["subset"], str) and block["subset"] not in IMAGENET_SUBSETS:
            _fail(f"{key}.subset", f"unknown subset {block['subset']!r} (named: {', '.join(IMAGENET_SUBSETS)}, "
                                   "or a list of WordNet ids)")
    if block.get("channels") is not None and source != "image_folder":
        _fail(f"{key}.channels", "only image_folder takes channels (the other sources have a fixed channel count)")
    if source in IMAGENET_SOURCES and block.get("resize", "pad") == "pad":
        _fail(f"{key}.resize", "ImageNet images are larger than any image_size; use resize: interpolate "
                               "(shorter side scaled, centre crop)")


def _check_import(config: dict) -> None:
    """Method import needs a file and its declared normalisation for every dataset and IPC."""
    for dataset, data_block in config["datasets"].items():
        for ipc in config["distillation"]["ipc"]:
            block = method_config(config, dataset, "import", ipc)
            where = (f"(dataset {dataset}, IPC {ipc}; per IPC under by_ipc.{ipc}, "
                     f"per dataset under datasets.{dataset}.distillation)")
            if not block.get("path"):
                _fail("distillation.methods.import.path", f"required: the file of the imported synthetic set {where}")
            normalization = block.get("normalization")
            if normalization not in IMPORT_NORMALIZATIONS:
                _fail("distillation.methods.import.normalization",
                      f"required: the pixel space of the file, one of {', '.join(IMPORT_NORMALIZATIONS)} {where}")
            if normalization == "published" and data_block["source"] not in PUBLISHED_STATS:
                _fail("distillation.methods.import.normalization",
                      f"no published statistics for source {data_block['source']}; declare dataset, unit or uint8")


def import_files(config: dict, dataset: str, method: str, ipc: int) -> list[str]:
    """The files method ``import`` reads for one job (inputs of its distill job); none for other methods."""
    if method != "import":
        return []
    block = method_config(config, dataset, method, ipc)
    return [str(block[key]) for key in ("path", "labels_path") if block.get(key)]


def _check_schedule(key: str, train: dict) -> None:
    """A step decay must fall inside the run: a lr_decay_at whose decay epoch is past the last
    epoch silently trains at one lr (e.g. 0.67 of 3 epochs)."""
    if train.get("schedule", "step") != "step" or not train.get("lr_decay_at") or train.get("lr_decay", 0.1) == 1:
        return
    epochs, at = train["epochs"], train["lr_decay_at"]
    decay = math.ceil(epochs * at)
    if decay >= epochs:
        highest = math.floor((epochs - 1) / epochs * 100) / 100
        _fail(f"{key}.lr_decay_at", f"{at} of {epochs} epochs decays the lr after the last epoch, i.e. never "
                                     f"(choose at most {highest:g}, 0 for no decay, or more epochs)")


def _check_evaluation_teachers(config: dict, name: str, block: dict) -> None:
    """Every student the evaluation trains has a known teacher (a pool entry or its default), and
    the teacher layer exists in each of them."""
    key = f"evaluations.{name}.teacher"
    value = block.get("teacher")
    if value is None:
        _fail(key, f"loss_mode {block['loss_mode']!r} needs a teacher "
                   f"(one of: {', '.join(config['teachers']) or 'none configured'})")
    if is_teacher_pool(value):
        if not value:
            _fail(key, "an empty teacher pool (map student architectures, or default, to teachers)")
        for arch in value:
            if arch != "default":
                _check_arch(f"{key}.{arch}", arch)
    for arch in student_archs(config):
        entry = teacher_value(config, name, arch)
        where = f"{key}.{arch}" if is_teacher_pool(value) and arch in value else key
        if entry is None:
            _fail(key, f"no teacher for student {arch!r} (add {arch}: <teacher> or default: <teacher> to the pool)")
        teacher = teacher_ref(entry)
        if teacher["source"] == "distillation":
            _check_distillation_teacher(config, name, teacher)
            teacher_arch = experts_config(config)["arch"]
        elif teacher["name"] not in config["teachers"]:
            _fail(where, f"unknown teacher {teacher['name']!r} (configured: {', '.join(config['teachers'])})")
        else:
            teacher_arch = config["teachers"][teacher["name"]]["arch"]
        layer = block.get("teacher_layer")
        known = layer_names(teacher_arch)
        if layer is not None and known is not None and layer not in known:
            _fail(f"evaluations.{name}.teacher_layer",
                  f"teacher {teacher_name(config, name, arch)!r} has no layer {layer!r} (layers: {', '.join(known)})")


# method -> (distill module, function) whose keyword parameters are the method's hyperparameters
METHOD_FUNCTIONS = {"random": ("random_subset", "distill_random"), "dm": ("dm", "distill_dm"), "dc": ("dc", "distill_dc"),
                    "dsa": ("dc", "distill_dc"), "mtt": ("mtt", "distill_mtt"), "import": ("imported", "import_synset")}
_SUPPLIED = {"images", "labels", "num_classes", "ipc", "seed", "device", "resume", "experts", "data"}


def method_keys(method: str) -> set[str]:
    """The keys a method block may set, read (torch-free, with ``ast``) from the keyword parameters of
    the function that implements it: the one place they are written."""
    module, function = METHOD_FUNCTIONS[method]
    path = Path(__file__).parent / "distill" / f"{module}.py"
    node = next(n for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef) and n.name == function)
    names = {a.arg for a in [*node.args.args, *node.args.kwonlyargs]}
    return names - _SUPPLIED


def _check_method_keys(config: dict, method: str, block: dict | None) -> None:
    allowed = method_keys(method)
    entries = [(f"distillation.methods.{method}", {k: v for k, v in (block or {}).items() if k != "by_ipc"})]
    entries += [(f"distillation.methods.{method}.by_ipc.{ipc}", override or {})
                for ipc, override in ((block or {}).get("by_ipc") or {}).items()]
    entries += [(f"datasets.{name}.distillation.{method}", (data.get("distillation") or {}).get(method) or {})
                for name, data in config["datasets"].items()]
    for where, keys in entries:
        for key in keys:
            if key not in allowed:
                _fail(f"{where}.{key}", f"method {method} takes no {key} (its keys: {', '.join(sorted(allowed)) or 'none'})")


def check_config(config: dict) -> None:
    """Semantic checks the schema cannot express; raises ConfigError naming the key."""
    for name, block in config["datasets"].items():
        if block["source"] not in DATA_SOURCES:
            _fail(f"datasets.{name}.source", f"unknown dataset {block['source']!r} (allowed: {', '.join(DATA_SOURCES)})")
        _check_dataset(name, block)
    for method, block in config["distillation"]["methods"].items():
        if method not in METHODS:
            _fail(f"distillation.methods.{method}", f"unknown method (allowed: {', '.join(METHODS)})")
        if block and "model" in block:
            _check_arch(f"distillation.methods.{method}.model", block["model"])
        _check_method_keys(config, method, block)
        if method == "dc" and block and "dsa" in block:
            _fail("distillation.methods.dc.dsa", "DC does not augment; DC with augmentation is method dsa")
        if method == "dsa" and block and block.get("dsa") is False:
            _fail("distillation.methods.dsa.dsa", "DSA without augmentation is method dc")
    if "import" in config["distillation"]["methods"]:
        _check_import(config)
    if any(uses_experts(method) for method in config["distillation"]["methods"]):
        _check_arch("experts.arch", experts_config(config)["arch"])
    ipcs = config["distillation"]["ipc"]
    if len(set(ipcs)) != len(ipcs):
        _fail("distillation.ipc", f"values must be unique, got {ipcs}")
    for name, block in config["teachers"].items():
        if name.startswith(DISTILLATION_TEACHER):
            _fail(f"teachers.{name}", f"names starting with {DISTILLATION_TEACHER!r} are reserved for teacher: "
                                      "{source: distillation}")
        _check_arch(f"teachers.{name}.arch", block["arch"])
        epochs = block["train"]["epochs"]
        checkpoint = block.get("checkpoint_epoch")
        if checkpoint is not None and not 1 <= checkpoint <= epochs:
            _fail(f"teachers.{name}.checkpoint_epoch", f"{checkpoint} must lie in 1..train.epochs ({epochs})")
        for key in ("vectorize_seeds", "cuda_graphs"):
            if key in block["train"]:
                _fail(f"teachers.{name}.train.{key}", "applies to student training only (students.train)")
        _check_schedule(f"teachers.{name}.train", block["train"])
    for index, arch in enumerate(config["students"]["archs"]):
        _check_arch(f"students.archs[{index}]", arch)
    seeds = config["students"]["seeds"]
    if len(set(seeds)) != len(seeds):
        _fail("students.seeds", f"seeds must be unique, got {seeds}")
    reference_seeds = reference_config(config)["full"]["seeds"]
    if len(set(reference_seeds)) != len(reference_seeds):
        _fail("reference.full.seeds", f"seeds must be unique, got {reference_seeds}")
    if "epochs" in (reference_config(config)["full"].get("train") or {}):
        _fail("reference.full.train.epochs", "set reference.full.epochs instead")
    _check_schedule("students.train", config["students"]["train"])
    if reference_config(config)["enabled"]:
        _check_schedule("reference.full", full_train_config(config))
    for name, block in config["evaluations"].items():
        for index, method in enumerate(block.get("methods") or []):
            if method not in config["distillation"]["methods"]:
                _fail(f"evaluations.{name}.methods[{index}]", f"unknown method {method!r} "
                                                              f"(configured: {', '.join(config['distillation']['methods'])})")
        if block.get("train"):
            _check_schedule(f"evaluations.{name}.train", student_train_config(config, name))
        if uses_teacher(config, name):
            _check_evaluation_teachers(config, name, block)
        for key in ("adapter",):
            if key in block and not uses_teacher(config, name):
                _fail(f"evaluations.{name}.{key}", "applies to evaluations with a teacher (loss_mode task has none)")
        if block.get("teacher_targets", "cached") == "online" and not uses_teacher(config, name):
            _fail(f"evaluations.{name}.teacher_targets", "online teacher targets need a teacher (loss_mode task has none)")
        split = block.get("student_layer")
        if split is not None:
            for arch in config["students"]["archs"]:
                known = layer_names(arch)
                if known is not None and split not in known:
                    _fail(f"evaluations.{name}.student_layer",
                          f"student {arch!r} has no layer {split!r} (layers: {', '.join(known)})")
    _check_student_evaluations(config)
    _check_studies(config)


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

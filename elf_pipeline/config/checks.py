"""The config checks the JSON schema cannot express, one function per section.

Torch-free (the Snakefile runs them while parsing); ``check_config`` is the entry point.
Every error is one line that names the config key.
"""

from __future__ import annotations

import math
import sys

from elf_pipeline.config import (
    DATA_SOURCES,
    DISTILLATION_TEACHER,
    STUDY_PARTS,
    evaluation_applies,
    experts_config,
    full_train_config,
    gap_archs,
    is_teacher_pool,
    method_config,
    reference_config,
    select_candidates,
    select_config,
    select_evaluation,
    select_keys,
    student_archs,
    student_train_config,
    teacher_name,
    teacher_ref,
    teacher_value,
    train_by_arch,
    uses_experts,
    uses_teacher,
)
from elf_pipeline.config.adapters import adapter_pairs, adapter_warnings  # noqa: F401 (adapter_pairs: the checks' API)
from elf_pipeline.config.methods import method_keys
from elf_pipeline.config.vocab import EXPERT_METHODS, IMPORT_NORMALIZATIONS, METHODS
from elf_pipeline.datasets.catalog import (
    DOWNLOADABLE,
    IMAGENET_SOURCES,
    IMAGENET_SUBSETS,
    ROOT_LAYOUT,
    SOURCE_CHANNELS,
    SPLIT_BY_FRACTION,
    release_stats,
)
from elf_pipeline.infra.errors import ConfigError
from elf_pipeline.models.registry import is_known, layer_names


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
    by_arch = train_by_arch(config)
    for own, instance in ((studies.get("norm") or {}).get("pairs") or {}).items():
        _check_arch(f"studies.norm.pairs.{own}", own)
        _check_arch(f"studies.norm.pairs.{own}", instance)
        if by_arch.get(own) != by_arch.get(instance):
            _fail(f"studies.norm.pairs.{own}", f"{own} and {instance} train with different students.train_by_arch "
                                               "blocks: the pair would measure those settings with the normalisation")
    ablation = studies.get("ablation") or {}
    for index, arch in enumerate(ablation.get("archs") or []):
        _check_arch(f"studies.ablation.archs[{index}]", arch)
    _check_study_evaluations(config, "studies.evaluations", studies.get("evaluations", ["baseline"]), gap_archs(studies))
    _check_study_evaluations(config, "studies.ablation.evaluations", ablation.get("evaluations") or [],
                             ablation.get("archs") or [])


def _check_student_evaluations(config: dict) -> None:
    """``students.evaluations`` names evaluations of the config."""
    for index, name in enumerate(config["students"].get("evaluations") or []):
        if name not in config["evaluations"]:
            _fail(f"students.evaluations[{index}]",
                  f"unknown evaluation {name!r} (configured: {', '.join(config['evaluations'])})")


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
            if normalization not in IMPORT_NORMALIZATIONS and not isinstance(normalization, dict):
                _fail("distillation.methods.import.normalization",
                      f"required: the pixel space of the file, one of {', '.join(IMPORT_NORMALIZATIONS)}, "
                      f"{{published: <code>}} or {{mean, std}} {where}")
            _check_release_normalization(data_block, normalization, where)


def _check_schedule(key: str, train: dict, where: str = "") -> None:
    """A step decay must fall inside the run: a lr_decay_at whose decay epoch is past the last
    epoch silently trains at one lr (e.g. 0.67 of 3 epochs)."""
    if train.get("schedule", "step") != "step" or not train.get("lr_decay_at") or train.get("lr_decay", 0.1) == 1:
        return
    epochs, at = train["epochs"], train["lr_decay_at"]
    decay = math.ceil(epochs * at)
    if decay >= epochs:
        highest = math.floor((epochs - 1) / epochs * 100) / 100
        suffix = f"; {where}" if where else ""
        _fail(f"{key}.lr_decay_at", f"{at} of {epochs} epochs decays the lr after the last epoch, i.e. never "
                                     f"(choose at most {highest:g}, 0 for no decay, or more epochs){suffix}")


def _check_evaluation_teachers(config: dict, name: str, block: dict) -> None:
    """Every student the evaluation trains has a known teacher (a pool entry or its default), and
    the teacher layer exists in each of them."""
    key = f"evaluations.{name}.teacher"
    value = block.get("teacher")
    if value is None:
        mode = block.get("loss_mode", "task")
        why = (f"loss_mode {mode!r}" if mode != "task" else "lambda_kd > 0" if (block.get("lambda_kd") or 0) > 0
               else "relabel: teacher")
        _fail(key, f"{why} needs a teacher "
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



def _check_datasets(config: dict) -> None:
    for name, block in config["datasets"].items():
        if block["source"] not in DATA_SOURCES:
            _fail(f"datasets.{name}.source", f"unknown dataset {block['source']!r} (allowed: {', '.join(DATA_SOURCES)})")
        _check_dataset(name, block)


def _check_methods(config: dict) -> None:
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


def _check_teachers(config: dict) -> None:
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


def _check_students(config: dict) -> None:
    for index, arch in enumerate(config["students"]["archs"]):
        _check_arch(f"students.archs[{index}]", arch)
    seeds = config["students"]["seeds"]
    if len(set(seeds)) != len(seeds):
        _fail("students.seeds", f"seeds must be unique, got {seeds}")
    _check_schedule("students.train", config["students"]["train"])
    archs = student_archs(config)
    for arch in train_by_arch(config):
        if arch not in archs:
            _fail(f"students.train_by_arch.{arch}", f"not a student architecture of this study ({', '.join(archs)})")
        _check_schedule(f"students.train_by_arch.{arch}", student_train_config(config, None, arch))
    _check_student_evaluations(config)
    _check_select(config)


def _check_select(config: dict) -> None:
    """``students.select`` chooses on validation accuracy: every dataset needs a validation split (the
    test set is never a fallback); candidates train under a plain evaluation (the baseline)."""
    block = config["students"].get("select")
    if block and select_config(config) is None:
        _fail("students.select", "names no candidates (give a list of lr, momentum, weight_decay or epochs)")
    if select_config(config) is None:
        return
    for name, data in config["datasets"].items():
        if not data.get("val_size"):
            _fail("students.select", f"chooses on validation accuracy, but datasets.{name} has no validation split "
                                     "(set datasets.<name>.val_size; choices are never made on the test set)")
    evaluation = select_evaluation(config)
    if evaluation not in config["evaluations"]:
        _fail("students.select.evaluation", f"unknown evaluation {evaluation!r} (configured: {', '.join(config['evaluations'])})")
    if uses_teacher(config, evaluation):
        _fail("students.select.evaluation", f"{evaluation!r} uses a teacher: candidates train the baseline, a plain "
                                            "evaluation (loss_mode task), so ELF is never tuned apart from it")
    own = config["evaluations"][evaluation].get("train") or {}
    for key in select_keys(config):
        if key in own:
            _fail(f"students.select.{key}", f"evaluations.{evaluation}.train sets {key} itself, so the baseline "
                                            "could not train at the chosen value")
    for arch in student_archs(config):
        for candidate in select_candidates(config):
            train = {**student_train_config(config, evaluation, arch), **candidate}
            _check_schedule("students.select", train, f"for {arch} at candidate {candidate}")


def select_notes(config: dict) -> list[str]:
    """One line per architecture whose explicit ``students.train_by_arch`` override of a selected key
    leaves it unselected (the override wins)."""
    keys = set(select_keys(config))
    return [f"students.train_by_arch.{arch} sets {', '.join(sorted(keys & set(block or {})))}: {arch} trains at "
            "that explicit value and is not selected (students.select)"
            for arch, block in train_by_arch(config).items() if keys & set(block or {})]


def _check_reference(config: dict) -> None:
    reference = reference_config(config)
    seeds = reference["full"]["seeds"]
    if len(set(seeds)) != len(seeds):
        _fail("reference.full.seeds", f"seeds must be unique, got {seeds}")
    if "epochs" in (reference["full"].get("train") or {}):
        _fail("reference.full.train.epochs", "set reference.full.epochs instead")
    if reference["enabled"]:
        _check_schedule("reference.full", full_train_config(config))


def _check_evaluation(config: dict, name: str, block: dict) -> None:
    for index, method in enumerate(block.get("methods") or []):
        if method not in config["distillation"]["methods"]:
            _fail(f"evaluations.{name}.methods[{index}]",
                  f"unknown method {method!r} (configured: {', '.join(config['distillation']['methods'])})")
    if block.get("train"):
        by_arch = train_by_arch(config)
        for arch in student_archs(config):
            _check_schedule(f"evaluations.{name}.train", student_train_config(config, name, arch),
                            f"for {arch}, with students.train_by_arch.{arch}" if arch in by_arch else "")
    if uses_teacher(config, name):
        _check_evaluation_teachers(config, name, block)
    elif "adapter" in block:
        _fail(f"evaluations.{name}.adapter", "applies to evaluations with a teacher (loss_mode task has none)")
    elif block.get("teacher_targets", "cached") == "online":
        _fail(f"evaluations.{name}.teacher_targets", "online teacher targets need a teacher (loss_mode task has none)")
    if "kd_temperature" in block and not (block.get("lambda_kd") or 0) > 0:
        _fail(f"evaluations.{name}.kd_temperature", "applies only with lambda_kd > 0 (logit distillation)")
    split = block.get("student_layer")
    for arch in config["students"]["archs"] if split is not None else ():
        known = layer_names(arch)
        if known is not None and split not in known:
            _fail(f"evaluations.{name}.student_layer", f"student {arch!r} has no layer {split!r} (layers: {', '.join(known)})")


def check_config(config: dict) -> None:
    """Semantic checks the schema cannot express, section by section; raises ConfigError naming the key.
    Then names, on stderr, every student that will train through a feature adapter it was not given
    explicitly (``adapter_warnings``)."""
    _check_datasets(config)
    _check_methods(config)
    _check_teachers(config)
    _check_students(config)
    _check_reference(config)
    for name, block in config["evaluations"].items():
        _check_evaluation(config, name, block)
    _check_studies(config)
    for line in adapter_warnings(config):
        print(f"warning: {line}", file=sys.stderr)
    for line in select_notes(config):
        print(f"note: {line}", file=sys.stderr)


# --------------------------------------------------------------------------- imported sets: the releasing code's constants


def _check_release_normalization(data_block: dict, normalization: object, where: str) -> None:
    """``published`` / ``{published: <code>}`` / ``{mean, std}`` resolve to constants for the
    dataset's source: a bare ``published`` where the releasing codes disagree (CIFAR-100) names the
    choices."""
    source = data_block["source"]
    if isinstance(normalization, dict) and "mean" in normalization and source == "image_folder":
        channels = data_block.get("channels") or SOURCE_CHANNELS["image_folder"]
        if len(normalization["mean"]) != channels:
            _fail("distillation.methods.import.normalization.mean",
                  f"{len(normalization['mean'])} values but the image_folder data has {channels} channel(s) {where}")
    try:
        release_stats(source, normalization)
    except ValueError as err:
        _fail("distillation.methods.import.normalization", f"{err} {where}")

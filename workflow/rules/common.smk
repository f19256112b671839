import json
import os
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import DeploymentMethod
from snakemake.utils import validate

REPO = Path(workflow.basedir).parent.parent if Path(workflow.basedir).name == "rules" else Path(workflow.basedir)
sys.path.insert(0, str(REPO))

from elf_pipeline import config as elf_config  # noqa: E402  (torch-free)
from elf_pipeline.config import checks as config_checks  # noqa: E402  (torch-free)
from elf_pipeline.config import methods as distill_methods  # noqa: E402  (torch-free)
from elf_pipeline.config import files as config_file  # noqa: E402  (torch-free)
from elf_pipeline.config.sources import command_sources  # noqa: E402  (torch-free)

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
try:
    config_file.check_files(workflow.overwrite_configfiles or [])  # a key given twice, an empty file
    elf_config.validate_schema(config, str(SCHEMA))
    validate(config, schema=str(SCHEMA))  # fills schema defaults
    config_checks.check_config(config)
except elf_config.ConfigError as error:
    raise WorkflowError(f"invalid configuration: {error}") from None

# Every output of a study lies under results_dir (default results/): studies with different configs
# kept side by side each have their own folder and report.
RESULTS = config.get("results_dir", "results")
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
DEVICE = config.get("device", "auto")
# How every job that runs a network runs it (the device, the precision; training jobs also whether their
# step is compiled): one params entry, so changing any of them reruns those jobs.
RUN_ARGS = f"--device {DEVICE} --precision {config.get('precision', 'auto')}"
TRAIN_RUN_ARGS = f"{RUN_ARGS} --compile {str(config.get('compile', 'auto')).lower()}"
THREADS = config.get("threads", 1)
# GPU jobs request one GPU (scheduler resource `gpu`) unless the study is pinned to the CPU.
GPU_PER_JOB = 0 if DEVICE == "cpu" else 1
# Under --use-conda/--sdm conda each rule's environment provides `python`; otherwise jobs use the
# interpreter that runs Snakemake (e.g. the project's virtualenv), activated or not.
USES_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method


def local_path(path):
    """``path`` relative to the working directory when it lies in the repository (a project's own
    virtualenv, the package): commands and inputs then survive moving the whole study."""
    path = Path(path).absolute()
    return os.path.relpath(path) if path.is_relative_to(REPO.absolute()) else str(path)


INTERPRETER = "python" if USES_CONDA else local_path(sys.executable)
PYTHON = f"PYTHONPATH={local_path(REPO)}${{{{PYTHONPATH:+:$PYTHONPATH}}}} {INTERPRETER} -m elf_pipeline --threads {{threads}}"
ENV = str(REPO / "workflow" / "envs" / "elf.yaml")


def _choices(names):
    return "|".join(re.escape(str(name)) for name in names)


wildcard_constraints:
    dataset=_choices(config["datasets"]),
    method=_choices(config["distillation"]["methods"]),
    ipc=_choices(sorted({*config["distillation"]["ipc"], *[(config.get("studies") or {}).get("ipc")]} - {None})),
    teacher=_choices([*config["teachers"], *elf_config.distillation_teachers(config)]) or "(?!)",
    arch=_choices(elf_config.student_archs(config)),
    evaluation=_choices(config["evaluations"]),
    candidate=_choices(elf_config.candidate_name(c) for c in elf_config.select_candidates(config)) or "(?!)",


def stage_sources(command, exclude=()):
    """The package files a rule's command runs (elf_pipeline/config/sources.py derives them from the imports),
    listed as inputs so that editing one reruns exactly the jobs that run it; relative to the working
    directory, so a finished study moved elsewhere with its results/ and .snakemake/ stays done."""
    return [local_path(path) for path in command_sources(REPO / "elf_pipeline", command, exclude)]


# Optional Parquet tables appended to summary.md/summary.html (e.g. empirical-study targets): rules
# included after this file append their output paths here; see report.extra_tables.
EXTRA_REPORT_TABLES = []


def as_json(block):
    return json.dumps(block, sort_keys=True)


# --------------------------------------------------------------------------- students.smk and select.smk


def select_identity(wildcards):
    """The cell a choice is made for (dataset, method, IPC, architecture)."""
    return {"dataset": wildcards.dataset, "method": wildcards.method, "ipc": int(wildcards.ipc), "arch": wildcards.arch}


def select_folder(job):
    return f"{RESULTS}/{job['dataset']}/select/{job['method']}/ipc{job['ipc']}/{job['arch']}"


# --------------------------------------------------------------------------- distill.smk


def distill_sources(wildcards):
    """The distill stage's files without the other methods' modules: a job depends on its own method's
    module only (config/methods.py registers which module implements each method)."""
    others = distill_methods.other_method_modules(wildcards.method)
    return stage_sources("distill", exclude=others)


def expert_files(dataset):
    """Every expert trajectory file of the configured experts block (one job each)."""
    experts = elf_config.experts_config(config)
    return [f"{RESULTS}/{dataset}/experts/{experts['arch']}/expert_{k}.h5" for k in range(experts["num_experts"])]


def distill_experts(wildcards):
    """The expert trajectories a distillation job matches: only MTT has any."""
    return expert_files(wildcards.dataset) if elf_config.uses_experts(wildcards.method) else []


def distill_imports(wildcards):
    """The files method import reads (so replacing one reruns its synthetic set and everything after)."""
    return elf_config.import_files(config, wildcards.dataset, wildcards.method, int(wildcards.ipc))


# --------------------------------------------------------------------------- students.smk


def student_features(wildcards):
    """What a student reads of its teacher: the stored features (ELF's cached targets) and/or the
    checkpoint (online ELF targets, KD logits, relabelling)."""
    if not elf_config.uses_teacher(config, wildcards.evaluation):
        return []
    teacher = elf_config.teacher_name(config, wildcards.evaluation, wildcards.arch)
    files = []
    if elf_config.uses_teacher_features(config, wildcards.evaluation):
        files.append(f"{RESULTS}/{wildcards.dataset}/features/{wildcards.method}/ipc{wildcards.ipc}/{teacher}.h5")
    if elf_config.uses_teacher_checkpoint(config, wildcards.evaluation):
        files.append(f"{RESULTS}/{wildcards.dataset}/teachers/{teacher}/model.pt")
    return files


def student_teacher_args(wildcards, input):
    flags = {".h5": "--features", ".pt": "--teacher-model"}
    return " ".join(f"{flags[Path(path).suffix]} {path}" for path in input.features)


def student_identity(wildcards):
    """The names a student's rows carry (dataset, method, IPC, evaluation, teacher)."""
    return {
        "dataset": wildcards.dataset,
        "method": wildcards.method,
        "ipc": int(wildcards.ipc),
        "evaluation": wildcards.evaluation,
        "teacher": elf_config.teacher_name(config, wildcards.evaluation, wildcards.arch),
    }


def student_choice(wildcards):
    """A student's choice.json where its values are selected (else nothing)."""
    if not elf_config.applied_select_keys(config, wildcards.evaluation, wildcards.arch):
        return []
    return [f"{select_folder(select_identity(wildcards))}/choice.json"]


# --------------------------------------------------------------------------- select.smk


def candidate_files(wildcards):
    """One baseline result per candidate of students.select, in config order (the choice's ties)."""
    folder = select_folder(select_identity(wildcards))
    return [f"{folder}/{elf_config.candidate_name(c)}.parquet" for c in elf_config.select_candidates(config)]


# --------------------------------------------------------------------------- report.smk


def student_parquets():
    return [
        f"{RESULTS}/{job['dataset']}/students/{job['method']}/ipc{job['ipc']}/{job['arch']}/{job['evaluation']}.parquet"
        for job in elf_config.student_jobs(config)
    ]


def choice_files():
    """Every choice.json of the study (the report's Selection table)."""
    return [f"{select_folder(job)}/choice.json" for job in elf_config.select_jobs(config)]


def reference_parquets():
    """The full-real-data reference results (empty when reference.enabled is false)."""
    return [f"{RESULTS}/{job['dataset']}/reference/{job['arch']}.parquet" for job in elf_config.reference_jobs(config)]


def used_teachers():
    """The trained teachers (keys of teachers) the evaluations use; distillation-model teachers are
    not trained here."""
    return [name for name in elf_config.used_teacher_names(config) if name in config["teachers"]]


def distill_arch_args():
    return " ".join(f"{method}={elf_config.distill_arch(config, method)}" for method in config["distillation"]["methods"])


def benchmark_files():
    """The benchmark file of every heavy job of this study (those missing, e.g. of jobs cached from
    an older run, are skipped by the report). Patterns come from the rules themselves."""
    study = config["distillation"]
    patterns = {
        name: str(getattr(rules, name).benchmark)
        for name in ("distill", "experts", "teachers", "students", "reference")
        if hasattr(rules, name)
    }
    files = []
    for dataset in config["datasets"]:
        for method in study["methods"]:
            files += [patterns["distill"].format(dataset=dataset, method=method, ipc=ipc) for ipc in study["ipc"]]
        if "experts" in patterns and any(elf_config.uses_experts(m) for m in study["methods"]):
            experts = elf_config.experts_config(config)
            files += [
                patterns["experts"].format(dataset=dataset, expert_arch=experts["arch"], index=k)
                for k in range(experts["num_experts"])
            ]
        files += [patterns["teachers"].format(dataset=dataset, teacher=teacher) for teacher in used_teachers()]
    files += [patterns["students"].format(**job) for job in elf_config.student_jobs(config)]
    if "reference" in patterns:
        files += [patterns["reference"].format(**job) for job in elf_config.reference_jobs(config)]
    return files


def figure_targets():
    """Every report figure of the study."""
    targets = []
    for dataset in config["datasets"]:
        targets += [f"{RESULTS}/report/figures/{dataset}/accuracy.png", f"{RESULTS}/report/figures/{dataset}/gap_closed.png"]
        targets += [
            f"{RESULTS}/report/figures/{dataset}/synsets/{method}_ipc{ipc}.png"
            for method in config["distillation"]["methods"]
            for ipc in config["distillation"]["ipc"]
        ]
        targets += [f"{RESULTS}/report/figures/{dataset}/teachers/{teacher}.png" for teacher in used_teachers()]
    return targets


# --------------------------------------------------------------------------- study.smk


STUDY = config.get("studies") or {}
# A configured study is part of the whole run: its tables are appended to summary.md.
EXTRA_REPORT_TABLES += [f"{RESULTS}/study/{part}.parquet" for part in elf_config.STUDY_PARTS if STUDY.get(part)]


def study_block(part):
    """The `studies` block, refusing a study target whose part is not configured."""
    if not STUDY:
        raise WorkflowError(
            "config key studies: missing (the empirical study needs dataset, method, ipc and "
            "similarity.archs / norm.pairs / ablation; see tests/configs/study-smoke.yaml)"
        )
    if not STUDY.get(part):
        raise WorkflowError(f"config key studies.{part}: missing (needed by target study_{part})")
    return STUDY


def study_parquets(part):
    """The student results one part of the study reads: its architectures (and the reference) under
    its evaluations (studies.evaluations; the ablation's own for part ablation)."""
    study = study_block(part)
    if part == "ablation":
        archs, evaluations = set(study["ablation"]["archs"]), set(study["ablation"]["evaluations"])
    else:
        archs, evaluations = {study.get("reference", "convnet")}, set(study.get("evaluations", ["baseline"]))
        if part == "similarity":
            archs.update(study["similarity"]["archs"])
        else:
            archs.update(arch for pair in study["norm"]["pairs"].items() for arch in pair)
    return [
        f"{RESULTS}/{job['dataset']}/students/{job['method']}/ipc{job['ipc']}/{job['arch']}/{job['evaluation']}.parquet"
        for job in elf_config.study_jobs(config)
        if job["arch"] in archs and job["evaluation"] in evaluations
    ]


def study_args():
    return {"reference": STUDY.get("reference", "convnet"), "evaluations": " ".join(STUDY.get("evaluations", ["baseline"]))}


# --------------------------------------------------------------------------- expert_teacher.smk


def expert_of(teacher):
    """(expert index, epoch or None) of a distillation-model teacher name."""
    match = re.fullmatch(rf"{elf_config.DISTILLATION_TEACHER}(\d+)(?:-epoch(\d+))?", teacher)
    return int(match.group(1)), int(match.group(2)) if match.group(2) else None


def distillation_expert(wildcards):
    arch = elf_config.experts_config(config)["arch"]
    return f"{RESULTS}/{wildcards.dataset}/experts/{arch}/expert_{expert_of(wildcards.teacher)[0]}.h5"

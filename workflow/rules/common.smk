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


# --------------------------------------------------------------------------- students.select


def select_identity(wildcards):
    """The cell a choice is made for (dataset, method, IPC, architecture)."""
    return {"dataset": wildcards.dataset, "method": wildcards.method, "ipc": int(wildcards.ipc), "arch": wildcards.arch}


def select_folder(job):
    return f"{RESULTS}/{job['dataset']}/select/{job['method']}/ipc{job['ipc']}/{job['arch']}"

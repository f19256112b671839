import json
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import DeploymentMethod
from snakemake.utils import validate

REPO = Path(workflow.basedir).parent.parent if Path(workflow.basedir).name == "rules" else Path(workflow.basedir)
sys.path.insert(0, str(REPO))

from elf_pipeline import config as elf_config  # noqa: E402  (torch-free)

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
try:
    elf_config.validate_schema(config, str(SCHEMA))
    validate(config, schema=str(SCHEMA))  # fills schema defaults
    elf_config.check_config(config)
except elf_config.ConfigError as error:
    raise WorkflowError(f"invalid configuration: {error}") from None

RESULTS = "results"
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
DEVICE = config.get("device", "auto")
THREADS = config.get("threads", 1)
# Under --use-conda/--sdm conda each rule's environment provides `python`; otherwise jobs use the
# interpreter that runs Snakemake (e.g. the project's virtualenv), activated or not.
USES_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
INTERPRETER = "python" if USES_CONDA else sys.executable
PYTHON = f"PYTHONPATH={REPO}${{{{PYTHONPATH:+:$PYTHONPATH}}}} {INTERPRETER} -m elf_pipeline --threads {{threads}}"
ENV = str(REPO / "workflow" / "envs" / "elf.yaml")


def _choices(names):
    return "|".join(re.escape(str(name)) for name in names)


wildcard_constraints:
    dataset=_choices(config["datasets"]),
    method=_choices(config["distillation"]["methods"]),
    ipc=r"\d+",
    teacher=_choices(config["teachers"]) or "(?!)",
    arch=_choices(config["students"]["archs"]),
    evaluation=_choices(config["evaluations"]),


def package_sources(*modules):
    """The package files a stage imports: listed as inputs so that editing them reruns the stage
    (Snakemake's code trigger sees only the rule body, not imported modules)."""
    files = []
    for module in ("__init__", "io", *modules):
        path = REPO / "elf_pipeline" / f"{module}.py"
        files.extend(sorted((REPO / "elf_pipeline" / module).glob("*.py")) if not path.exists() else [path])
    return [str(f) for f in files]


CORE = ("data", "augment", "training", "models")
SOURCES = {
    "prepare_data": package_sources("cli", "data"),
    "distill": package_sources("cli", *CORE, "distill"),
    "train_teacher": package_sources("cli", *CORE, "checkpoint", "teacher"),
    "extract_features": package_sources("cli", "models", "training", "checkpoint", "features"),
    "train_student": package_sources("cli", *CORE, "losses", "checkpoint", "features", "students"),
    "report": package_sources("cli", "report"),
}


def as_json(block):
    return json.dumps(block, sort_keys=True)


def student_parquets():
    return [
        f"{RESULTS}/{job['dataset']}/students/{job['method']}/ipc{job['ipc']}/{job['arch']}/{job['evaluation']}.parquet"
        for job in elf_config.student_jobs(config)
    ]


def student_features(wildcards):
    if not elf_config.uses_teacher(config, wildcards.evaluation):
        return []
    teacher = config["evaluations"][wildcards.evaluation]["teacher"]
    return f"{RESULTS}/{wildcards.dataset}/features/{wildcards.method}/ipc{wildcards.ipc}/{teacher}.h5"


def student_identity(wildcards):
    evaluation = config["evaluations"][wildcards.evaluation]
    return as_json(
        {
            "dataset": wildcards.dataset,
            "method": wildcards.method,
            "ipc": int(wildcards.ipc),
            "evaluation": wildcards.evaluation,
            "teacher": evaluation.get("teacher") if elf_config.uses_teacher(config, wildcards.evaluation) else None,
        }
    )

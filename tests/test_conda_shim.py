"""``snakemake --use-conda`` on a reduced smoke study, with a stand-in ``conda`` first on PATH.

conda itself is not installed where the suite usually runs, so a shim answers exactly the calls
Snakemake 9's conda integration makes (snakemake/deployment/conda.py): ``type conda``,
``conda --version`` (must be >= 24.7.1), ``conda info --json`` (``conda_prefix``, ``platform``),
``conda config --get channel_priority --json``, ``conda env create --quiet --no-default-packages
--file F --prefix P`` and, per job, ``source <conda_prefix>/bin/activate P; <command>``. The
environment it "creates" is a thin wrapper: ``P/bin/python`` logs the call to ``P/calls.log`` and
execs the interpreter running these tests; the package versions of workflow/envs/elf.yaml are not
solved or installed. What this checks is the workflow's side of conda: every rule declares the
environment, every job's ``python`` is the environment's, and editing the environment file
creates a new environment and reruns the jobs (rerun trigger ``software-env``).

``test_real_conda_creates_the_environment`` runs against a real conda when one (>= 24.7.1) is on
PATH: it solves and installs workflow/envs/elf.yaml and runs the data stage in it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import copy_workflow
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
CONFIG = "config/conda_smoke.yaml"
MIN_CONDA = "24.7.1"

pytestmark = pytest.mark.slow

SHIM = '''#!{python}
"""Stand-in for conda: the calls Snakemake's conda integration makes, nothing else."""
import json, os, shutil, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
args = sys.argv[1:]
with open(ROOT / "calls.log", "a") as log:
    log.write(" ".join(args) + "\\n")


def option(name):
    value = args[args.index(name) + 1]
    return value.strip("'\\"")


if args == ["--version"]:
    print("conda {version}")
elif args[:2] == ["info", "--json"]:
    print(json.dumps({{"conda_prefix": str(ROOT), "platform": "linux-64", "conda_version": "{version}",
                      "envs_dirs": [str(ROOT / "envs")], "channels": []}}))
elif args[:3] == ["config", "--get", "channel_priority"]:
    print(json.dumps({{"get": {{"channel_priority": "strict"}}, "rc_path": str(ROOT / ".condarc"), "success": True}}))
elif args[:2] == ["env", "create"] and "--file" in args and "--prefix" in args:
    prefix, spec = Path(option("--prefix")), Path(option("--file"))
    (prefix / "bin").mkdir(parents=True)
    (prefix / "conda-meta").mkdir()
    shutil.copy(spec, prefix / "conda-meta" / "environment.yaml")
    python = prefix / "bin" / "python"
    python.write_text("#!/bin/sh\\n"
                      'printf "%s\\\\n" "$*" >> "$CONDA_PREFIX/calls.log"\\n'
                      'exec {python} "$@"\\n')
    python.chmod(0o755)
    print(f"created {{prefix}}")
elif args[:1] == ["clean"]:
    pass
else:
    sys.exit(f"conda shim: unsupported call: conda {{' '.join(args)}}")
'''

ACTIVATE = '''# sourced by Snakemake as: source <conda_prefix>/bin/activate <env prefix>
export CONDA_PREFIX="$1"
export PATH="$1/bin:$PATH"
'''


def run(workdir: Path, env: dict, *args: str) -> str:
    result = subprocess.run([SNAKEMAKE, *args], cwd=workdir, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout + result.stderr


def copy_repo(workdir: Path) -> None:
    copy_workflow(REPO, workdir)
    smoke = yaml.safe_load((workdir / "tests" / "configs" / "smoke.yaml").read_text())
    smoke["distillation"]["ipc"] = [1]
    smoke["distillation"]["methods"] = {"random": {}}
    smoke["students"].update(archs=["convnet"], seeds=[0])
    smoke["students"]["train"]["epochs"] = 2
    smoke["teachers"]["convnet"]["train"]["epochs"] = 1
    smoke["reference"]["full"].update(epochs=1, train_limit=50)
    (workdir / CONFIG).write_text(yaml.safe_dump(smoke))


def make_shim(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    conda = root / "bin" / "conda"
    conda.write_text(SHIM.format(python=sys.executable, version=MIN_CONDA))
    conda.chmod(0o755)
    (root / "bin" / "activate").write_text(ACTIVATE)
    return root


def environments(workdir: Path) -> list[Path]:
    folder = workdir / ".snakemake" / "conda"
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def stages_run(prefix: Path) -> list[str]:
    """The stage of every call of the environment's python, in order (each must be the CLI)."""
    lines = (prefix / "calls.log").read_text().splitlines()
    stages = [re.match(r"-m elf_pipeline --threads \d+ (\S+) ", line) for line in lines]
    assert lines and all(stages), lines
    return [match.group(1) for match in stages]


def job_count(log: str) -> int:
    match = re.search(r"^total\s+(\d+)$", log, flags=re.M)
    assert match, f"no job table in:\n{log[-2000:]}"
    return int(match.group(1))


@pytest.fixture(scope="module")
def conda_study(tmp_path_factory) -> tuple[Path, Path, dict, str]:
    workdir = tmp_path_factory.mktemp("conda_study")
    copy_repo(workdir)
    shim = make_shim(tmp_path_factory.mktemp("conda_shim"))
    env = {**os.environ, "PATH": f"{shim / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("CONDA_PREFIX", None)
    log = run(workdir, env, "--cores", "2", "--use-conda", "--configfile", CONFIG)
    return workdir, shim, env, log


def test_every_job_runs_with_the_environments_python(conda_study) -> None:
    workdir, shim, _, log = conda_study
    assert "(100%) done" in log
    (prefix,) = environments(workdir)  # one environment file, one environment
    assert (prefix / "conda-meta" / "environment.yaml").read_text() == (REPO / "workflow/envs/elf.yaml").read_text()
    calls = (shim / "calls.log").read_text().splitlines()
    assert "--version" in calls and "info --json" in calls
    creates = [c for c in calls if c.startswith("env create")]
    assert len(creates) == 1 and creates[0].endswith(f"--prefix {prefix}")
    stages = stages_run(prefix)
    total = job_count(log) - 1  # the target rule `all` runs no command
    assert len(stages) == total, f"{total} jobs, {len(stages)} calls of the environment's python"
    assert {"data", "distill", "teachers", "features", "students", "reference",
            "report"} <= set(stages)


def test_editing_the_environment_file_creates_a_new_one_and_reruns(conda_study) -> None:
    workdir, shim, env, first_run = conda_study
    (old,) = environments(workdir)
    assert "Nothing to be done" in run(workdir, env, "--cores", "2", "--use-conda", "--configfile", CONFIG, "-n")
    spec = workdir / "workflow" / "envs" / "elf.yaml"
    spec.write_text(spec.read_text().replace("  - tqdm>=4.66\n", "  - tqdm>=4.66\n  - rich>=13\n"))
    dry = run(workdir, env, "--cores", "2", "--use-conda", "--configfile", CONFIG, "-n")
    assert "will be created" in dry
    assert re.search(r"Software environment definition has changed", dry, flags=re.I), dry[-2000:]
    assert job_count(dry) == job_count(first_run)  # every rule runs in the environment: the whole study reruns
    data = "results/digits/data.h5"
    assert (workdir / data).is_file()
    run(workdir, env, data, "--cores", "2", "--use-conda", "--configfile", CONFIG)  # the target before --configfile
    new = [p for p in environments(workdir) if p != old]
    assert len(new) == 1 and "rich>=13" in (new[0] / "conda-meta" / "environment.yaml").read_text()
    assert stages_run(new[0]) == ["data"]


def real_conda() -> str | None:
    conda = shutil.which("conda")
    if conda is None:
        return None
    try:
        out = subprocess.run([conda, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.findall(r"\d+\.\d+\.\d+", out)
    return conda if found and Version(found[0]) >= Version(MIN_CONDA) else None


@pytest.mark.skipif(real_conda() is None, reason=f"needs a real conda >= {MIN_CONDA} on PATH (none found; "
                    "the shim tests above cover the workflow's side)")
def test_real_conda_creates_the_environment(tmp_path: Path) -> None:
    copy_repo(tmp_path)
    env = {**os.environ}
    run(tmp_path, env, "results/digits/data.h5", "--cores", "2", "--use-conda", "--configfile", CONFIG)
    (prefix,) = environments(tmp_path)
    probe = subprocess.run([str(prefix / "bin" / "python"), "-c", textwrap.dedent("""
        import h5py, numpy, torch, torchvision, matplotlib, pandas
        print(torch.__version__)""")], capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.startswith("2.14.1")

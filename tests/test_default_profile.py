"""workflow/profiles/default: what it sets, and when Snakemake applies it.

Snakemake looks for an implicit workflow profile in ``profiles/default`` next to the Snakefile and
in the working directory. This Snakefile lies at the repository root, so
``workflow/profiles/default`` is not found by itself: it applies with ``--profile
workflow/profiles/default`` (as README and docs/cluster.md say), and a plain ``snakemake`` or a
``--profile workflow/profiles/slurm`` run is not layered with it (a workflow profile would
override the SLURM profile key by key). Both halves are checked through settings that show:
``printshellcmds: true`` prints each job's command in a dry run, and ``cores: all`` lets a run
start without ``--cores``."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
PROFILE = "workflow/profiles/default"
COMMAND = re.compile(r"^Shell command: .*-m elf_pipeline --threads \d+ prepare-data ", flags=re.M)
NO_CORES = "cores have to be specified"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("profile")
    for item in ("Snakefile", "workflow", "elf_pipeline", "config"):
        source = REPO / item
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, workdir / item)
    return workdir


def snakemake(workdir: Path, *args: str) -> str:
    result = subprocess.run([SNAKEMAKE, *args, "--configfile", "config/smoke.yaml"], cwd=workdir, capture_output=True,
                            text=True, timeout=300)
    return result.stdout + result.stderr


def test_profile_holds_the_settings_checked_here() -> None:
    profile = yaml.safe_load((REPO / PROFILE / "profile.yaml").read_text())
    assert profile["printshellcmds"] is True and profile["cores"] == "all"
    assert profile["rerun-triggers"] == ["mtime", "params", "input", "software-env", "code"]
    assert profile["rerun-incomplete"] is True


def test_profile_option_applies_the_default_profile(workdir: Path) -> None:
    text = snakemake(workdir, "-n", "--profile", PROFILE)
    assert f"Using profile {PROFILE} for setting default command line arguments" in text, text[-2000:]
    assert COMMAND.search(text), "printshellcmds from the profile: the dry run should print the commands"
    started = snakemake(workdir, "Snakefile", "--profile", PROFILE)  # a target no rule makes: fails after the DAG
    assert NO_CORES not in started and "Building DAG of jobs" in started, started[-2000:]


def test_plain_run_is_not_layered_with_the_default_profile(workdir: Path) -> None:
    text = snakemake(workdir, "-n")
    assert "Nothing to be done" not in text and "prepare_data" in text, text[-2000:]
    assert "Using" not in text.split("Building DAG")[0] and "profiles/default" not in text
    assert not COMMAND.search(text)
    assert NO_CORES in snakemake(workdir, "Snakefile")
    slurm = snakemake(workdir, "-n", "--profile", "workflow/profiles/slurm")
    assert "Using profile workflow/profiles/slurm for setting" in slurm, slurm[-2000:]
    assert "workflow specific profile" not in slurm

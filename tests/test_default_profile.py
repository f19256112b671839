"""workflow/profiles/default: what it sets, and that Snakemake applies it without ``--profile``.

Snakemake looks for an implicit workflow profile in ``profiles/default`` next to the Snakefile and
in the working directory. The Snakefile lies at the repository root, so ``profiles/default`` there
links to ``workflow/profiles/default``: a plain ``snakemake`` run uses it, and a ``--profile
workflow/profiles/slurm`` run is layered with it key by key (its keys agree with the SLURM
profile's or do not concern a cluster). Checked through settings that show: ``printshellcmds:
true`` prints each job's command in a dry run, and ``cores: all`` lets a run start without
``--cores``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import WORKFLOW_ITEMS, copy_workflow

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
PROFILE = "workflow/profiles/default"
COMMAND = re.compile(r"^Shell command: .*-m elf_pipeline --threads \d+ data ", flags=re.M)
NO_CORES = "cores have to be specified"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("profile")
    copy_workflow(REPO, workdir, items=(*WORKFLOW_ITEMS, "profiles"))
    return workdir


def snakemake(workdir: Path, *args: str) -> str:
    result = subprocess.run([SNAKEMAKE, *args, "--configfile", "tests/configs/smoke.yaml"], cwd=workdir, capture_output=True,
                            text=True, timeout=300)
    return result.stdout + result.stderr


def test_profile_holds_the_settings_checked_here() -> None:
    profile = yaml.safe_load((REPO / PROFILE / "profile.yaml").read_text())
    assert profile["printshellcmds"] is True and profile["cores"] == "all"
    assert profile["rerun-triggers"] == ["mtime", "params", "input", "software-env", "code"]
    assert profile["rerun-incomplete"] is True


def test_profile_option_applies_the_default_profile(workdir: Path) -> None:
    text = snakemake(workdir, "-n", "--profile", PROFILE)
    assert f"Using profiles {PROFILE} and workflow specific profile profiles/default" in text, text[:2000]
    assert COMMAND.search(text), "printshellcmds from the profile: the dry run should print the commands"
    started = snakemake(workdir, "Snakefile", "--profile", PROFILE)  # a target no rule makes: fails after the DAG
    assert NO_CORES not in started and "Building DAG of jobs" in started, started[-2000:]


def test_plain_run_uses_the_default_profile_without_being_told(workdir: Path) -> None:
    assert (REPO / "profiles" / "default").resolve() == (REPO / PROFILE).resolve()
    text = snakemake(workdir, "-n")
    assert "Using workflow specific profile profiles/default" in text, text[:2000]
    assert COMMAND.search(text), "printshellcmds from the implicit profile: the dry run should print the commands"
    assert NO_CORES not in snakemake(workdir, "Snakefile")
    # --workflow-profile none is the documented way out
    plain = snakemake(workdir, "-n", "--workflow-profile", "none")
    assert not COMMAND.search(plain) and NO_CORES in snakemake(workdir, "Snakefile", "--workflow-profile", "none")


def test_slurm_profile_keys_survive_the_layering() -> None:
    default = yaml.safe_load((REPO / PROFILE / "profile.yaml").read_text())
    slurm = yaml.safe_load((REPO / "workflow/profiles/slurm/profile.yaml").read_text())
    shared = set(default) & set(slurm)
    assert {key: default[key] for key in shared} == {key: slurm[key] for key in shared}
    assert set(default) - set(slurm) <= {"cores"}  # the only key SLURM's profile leaves to the local side

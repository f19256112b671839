"""The conda environments of the rules agree with what `make setup` installs, and every rule has one."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the TOML reader pip ships
    from pip._vendor import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
ENVS = sorted((REPO / "workflow" / "envs").glob("*.yaml"))
# They drive the workflow (the snakemake process) and are never imported by a job.
DRIVER_ONLY = {"snakemake", "snakemake-executor-plugin-slurm"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_requirements() -> dict[str, SpecifierSet]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {canonical(req.name): req.specifier for req in map(Requirement, project["dependencies"])}


def env_requirements(path: Path) -> tuple[dict[str, SpecifierSet], str]:
    """(package -> constraint) of a conda environment file, conda and pip entries alike, and its python spec."""
    spec = yaml.safe_load(path.read_text())
    packages: dict[str, SpecifierSet] = {}
    python = ""
    for entry in spec["dependencies"]:
        entries = entry["pip"] if isinstance(entry, dict) else [entry]
        for text in entries:
            # conda's single '=' (python=3.11) means "3.11.*"
            requirement = Requirement(re.sub(r"^([A-Za-z0-9_.-]+)=(?!=)([\d.]+)$", r"\1==\2.*", text))
            name = canonical(requirement.name)
            if name == "python":
                python = str(requirement.specifier)
            elif name != "pip":
                assert name not in packages, f"{path.name}: {name} listed twice"
                packages[name] = requirement.specifier
    return packages, python


def test_there_is_an_environment() -> None:
    assert [path.name for path in ENVS] == ["elf.yaml"]


@pytest.mark.parametrize("path", ENVS, ids=lambda path: path.name)
def test_environment_pins_agree_with_pyproject(path: Path) -> None:
    expected = {name: spec for name, spec in pyproject_requirements().items() if name not in DRIVER_ONLY}
    packages, python = env_requirements(path)
    assert packages == expected, (
        f"{path.relative_to(REPO)} and pyproject.toml differ: only in the env {sorted(packages.keys() - expected.keys())}, "
        f"only in pyproject {sorted(expected.keys() - packages.keys())}, different constraints "
        f"{sorted(name for name in packages.keys() & expected.keys() if packages[name] != expected[name])}")
    # the environment's python satisfies requires-python
    requires = SpecifierSet(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"])
    assert python and Version(python.removeprefix("==").removesuffix(".*")) in requires


def test_environment_parser_reads_conda_and_pip_entries(tmp_path: Path) -> None:
    env = tmp_path / "env.yaml"
    env.write_text("dependencies:\n  - python=3.11\n  - pip\n  - numpy>=1.26\n  - scikit_learn>=1.3\n"
                   "  - pip:\n      - torch==2.14.1\n")
    packages, python = env_requirements(env)
    assert packages == {"numpy": SpecifierSet(">=1.26"), "scikit-learn": SpecifierSet(">=1.3"),
                        "torch": SpecifierSet("==2.14.1")}
    assert python == "==3.11.*"


def test_every_rule_has_a_conda_environment(tmp_path: Path) -> None:
    """`snakemake --lint` reports no rule without a software environment."""
    lint = subprocess.run([str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile"),
                           "--configfile", str(REPO / "tests" / "configs" / "smoke.yaml"), "--lint"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    text = lint.stdout + lint.stderr
    assert lint.returncode == 0 and "Congratulations, your workflow is in a good condition" in text, text[-2000:]
    assert "Specify a conda environment or container for each rule" not in text, text


def test_workflow_files_are_snakefmt_clean() -> None:
    """`snakefmt --check` with the configured line length (pyproject.toml [tool.snakefmt])."""
    check = subprocess.run([str(Path(sys.executable).with_name("snakefmt")), "--check", "Snakefile", "workflow/rules"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, (check.stdout + check.stderr)[-3000:]

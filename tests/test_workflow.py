"""The smoke study end to end through Snakemake, and its caching/invalidation behaviour.

The workflow runs once in a private copy of the repository (so touching a module there cannot
affect the checkout); the invalidation checks are dry runs against that finished copy.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([SNAKEMAKE, "--cores", "2", *args], cwd=workdir, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def planned_outputs(workdir: Path, *args: str) -> set[str]:
    """Outputs a dry run would (re)create."""
    result = snakemake(workdir, "-n", *args)
    text = result.stdout + result.stderr
    return {path for line in re.findall(r"^\s+output: (.+)$", text, flags=re.M) for path in line.split(", ")}


def write_config(workdir: Path, name: str, change) -> str:
    config = yaml.safe_load((workdir / "config" / "smoke.yaml").read_text())
    change(config)
    path = workdir / "config" / name
    path.write_text(yaml.safe_dump(config))
    return f"config/{name}"


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("study")
    for item in ("Snakefile", "workflow", "elf_pipeline", "config"):
        source = REPO / item
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, workdir / item)
    run = snakemake(workdir, "--configfile", "config/smoke.yaml")
    assert "(100%) done" in run.stdout + run.stderr
    return workdir


def test_smoke_outputs(study: Path) -> None:
    smoke = yaml.safe_load((study / "config" / "smoke.yaml").read_text())
    runs = pd.read_parquet(study / "results/report/runs.parquet")
    expected = (len(smoke["distillation"]["methods"]) * len(smoke["distillation"]["ipc"])
                * len(smoke["students"]["archs"]) * len(smoke["evaluations"]) * len(smoke["students"]["seeds"]))
    assert len(runs) == expected
    for column in ("dataset", "method", "ipc", "teacher", "arch", "evaluation", "seed", "test_acc", "train_seconds",
                   "train_epochs", "train_lr", "loss_mode", "feature_loss", "adapter", "teacher_test_acc", "config_hash"):
        assert column in runs.columns, column
    assert runs["test_acc"].between(0, 1).all()
    assert set(runs["evaluation"]) == set(smoke["evaluations"])
    # resnet18's split output (512 ch) differs from the ConvNet teacher's (128 ch): adapters in use
    elf = runs[runs["evaluation"] == "elf"]
    assert elf[elf["arch"] == "resnet18"]["adapter"].all()
    assert not elf[elf["arch"] == "convnet"]["adapter"].any()
    assert runs[runs["evaluation"] == "baseline"]["teacher"].isna().all()
    assert pq.read_table(study / "results/report/runs.parquet").num_rows == expected
    summary = (study / "results/report/summary.md").read_text()
    assert "## digits · dm · IPC 2" in summary and "| resnet18 |" in summary and "Δ elf" in summary
    for artifact in ("digits/data.h5", "digits/distilled/dm/ipc1/synset.h5", "digits/teachers/convnet/model.pt",
                     "digits/features/dm/ipc1/convnet.h5", "digits/features/random/ipc2/convnet.h5"):
        assert (study / "results" / artifact).is_file(), artifact
    assert list((study / "results/benchmarks").rglob("*.tsv")), "heavy rules record benchmarks"


def test_finished_run_has_nothing_to_do(study: Path) -> None:
    assert planned_outputs(study, "--configfile", "config/smoke.yaml") == set()


def test_changing_one_evaluation_reruns_only_its_students(study: Path) -> None:
    config = write_config(study, "elf_changed.yaml", lambda c: c["evaluations"]["elf"].update(lambda_front=0.5))
    planned = planned_outputs(study, "--configfile", config)
    students = {p for p in planned if "/students/" in p}
    assert students and all(p.endswith("/elf.parquet") for p in students)
    assert len(students) == 2 * 2 * 2  # methods x ipc x archs
    assert planned - students == {"results/report/runs.parquet", "results/report/summary.md"}


def test_adding_an_architecture_runs_only_its_jobs(study: Path) -> None:
    config = write_config(study, "more_archs.yaml", lambda c: c["students"]["archs"].append("convnet-bn"))
    planned = planned_outputs(study, "--configfile", config)
    students = {p for p in planned if "/students/" in p}
    assert len(students) == 2 * 2 * 2 and all("/convnet-bn/" in p for p in students)
    assert all("/students/" in p or "/report/" in p for p in planned)


def test_editing_student_module_reruns_students_not_upstream(study: Path) -> None:
    module = study / "elf_pipeline" / "students.py"
    stat = module.stat()
    try:
        os.utime(module, (stat.st_atime + 3600, stat.st_mtime + 3600))
        planned = planned_outputs(study, "--configfile", "config/smoke.yaml")
    finally:
        os.utime(module, (stat.st_atime, stat.st_mtime))
    assert any("/students/" in p for p in planned)
    assert len({p for p in planned if "/students/" in p}) == 2 * 2 * 2 * 2
    for upstream in ("/distilled/", "/teachers/", "/features/", "data.h5"):
        assert not any(upstream in p for p in planned), upstream


def test_invalid_config_fails_before_any_job(study: Path) -> None:
    config = write_config(study, "typo.yaml", lambda c: c["students"].update(archz=["convnet"]))
    result = snakemake(study, "-n", "--configfile", config, check=False)
    assert result.returncode != 0
    assert "config key students.archz: unknown key" in result.stdout + result.stderr
    config = write_config(study, "bad_arch.yaml", lambda c: c["students"]["archs"].append("resnet19"))
    result = snakemake(study, "-n", "--configfile", config, check=False)
    assert result.returncode != 0
    assert "config key students.archs[2]: unknown architecture 'resnet19'" in result.stdout + result.stderr

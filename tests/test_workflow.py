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
    config = yaml.safe_load((workdir / "tests" / "configs" / "smoke.yaml").read_text())
    change(config)
    path = workdir / "config" / name
    path.write_text(yaml.safe_dump(config))
    return f"config/{name}"


@pytest.fixture(scope="module")
def study(smoke_study: Path) -> Path:
    return smoke_study


def test_smoke_outputs(study: Path) -> None:
    smoke = yaml.safe_load((study / "tests" / "configs" / "smoke.yaml").read_text())
    runs = pd.read_parquet(study / "results/report/runs.parquet")
    expected = (len(smoke["distillation"]["methods"]) * len(smoke["distillation"]["ipc"])
                * len(smoke["students"]["archs"]) * len(smoke["evaluations"]) * len(smoke["students"]["seeds"]))
    assert len(runs) == expected
    for column in ("dataset", "method", "ipc", "teacher", "arch", "evaluation", "seed", "test_acc", "train_seconds",
                   "train_epochs", "train_lr", "loss_mode", "feature_loss", "adapter", "teacher_test_acc", "config_hash"):
        assert column in runs.columns, column
    # every row is a real test: a count of correct images over the 359 of the digits test split, and
    # the students learned something (10 classes: chance is 10 %).  Measured: mean test accuracy 0.60
    # for convnet and 0.33 for resnet18, the lowest single run 0.198 (a resnet18 ELF student).
    assert all(abs(acc * 359 - round(acc * 359)) < 1e-6 for acc in runs["test_acc"])
    assert runs.groupby("arch")["test_acc"].mean().min() > 0.2
    assert runs["test_acc"].min() > 0.13
    assert set(runs["evaluation"]) == set(smoke["evaluations"])
    # resnet18's split output (512 ch) differs from the ConvNet teacher's (128 ch): adapters in use
    elf = runs[runs["evaluation"] == "elf"]
    assert elf[elf["arch"] == "resnet18"]["adapter"].all()
    assert not elf[elf["arch"] == "convnet"]["adapter"].any()
    assert runs[runs["evaluation"] == "baseline"]["teacher"].isna().all()
    assert pq.read_table(study / "results/report/runs.parquet").num_rows == expected
    summary = (study / "results/report/summary.md").read_text()
    assert "## digits · dm · IPC 2" in summary and "| resnet18 |" in summary and "Δ elf" in summary
    for artifact in ("digits/data.h5", "digits/distill/dm/ipc1/synset.h5", "digits/teachers/convnet/model.pt",
                     "digits/features/dm/ipc1/convnet.h5", "digits/features/random/ipc2/convnet.h5"):
        assert (study / "results" / artifact).is_file(), artifact
    assert list((study / "results/benchmarks").rglob("*.tsv")), "heavy rules record benchmarks"


def test_finished_run_has_nothing_to_do(study: Path) -> None:
    assert planned_outputs(study, "--configfile", "tests/configs/smoke.yaml") == set()


def test_changing_one_evaluation_reruns_only_its_students(study: Path) -> None:
    config = write_config(study, "elf_changed.yaml", lambda c: c["evaluations"]["elf"].update(lambda_front=0.5))
    planned = planned_outputs(study, "--configfile", config)
    students = {p for p in planned if "/students/" in p}
    assert students and all(p.endswith("/elf.parquet") for p in students)
    assert len(students) == 2 * 2 * 2  # methods x ipc x archs
    assert planned - students and all(p.startswith("results/report/") for p in planned - students)
    assert {"results/report/runs.parquet", "results/report/summary.md"} <= planned - students


def test_adding_an_architecture_runs_only_its_jobs(study: Path) -> None:
    config = write_config(study, "more_archs.yaml", lambda c: c["students"]["archs"].append("convnet-bn"))
    planned = planned_outputs(study, "--configfile", config)
    students = {p for p in planned if "/students/" in p}
    assert len(students) == 2 * 2 * 2 and all("/convnet-bn/" in p for p in students)
    # plus the new architecture's full-real-data reference row and the report
    assert all("/students/" in p or "/report/" in p or p == "results/digits/reference/convnet-bn.parquet" for p in planned)


def test_a_per_architecture_lr_reruns_only_that_architectures_students(study: Path) -> None:
    config = write_config(study, "by_arch.yaml",
                          lambda c: c["students"].update(train_by_arch={"resnet18": {"lr": 0.005}}))
    planned = planned_outputs(study, "--configfile", config)
    students = {p for p in planned if "/students/" in p}
    assert len(students) == 2 * 2 * 2 and all("/resnet18/" in p for p in students)  # methods x ipc x evaluations
    assert all("/students/" in p or p.startswith("results/report/") for p in planned)


def edited_plan(study: Path, module: Path) -> set[str]:
    """Plan after a real edit of ``module`` (Snakemake skips inputs whose mtime moved but whose
    content is unchanged), then put the file back as it was."""
    original, stat = module.read_text(), module.stat()
    try:
        module.write_text(original + "\n# an edit\n")
        return planned_outputs(study, "--configfile", "tests/configs/smoke.yaml")
    finally:
        module.write_text(original)
        os.utime(module, (stat.st_atime, stat.st_mtime))


def test_editing_student_module_reruns_students_not_upstream(study: Path) -> None:
    planned = edited_plan(study, study / "elf_pipeline" / "stages" / "students.py")
    assert any("/students/" in p for p in planned)
    assert len({p for p in planned if "/students/" in p}) == 2 * 2 * 2 * 2
    for upstream in ("/distill/", "/teachers/", "/features/", "data.h5"):
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


BAD_CONFIGS = {
    "unknown top-level key": (lambda c: c.update(studnets={}), "config key studnets: unknown key"),
    "unknown nested key": (lambda c: c["students"]["train"].update(epoch=3), "config key students.train.epoch: unknown key"),
    "wrong type": (lambda c: c["students"]["train"].update(epochs="ten"), "config key students.train.epochs: 'ten' is not of type 'integer'"),
    "zero epochs": (lambda c: c["teachers"]["convnet"]["train"].update(epochs=0), "config key teachers.convnet.train.epochs: 0 is less than the minimum of 1"),
    "zero ipc": (lambda c: c["distillation"].update(ipc=[0]), "config key distillation.ipc[0]: 0 is less than the minimum of 1"),
    "unknown method": (lambda c: c["distillation"]["methods"].update(gm={}), "config key distillation.methods.gm: unknown method"),
    "unknown dataset": (lambda c: c["datasets"]["digits"].update(source="cifar11"), "config key datasets.digits.source: unknown dataset 'cifar11'"),
    "unknown teacher arch": (lambda c: c["teachers"]["convnet"].update(arch="convnet-x9"), "config key teachers.convnet.arch: unknown architecture"),
    "unknown evaluation teacher": (lambda c: c["evaluations"]["elf"].update(teacher="w512"), "config key evaluations.elf.teacher: unknown teacher 'w512'"),
    "elf without teacher": (lambda c: c["evaluations"]["elf"].pop("teacher"), "config key evaluations.elf.teacher: loss_mode 'front_rear_task' needs a teacher"),
    "unknown loss mode": (lambda c: c["evaluations"]["elf"].update(loss_mode="front"), "config key evaluations.elf.loss_mode: 'front' is not one of"),
    "missing teacher layer": (lambda c: c["evaluations"]["elf"].update(teacher_layer="block7"), "config key evaluations.elf.teacher_layer: teacher 'convnet' has no layer 'block7'"),
    "missing student layer": (lambda c: c["evaluations"]["elf"].update(student_layer="layer4_0"), "config key evaluations.elf.student_layer: student 'convnet' has no layer 'layer4_0'"),
    "duplicate seeds": (lambda c: c["students"].update(seeds=[0, 0]), "config key students.seeds: seeds must be unique"),
    "checkpoint after training": (lambda c: c["teachers"]["convnet"].update(checkpoint_epoch=9), "config key teachers.convnet.checkpoint_epoch: 9 must lie in 1..train.epochs (2)"),
    "dataset name escaping results": (lambda c: c["datasets"].update({"../../etc": c["datasets"]["digits"]}), "config key datasets: '../../etc' does not match"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_fails_before_any_job_and_keeps_results(study: Path, case: str) -> None:
    change, message = BAD_CONFIGS[case]
    before = {p: p.stat().st_mtime_ns for p in (study / "results").rglob("*") if p.is_file()}
    config = write_config(study, f"bad_{case.replace(' ', '_')}.yaml", change)
    result = snakemake(study, "--configfile", config, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in output, output[-2000:]
    assert "Traceback" not in output
    assert {p: p.stat().st_mtime_ns for p in (study / "results").rglob("*") if p.is_file()} == before


def test_killed_workflow_resumes_to_identical_metrics(study: Path, tmp_path: Path) -> None:
    """SIGKILL the whole workflow inside the student stage, rerun with --rerun-incomplete: the same
    numbers as the uninterrupted run (which also makes this a two-run determinism check of the
    students). The finished study's upstream stages are kept; its ConvNet students are retrained."""
    import signal
    import time

    workdir = tmp_path / "killed"
    shutil.copytree(study, workdir, symlinks=True)
    students = workdir / "results" / "digits" / "students"
    targets = sorted(str(p.relative_to(workdir)) for p in students.rglob("convnet/*.parquet"))
    assert len(targets) == 8  # methods x ipc x evaluations
    for target in targets:
        (workdir / target).unlink()
    process = subprocess.Popen([SNAKEMAKE, "--cores", "2", *targets, "--configfile", "tests/configs/smoke.yaml"],
                               cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 300

    def finished() -> int:
        return sum((workdir / target).is_file() for target in targets)

    while time.monotonic() < deadline and finished() < 2:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert 2 <= finished() < len(targets), "the kill must land inside the student stage"
    # and inside a job: Snakemake marks a started job's output incomplete until the job ends
    incomplete = workdir / ".snakemake" / "incomplete"
    assert incomplete.is_dir() and any(incomplete.iterdir()), "no job was cut off by the kill"
    # a killed Snakemake leaves its lock behind: release it, then redo the incomplete jobs
    snakemake(workdir, "--configfile", "tests/configs/smoke.yaml", "--unlock")
    snakemake(workdir, *targets, "--configfile", "tests/configs/smoke.yaml", "--rerun-incomplete")
    key = ["dataset", "method", "ipc", "arch", "evaluation", "seed"]
    for target in targets:
        resumed = pd.read_parquet(workdir / target).sort_values(key).reset_index(drop=True)
        reference = pd.read_parquet(study / target).sort_values(key).reset_index(drop=True)
        pd.testing.assert_frame_equal(resumed[key + ["test_acc", "val_acc"]], reference[key + ["test_acc", "val_acc"]])
    # what is left is the report over the retrained students, nothing upstream of them
    left = planned_outputs(workdir, "--configfile", "tests/configs/smoke.yaml")
    assert "results/report/runs.parquet" in left and all(p.startswith("results/report/") for p in left), left


def test_editing_one_method_reruns_only_its_synthetic_sets(study: Path) -> None:
    planned = edited_plan(study, study / "elf_pipeline" / "stages" / "distill" / "dm.py")
    synsets = {p for p in planned if p.endswith("synset.h5")}
    assert synsets == {"results/digits/distill/dm/ipc1/synset.h5", "results/digits/distill/dm/ipc2/synset.h5"}
    assert not any("/random/" in p for p in planned)
    assert not any("/teachers/" in p for p in planned)


def _rules_of(planned: set[str]) -> set[str]:
    """Which kinds of job a plan holds, by output folder."""
    kinds = {"/report/figures/": "figures", "/report/": "report", "data.h5": "data",
             "/distill/": "distill", "/teachers/": "teachers", "/features/": "features",
             "/students/": "students", "/reference/": "reference"}  # first match wins: figures/teachers/ is a figure
    return {next((kind for key, kind in kinds.items() if key in path), path) for path in planned}


@pytest.mark.parametrize("module, rules", [
    # imported by training (teacher, students, references, distillation), not by the data or report stages
    ("infra/resume.py", {"distill", "teachers", "features", "students", "reference", "figures", "report"}),
    # read by data: everything downstream of data.h5
    ("datasets/cifar.py", {"data", "distill", "teachers", "features", "students",
                           "reference", "figures", "report"}),
    ("engine/losses.py", {"students", "figures", "report"}),
    ("stages/report/conformance.py", {"report", "figures"}),  # the figures read their tables through it
])
def test_editing_a_module_reruns_exactly_the_rules_that_import_it(study: Path, module: str, rules: set[str]) -> None:
    assert _rules_of(edited_plan(study, study / "elf_pipeline" / module)) == rules


def test_moved_study_has_nothing_to_do(study: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere"
    shutil.copytree(study, moved, symlinks=True)
    assert planned_outputs(moved, "--configfile", "tests/configs/smoke.yaml") == set()

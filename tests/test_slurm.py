"""The workflow on a real SLURM cluster through workflow/profiles/slurm.

tests/slurm/start_cluster.sh starts a private single-node cluster (slurmctld, slurmd, munge; it
installs Debian's packages first when running as root); where that cannot work the module fails as
root with apt-get (`make test` installs SLURM there) and is skipped, with the reason, elsewhere
(``conftest.can_install_test_dependencies``). A reduced smoke study (one method, IPC 1, one architecture, one seed,
baseline and ELF, on smaller images) runs twice through the slurm profile, unchanged but for the
status-polling options a cluster without accounting needs:

1. with a config whose ELF student diverges at runtime: its job fails on the node, leaves no
   output, and Snakemake names its logs;
2. with the config fixed: the run resumes, resubmitting only what had not finished.

Meanwhile the same study runs locally through workflow/profiles/default; the per-row test
accuracies must be identical (runs on CPU are deterministic).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import copy_workflow, missing_dependency

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SCRIPTS = REPO / "tests" / "slurm"
GPU_RULES = {"distill", "teachers", "features", "students", "reference", "experts"}
# A cluster without slurmdbd: job states come from squeue, polled soon after submission and every
# 2 s (Snakemake's default 10 s would be most of this test's time: its jobs take seconds).
SLURM_OPTIONS = ["--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
                 "--seconds-between-status-checks", "2", "--slurm-no-account", "--slurm-keep-successful-logs"]
ROW_KEY = ["dataset", "method", "ipc", "teacher", "arch", "evaluation", "seed"]
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")

pytestmark = pytest.mark.slow


@dataclass
class Run:
    returncode: int
    output: str
    seconds: float

    def submitted(self) -> dict[str, Path]:
        """SLURM job id -> its SLURM log, for every job Snakemake submitted."""
        return {job_id: Path(log) for job_id, log in SUBMITTED.findall(self.output)}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[dict[str, str]]:
    state = tmp_path_factory.mktemp("slurm-cluster")
    start = subprocess.run(["bash", str(SCRIPTS / "start_cluster.sh"), str(state)], capture_output=True, text=True,
                           timeout=900)
    if start.returncode == 3:  # cannot run here: a failure where `make test` installs SLURM, else a skip
        reason = start.stdout.strip().splitlines()[-1]
        print(reason, file=sys.stderr)
        missing_dependency(reason)
    assert start.returncode == 0, f"start_cluster.sh failed:\n{start.stdout}\n{start.stderr}"
    started = dict(line.split() for line in (state / "started.pids").read_text().splitlines())
    try:
        yield {**os.environ, "SLURM_CONF": str(state / "slurm.conf")}
    finally:
        subprocess.run(["bash", str(SCRIPTS / "stop_cluster.sh"), str(state)], timeout=120)
    for name in ("slurmctld", "slurmd"):
        assert not Path(f"/proc/{started[name]}").exists(), f"{name} (pid {started[name]}) still runs"
    assert not (Path(started["link"]).is_symlink() and os.readlink(started["link"]) == str(state / "slurm.conf"))


def reduced_smoke_config(repo: Path) -> dict:
    config = yaml.safe_load((repo / "tests" / "configs" / "smoke.yaml").read_text())
    config["datasets"] = {"digits": {**config["datasets"]["digits"], "image_size": 16, "train_limit": 300}}
    config["distillation"]["ipc"] = [1]
    config["distillation"]["methods"] = {"random": {}}
    for teacher in config["teachers"].values():
        teacher["train"].update(epochs=1, dsa=False)
    config["students"].update(archs=["convnet"], seeds=[0])
    config["students"]["train"].update(epochs=2, dsa=False)
    if "full" in config.get("reference", {}):
        config["reference"]["full"].update(epochs=1, train_limit=100, seeds=[0])
    return config


def write_config(folder: Path, name: str, config: dict) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(yaml.safe_dump(config))
    return name


STUDENT_DIR = "results/digits/students/random/ipc1/convnet"
STUDENT_LOG = "results/logs/digits/students/random_ipc1_convnet_elf.log"
# The student tables are the targets (the report and figures would only add jobs).
TARGETS = [f"{STUDENT_DIR}/baseline.parquet", f"{STUDENT_DIR}/elf.parquet"]


def private_copy(folder: Path) -> Path:
    """The workflow and package as they are now: edits to the checkout while the test runs (the
    package modules are inputs of the rules) cannot make the resumed run redo finished jobs."""
    copy_workflow(REPO, folder)
    return folder


def snakemake_command(repo: Path, profile: str, configfile: str, *extra: str) -> list[str]:
    return [SNAKEMAKE, "-s", str(repo / "Snakefile"), "--profile", str(repo / "workflow" / "profiles" / profile),
            "--configfile", configfile, *extra, *TARGETS]


def run(command: list[str], cwd: Path, env: dict[str, str]) -> Run:
    start = time.monotonic()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    return Run(done.returncode, done.stdout + done.stderr, time.monotonic() - start)


def slurm_job(job_id: str, env: dict[str, str]) -> dict[str, str]:
    shown = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, env=env, check=True)
    return dict(field.split("=", 1) for field in shown.stdout.split() if "=" in field)


@dataclass
class Study:
    local: Path
    cluster: Path
    failed: Run
    after_failure: dict[str, str]  # results/ after the failing run: path -> text of logs ("" for others)
    resumed: Run
    local_run: Run
    env: dict[str, str]


def snapshot(results: Path) -> dict[str, str]:
    return {str(path.relative_to(results.parent)): path.read_text() if path.suffix == ".log" else ""
            for path in results.rglob("*") if path.is_file()}


def job_names(run: Run) -> dict[str, str]:
    """SLURM job id -> ``rule_<rule>[/<wildcards>]``, the job's log folder below .snakemake/slurm_logs."""
    return {job_id: "/".join(log.parts[log.parts.index("slurm_logs") + 1:-1]) for job_id, log in run.submitted().items()}


def rule_of(job_name: str) -> str:
    return job_name.split("/")[0].removeprefix("rule_")


@pytest.fixture(scope="module")
def study(cluster: dict[str, str], tmp_path_factory) -> Study:
    repo = private_copy(tmp_path_factory.mktemp("repo"))
    config = reduced_smoke_config(repo)
    diverging = yaml.safe_load(yaml.safe_dump(config))
    diverging["evaluations"]["elf"]["train"] = {"lr": 1e30}  # NaN loss in epoch 2: the job fails on the node
    local_dir, cluster_dir = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("cluster")

    # The local run shares the CPUs with the cluster's jobs while Snakemake waits between status polls.
    with ThreadPoolExecutor(max_workers=1) as pool:
        local = pool.submit(run, snakemake_command(repo, "default", write_config(local_dir, "study.yaml", config),
                                                   "--cores", "2"), local_dir, dict(os.environ))
        failed = run(snakemake_command(repo, "slurm", write_config(cluster_dir, "diverging.yaml", diverging),
                                       *SLURM_OPTIONS), cluster_dir, cluster)
        after_failure = snapshot(cluster_dir / "results")
        resumed = run(snakemake_command(repo, "slurm", write_config(cluster_dir, "study.yaml", config), *SLURM_OPTIONS),
                      cluster_dir, cluster)
        local_run = local.result()
    print(f"SLURM: failing run {failed.seconds:.0f} s, resumed run {resumed.seconds:.0f} s; local run {local_run.seconds:.0f} s",
          file=sys.stderr)
    assert local_run.returncode == 0, local_run.output[-3000:]
    assert resumed.returncode == 0, resumed.output[-3000:]
    return Study(local_dir, cluster_dir, failed, after_failure, resumed, local_run, cluster)


def test_every_job_was_submitted_with_sbatch_and_completed_on_the_cluster(study: Study) -> None:
    submitted = study.resumed.submitted()
    assert submitted, "no job was submitted to SLURM"
    assert re.findall(r"^localrule (\w+):", study.resumed.output, flags=re.M) == []  # nothing ran on the submitting host
    for job_id, log in submitted.items():
        assert slurm_job(job_id, study.env)["JobState"] == "COMPLETED", job_id
        assert log.is_relative_to(study.cluster / ".snakemake" / "slurm_logs") and log.name == f"{job_id}.log"
        assert "Finished jobid" in log.read_text(), log
    assert "students" in {rule_of(name) for name in job_names(study.resumed).values()}


def test_gpu_rules_request_a_gpu_and_cpu_rules_do_not(study: Study) -> None:
    seen = set()
    for job_id, name in {**job_names(study.failed), **job_names(study.resumed)}.items():
        rule, job = rule_of(name), slurm_job(job_id, study.env)
        gpus = job.get("TresPerJob", "")
        assert (gpus == "gres:gpu:1") == (rule in GPU_RULES), f"{rule} (SLURM job {job_id}): TresPerJob={gpus!r}"
        assert job["NumCPUs"] == "1"  # threads: 1 in the config
        seen.add(rule)
    assert {"data", "distill", "teachers", "features", "students"} <= seen


def test_cluster_results_equal_local_results(study: Study) -> None:
    local = pd.concat([pd.read_parquet(study.local / target) for target in TARGETS])
    on_cluster = pd.concat([pd.read_parquet(study.cluster / target) for target in TARGETS])
    assert len(local) == len(on_cluster) == 2  # convnet x {baseline, elf} x seed 0
    merged = local.merge(on_cluster, on=ROW_KEY, suffixes=("_local", "_cluster"), validate="one_to_one")
    assert len(merged) == 2
    assert (merged["test_acc_local"] == merged["test_acc_cluster"]).all(), merged[ROW_KEY + ["test_acc_local", "test_acc_cluster"]]
    assert merged["test_acc_local"].between(0, 1).all()


def test_failed_job_is_reported_with_its_logs_and_leaves_no_partial_output(study: Study) -> None:
    failed = study.failed
    assert failed.returncode != 0
    error = failed.output[failed.output.index("Error in rule students"):]
    assert STUDENT_LOG in error and ".snakemake/slurm_logs/rule_students/" in error
    assert "error: loss became nan in epoch 2" in study.after_failure[STUDENT_LOG]
    failed_jobs = [job_id for job_id, name in job_names(failed).items() if name.endswith("_elf")]
    assert len(failed_jobs) == 1 and slurm_job(failed_jobs[0], study.env)["JobState"] == "FAILED"
    # no output of the failed job and no temporary file anywhere
    assert f"{STUDENT_DIR}/elf.parquet" not in study.after_failure
    assert [path for path in study.after_failure if path.endswith(".tmp")] == []


def test_rerun_resumes_and_submits_only_the_failed_job(study: Study) -> None:
    # keep-going (slurm profile): the jobs independent of the failed one all finished in the first run
    finished_before = {name for job_id, name in job_names(study.failed).items()
                       if slurm_job(job_id, study.env)["JobState"] == "COMPLETED"}
    assert {"rule_data/digits", "rule_features/digits_random_1_convnet",
            "rule_students/digits_random_1_convnet_baseline"} <= finished_before
    assert list(job_names(study.resumed).values()) == ["rule_students/digits_random_1_convnet_elf"]
    assert (study.cluster / STUDENT_DIR / "elf.parquet").exists()


# The profiles themselves, without a cluster: what every job of the smoke study would ask for.

def planned_resources(profile: str, tmp_path: Path, *extra: str) -> dict[str, dict[str, str]]:
    """rule -> resources of its jobs in a dry run through ``profile`` (one entry per rule)."""
    dry = run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--profile", str(REPO / "workflow" / "profiles" / profile),
               "--configfile", str(REPO / "tests" / "configs" / "smoke.yaml"), "-n", *extra], tmp_path, dict(os.environ))
    assert dry.returncode == 0, dry.output[-3000:]
    planned: dict[str, dict[str, str]] = {}
    for rule, resources in re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", dry.output, flags=re.M):
        values = dict(item.split("=", 1) for item in resources.split(", "))
        assert planned.setdefault(rule, values) == values, f"jobs of {rule} ask for different resources"
    return planned


def test_slurm_profile_sets_memory_runtime_and_gpus_per_rule(tmp_path: Path) -> None:
    profile = yaml.safe_load((REPO / "workflow/profiles/slurm/profile.yaml").read_text())
    assert profile["executor"] == "slurm"
    defaults, per_rule = profile["default-resources"], profile["set-resources"]
    planned = planned_resources("slurm", tmp_path)
    assert {"data", "distill", "teachers", "features", "students", "report"} <= planned.keys()
    for rule, resources in planned.items():
        if rule == "all":
            continue
        expected = {**defaults, **per_rule.get(rule, {})}
        assert (resources["mem_mb"], resources["runtime"]) == (str(expected["mem_mb"]), str(expected["runtime"])), rule
        assert (resources.get("gpu") == "1") == (rule in GPU_RULES), f"{rule}: gpu={resources.get('gpu')}"


def test_default_profile_runs_locally_and_gpu_rules_claim_the_gpu_resource(tmp_path: Path) -> None:
    profile = yaml.safe_load((REPO / "workflow/profiles/default/profile.yaml").read_text())
    assert "executor" not in profile and profile["cores"] == "all"
    planned = planned_resources("default", tmp_path, "--resources", "gpu=4")
    assert {rule for rule, resources in planned.items() if resources.get("gpu") == "1"} == GPU_RULES & planned.keys()
    assert "mem_mb" not in planned["students"]  # no cluster limits locally


def test_a_job_stopped_by_the_scheduler_leaves_no_temporary_file(tmp_path: Path) -> None:
    """SLURM's time limit and scancel send SIGTERM: the stage unwinds, so atomic_path removes its
    temporary file (the output itself never appears) and the exit status says what happened."""
    script = (
        "import sys, time\n"
        "from elf_pipeline.cli import _exit_on_sigterm\n"
        "from elf_pipeline.infra.io import atomic_path\n"
        "_exit_on_sigterm('students')\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_text('half written')\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(120)\n"
    )
    out = tmp_path / "out" / "elf.parquet"
    job = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert job.stdout.readline() == "writing\n"
    assert [path.name for path in out.parent.iterdir() if path.name.endswith(".tmp")]  # the partial file exists
    job.terminate()
    assert job.wait(timeout=60) == 143
    assert "students: terminated by signal 15" in job.stderr.read()
    assert list(out.parent.iterdir()) == []

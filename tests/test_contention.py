"""Competing jobs for the benchmark (``elf_pipeline/bench/contention.py``) and ``bench --contend``."""

import json
import sys
import time
from pathlib import Path

import pytest

from elf_pipeline.bench.contention import BUSY_LOAD_PER_CORE, Contenders, busy_warning, loadavg
from elf_pipeline.bench.run import format_table
from elf_pipeline.cli import main
from elf_pipeline.infra.errors import InputError


def _cpu_ticks(pid: int) -> int:
    """User + system clock ticks of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads CPU time from /proc")
def test_contenders_burn_cpu_while_the_block_runs_and_stop_after():
    with Contenders(2) as contenders:
        assert contenders.alive() == 2
        pids = [process.pid for process in contenders.processes]
        processes = list(contenders.processes)
        before = [_cpu_ticks(pid) for pid in pids]
        time.sleep(1.0)
        after = [_cpu_ticks(pid) for pid in pids]
        assert all(b > a for a, b in zip(before, after, strict=True)), (before, after)
    assert all(process.poll() is not None for process in processes)
    assert contenders.processes == [] and contenders.alive() == 0


@pytest.mark.parametrize("jobs, threads", [(0, 1), (-1, 1), (1, 0)])
def test_contenders_reject_counts_below_one(jobs, threads):
    with pytest.raises(InputError, match="at least 1"):
        Contenders(jobs, threads)


def test_busy_warning_only_above_half_a_job_per_core():
    assert busy_warning([0.9, 0.5, 0.2], 2) is None
    assert busy_warning([BUSY_LOAD_PER_CORE * 2, 1.0, 1.0], 2) is None
    warning = busy_warning([3.7, 2.0, 1.0], 2)
    assert warning.startswith("machine busy: 1-minute load average 3.7 on 2 cores") and "\n" not in warning
    assert busy_warning(None, 2) is None and busy_warning([5.0, 5.0, 5.0], None) is None


def test_loadavg_has_three_rounded_values():
    values = loadavg()
    assert values is None or (len(values) == 3 and all(v >= 0 and round(v, 2) == v for v in values))


def test_bench_contend_repeats_the_comparison_beside_competing_jobs(digits_h5, tmp_path):
    out = tmp_path / "bench.json"
    status = main(["bench", "--data", str(digits_h5), "--work", str(tmp_path), "--archs", "convnet-w8",
                   "--seeds", "0", "1", "--ipc", "2", "--epochs", "1", "--test-limit", "64", "--eval-batch-size", "32",
                   "--teacher-arch", "convnet-w16", "--device", "cpu", "--vectorize", "false", "--contend", "1",
                   "--out", str(out)])
    assert status == 0
    result = json.loads(out.read_text())
    contended = result["contended"]
    assert contended["jobs"] == 1 and contended["threads_per_job"] == 1
    assert len(contended["loadavg_start"]) == 3 and len(contended["loadavg_end"]) == 3
    idle_rows, busy_rows = result["rows"], contended["rows"]
    assert [(r["arch"], r["variant"]) for r in busy_rows] == [(r["arch"], r["variant"]) for r in idle_rows]
    for idle, busy in zip(idle_rows, busy_rows, strict=True):
        assert busy["train_images"] == idle["train_images"] and busy["test_images"] == idle["test_images"]
        assert busy["train_images_per_s"] > 0 and 0 < busy["test_peak_fraction"]
    # the same seeds on the same data: the pipeline's (deterministic, one-thread) accuracies repeat exactly
    assert busy_rows[1]["test_acc"] == idle_rows[1]["test_acc"]
    [comparison] = contended["comparisons"]
    assert comparison["speedup"] == pytest.approx(busy_rows[0]["total_seconds"] / busy_rows[1]["total_seconds"])
    assert result["settings"]["contend"] == 1 and result["command"].endswith("--contend 1")
    table = format_table(result)
    assert "convnet-w8 (idle): pipeline_fp32 / official_loop" in table
    assert "convnet-w8 (contended): pipeline_fp32 / official_loop" in table and "beside 1 one-thread training jobs" in table


def test_bench_rejects_a_negative_contend(digits_h5, tmp_path, capsys):
    status = main(["bench", "--data", str(digits_h5), "--work", str(tmp_path), "--archs", "convnet-w8",
                   "--device", "cpu", "--contend", "-2", "--out", str(tmp_path / "bench.json")])
    assert status == 2
    assert "--contend must be 0" in capsys.readouterr().err
    assert not (tmp_path / "bench.json").exists()

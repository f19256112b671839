"""Competing jobs for benchmarks: measure speed the way users run, on cores that other work shares.

A user's laptop or cluster node rarely sits idle while a benchmark runs: another study, a build or
a browser takes cores away between the tiny parallel regions of a CPU training step. ``Contenders``
starts ``jobs`` processes, each one training a small ConvNet on random images with one torch thread
(the shape of a workflow ``train_student`` job), and stops them when the block ends.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

from elf_pipeline.infra.errors import InputError

READY = "contender ready"
BUSY_LOAD_PER_CORE = 0.5  # 1-minute load average per core above which a benchmark warns


def busy(threads: int = 1, width: int = 64, batch: int = 32, size: int = 32) -> None:
    """Train a ConvNet on random images until killed (the body of one contender process)."""
    import torch
    import torch.nn.functional as F

    from elf_pipeline.models import build

    torch.set_num_threads(threads)
    torch.manual_seed(os.getpid())
    model = build(f"convnet-w{width}", 3, 10, size)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
    announced = False
    while True:
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if not announced:
            print(READY, flush=True)
            announced = True


class Contenders:
    """``with Contenders(jobs):`` runs ``jobs`` one-thread training processes for the block's duration.

    Entering waits until every process has finished its first step (so the block starts under
    load); leaving terminates them, and kills any that do not stop within a few seconds.
    """

    def __init__(self, jobs: int, threads: int = 1, start_timeout: float = 120.0):
        if jobs < 1:
            raise InputError(f"contending jobs must be at least 1, got {jobs}")
        if threads < 1:
            raise InputError(f"threads per contending job must be at least 1, got {threads}")
        self.jobs, self.threads, self.start_timeout = jobs, threads, start_timeout
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> Contenders:
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads),
               "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        code = f"from elf_pipeline.bench.contention import busy; busy({self.threads})"
        try:
            for _ in range(self.jobs):
                self.processes.append(subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                                       stderr=subprocess.PIPE, text=True, env=env))
            deadline = time.monotonic() + self.start_timeout
            for process in self.processes:
                ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
                line = process.stdout.readline() if ready else ""  # the first step done, or the process ended
                if line.strip() != READY:
                    reason = process.stderr.read().strip().splitlines()[-1:] if process.poll() is not None else []
                    raise InputError(f"a contending job did not start: {reason[0] if reason else 'no first step'}")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def alive(self) -> int:
        """How many contending processes are running."""
        return sum(process.poll() is None for process in self.processes)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        self.processes = []


def loadavg() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages, rounded (None where the platform has none)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def busy_warning(load: list[float] | None, cpus: int | None) -> str | None:
    """A one-line warning when the 1-minute load average says other work holds the cores."""
    if not load or not cpus or load[0] <= BUSY_LOAD_PER_CORE * cpus:
        return None
    return (f"machine busy: 1-minute load average {load[0]} on {cpus} cores before the benchmark; "
            "figures measured now are contended, not idle")

"""Time and memory per stage, from Snakemake's ``benchmark:`` files."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from elf_pipeline.infra.errors import ArtifactError
from elf_pipeline.stages.report.document import Table
from elf_pipeline.stages.report.numbers import MISSING

# the stages with benchmark files, in pipeline order (a benchmark folder is named as its stage)
STAGE_NAMES = ("experts", "distill", "teachers", "features", "select", "students", "reference")


def read_benchmarks(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Snakemake ``benchmark:`` files (``benchmarks/{dataset}/{stage}/{job}.tsv``), one row per job.
    Missing files are skipped (a job cached from a run without benchmarks)."""
    rows = []
    for path in map(Path, paths):
        if not path.is_file():
            continue
        try:
            frame = pd.read_csv(path, sep="\t", na_values=["NA", "-"])
        except Exception as err:
            raise ArtifactError(f"{path}: unreadable benchmark file ({type(err).__name__}: {err})") from None
        if "s" not in frame:
            raise ArtifactError(f"{path}: benchmark file lacks the column 's' (wall seconds)")
        last = frame.iloc[-1]
        rows.append({"dataset": path.parent.parent.name, "stage": path.parent.name,
                     "job": path.stem, "seconds": float(last["s"]),
                     "cpu_seconds": float(last["cpu_time"]) if "cpu_time" in frame else np.nan,
                     "max_rss_mb": float(last["max_rss"]) if "max_rss" in frame else np.nan})
    return pd.DataFrame(rows, columns=["dataset", "stage", "job", "seconds", "cpu_seconds", "max_rss_mb"])


def stage_table(benchmarks: pd.DataFrame) -> Table | None:
    """Time and memory per stage from the benchmark rows."""
    if benchmarks.empty:
        return None

    def fmt(value: float, digits: int = 1) -> str:
        return f"{value:,.{digits}f}" if np.isfinite(value) else MISSING

    order = {stage: rank for rank, stage in enumerate(STAGE_NAMES)}
    benchmarks = benchmarks.sort_values(["dataset", "stage"], key=lambda column: column.map(
        lambda value: order.get(value, len(order)) if column.name == "stage" else value), kind="stable")
    rows = []
    for (dataset, stage), group in benchmarks.groupby(["dataset", "stage"], sort=False):
        rows.append({"dataset": dataset, "stage": stage, "jobs": str(len(group)),
                     "wall s (total)": fmt(group["seconds"].sum()), "wall s (mean)": fmt(group["seconds"].mean()),
                     "wall s (max)": fmt(group["seconds"].max()), "CPU s (total)": fmt(group["cpu_seconds"].sum(min_count=1)),
                     "peak RSS MiB (max)": fmt(group["max_rss_mb"].max(), 0)})
    return Table("Time and memory per stage", pd.DataFrame(rows),
                 "Measured by Snakemake's `benchmark:` directive for the jobs that ran (wall and CPU seconds, "
                 "peak resident memory of the job).", level=2, align=("left", "left") + ("right",) * 6)


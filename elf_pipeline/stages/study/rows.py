"""Tables of the empirical study (``elf_pipeline.stages.study``, ``elf_pipeline.stages.study.ablation``): the result
rows of one architecture under one evaluation, their statistics over seeds, the synthetic set they
share, and the study's Markdown pages."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from elf_pipeline.infra.errors import ArtifactError

# The result-row columns every study reads (checked against runs.schema.yaml when read).
STUDY_COLUMNS = ("arch", "evaluation", "seed", "test_acc")


def cell(rows: pd.DataFrame, arch: str, evaluation: str) -> pd.DataFrame:
    """The rows of ``arch`` under ``evaluation``; none: an error naming both."""
    found = rows[(rows["arch"] == arch) & (rows["evaluation"] == evaluation)]
    if found.empty:
        raise ArtifactError(f"study: no result rows for architecture {arch!r} under evaluation {evaluation!r}")
    return found


def cell_stats(rows: pd.DataFrame, arch: str, evaluation: str) -> dict[str, object]:
    """Mean and std (ddof 1; 0 for one seed) of the test accuracy, the seeds, and whether an adapter was used."""
    found = cell(rows, arch, evaluation)
    acc = found["test_acc"].astype(float)
    adapter = bool(found["adapter"].fillna(False).astype(bool).any()) if "adapter" in found else False
    return {"acc": acc.mean(), "std": acc.std(ddof=1) if len(acc) > 1 else 0.0, "seeds": len(acc), "adapter": adapter}


def context(rows: pd.DataFrame) -> str:
    """The synthetic set the rows share, e.g. ``dataset digits, method random, ipc 2``."""
    parts = []
    for column in ("dataset", "method", "ipc"):
        if column in rows and rows[column].nunique() == 1:
            parts.append(f"{column} {rows[column].iloc[0]}")
    return ", ".join(parts)


def _percent(value: object) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return "–" if math.isnan(value) else f"{value * 100:.1f}"
    return str(value)


def markdown_page(frame: pd.DataFrame, title: str, lines: list[str],
                  prefixes: tuple[str, ...] = ("acc_", "std_", "gap_", "adapter_")) -> str:
    """A Markdown page: title, lines, the table with the columns starting with ``prefixes`` in points."""
    shown = frame.copy()
    for column in shown.columns:
        if column.startswith(prefixes):
            shown[column] = shown[column].map(_percent)
    return "\n".join([f"# {title}", "", *lines, "", shown.to_markdown(index=False), ""])

"""The report's numbers: accuracy as mean ± std over seeds, the baseline evaluation, the order of
the architectures, and the gap closed per architecture (defined in ``elf_pipeline.report``)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from elf_pipeline.report.schema import KEYS

GAP_EPS = 0.005  # 0.5 accuracy points: below this the same-arch/arch gap is treated as no gap
RANDOM_METHOD = "random"
DEFAULT_DISTILL_ARCH = "convnet"
MISSING = "–"


def mean_std(values: pd.Series) -> str:
    """Accuracy in percent as ``mean ± std`` over seeds (std of one seed shown as 0.0)."""
    percent = values * 100
    std = percent.std(ddof=1) if len(percent) > 1 else 0.0
    return f"{percent.mean():.1f} ± {std:.1f}"


def baseline_evaluation(runs: pd.DataFrame) -> str | None:
    """The evaluation the others are compared with: ``baseline`` if present, else the first plain
    (``loss_mode == task``) evaluation, else none."""
    evaluations = list(dict.fromkeys(runs["evaluation"]))
    if "baseline" in evaluations:
        return "baseline"
    if "loss_mode" in runs:
        plain = runs.loc[runs["loss_mode"] == "task", "evaluation"]
        if len(plain):
            return str(plain.iloc[0])
    return None


def ordered(values: Iterable) -> list:
    """``values`` without repeats, in the order they first appear."""
    return list(dict.fromkeys(values))


def arch_order(runs: pd.DataFrame, distill_archs: dict[str, str] | None = None) -> list[str]:
    """Architectures for table columns and figure groups: the distillation architecture(s) first,
    then the others in the order they appear."""
    archs = ordered(runs["arch"])
    first = [a for a in ordered((distill_archs or {}).values() or [DEFAULT_DISTILL_ARCH]) if a in archs]
    return first + [a for a in archs if a not in first]


def gap_closed(runs: pd.DataFrame, distill_archs: dict[str, str] | None = None, baseline: str | None = None) -> pd.DataFrame:
    """Fraction of the cross-architecture gap each evaluation closes, per synthetic set and arch.

    Columns: dataset, method, ipc, evaluation, arch, same_arch, baseline_acc, evaluation_acc,
    same_arch_acc, gap_closed (NaN where undefined: missing cells, the same-arch column itself, or
    a gap of at most ``GAP_EPS``).
    """
    distill_archs = distill_archs or {}
    baseline = baseline if baseline is not None else baseline_evaluation(runs)
    columns = ["dataset", "method", "ipc", "evaluation", "arch", "same_arch", "baseline_acc", "evaluation_acc",
               "same_arch_acc", "gap_closed"]
    if baseline is None:
        return pd.DataFrame(columns=columns)
    means = runs.groupby(KEYS)["test_acc"].mean()
    others = [e for e in ordered(runs["evaluation"]) if e != baseline]
    archs = arch_order(runs, distill_archs)
    rows = []
    for (dataset, method, ipc), _ in runs.groupby(["dataset", "method", "ipc"], sort=True):
        same_arch = distill_archs.get(method, DEFAULT_DISTILL_ARCH)
        same_arch_acc = means.get((dataset, method, ipc, same_arch, baseline), np.nan)
        for evaluation in others:
            for arch in archs:
                if arch == same_arch:
                    continue
                base = means.get((dataset, method, ipc, arch, baseline), np.nan)
                value = means.get((dataset, method, ipc, arch, evaluation), np.nan)
                gap = same_arch_acc - base
                closed = (value - base) / gap if np.isfinite(gap) and gap > GAP_EPS and np.isfinite(value) else np.nan
                rows.append([dataset, method, ipc, evaluation, arch, same_arch, base, value, same_arch_acc, closed])
    return pd.DataFrame(rows, columns=columns)


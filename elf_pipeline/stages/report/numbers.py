"""The report's numbers: accuracy as mean ± std over seeds, the baseline evaluation, the order of
the architectures, the gap closed per architecture (defined in ``elf_pipeline.stages.report``), and the
uncertainty of each effect: the paired difference per seed (the same seed with and without the
evaluation), its mean ± std and 95 % t-interval over seeds."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from elf_pipeline.stages.report.conformance import KEYS

GAP_EPS = 0.005  # 0.5 accuracy points: below this the same-arch/arch gap is treated as no gap
RANDOM_METHOD = "random"
DEFAULT_DISTILL_ARCH = "convnet"
MISSING = "–"
CONFIDENCE = 0.95
NOISE_MARK = "~"  # a Δ whose 95 % interval includes 0: not distinguishable from seed noise


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


def t_interval(values: Iterable[float], confidence: float = CONFIDENCE) -> tuple[float, float, float, float]:
    """(mean, std, low, high) of ``values``: the two-sided Student-t interval of the mean (NaN bounds
    and std for fewer than two values)."""
    values = np.asarray(list(values), dtype=float)
    if len(values) == 0:
        return (np.nan,) * 4
    mean = float(values.mean())
    if len(values) < 2:
        return mean, np.nan, np.nan, np.nan
    from scipy.stats import t

    std = float(values.std(ddof=1))
    half = float(t.ppf(0.5 + confidence / 2, len(values) - 1)) * std / np.sqrt(len(values))
    return mean, std, mean - half, mean + half


DELTA_COLUMNS = ["dataset", "method", "ipc", "arch", "evaluation", "seeds", "delta", "delta_std", "delta_low",
                 "delta_high", "distinguishable"]


def paired_deltas(runs: pd.DataFrame, baseline: str | None = None) -> pd.DataFrame:
    """Per synthetic set, architecture and non-baseline evaluation: the paired difference of test
    accuracy (evaluation row minus baseline row of the same seed), its mean, std and 95 % t-interval
    over the seeds both have (``seeds``), and ``distinguishable`` (False where the interval includes 0,
    None without an interval). Without a common seed, ``delta`` is the difference of the means."""
    baseline = baseline if baseline is not None else baseline_evaluation(runs)
    if baseline is None or runs.empty:
        return pd.DataFrame(columns=DELTA_COLUMNS)
    cell = ["dataset", "method", "ipc", "arch"]
    base = runs[runs["evaluation"] == baseline]
    rows = []
    for evaluation in [e for e in ordered(runs["evaluation"]) if e != baseline]:
        own = runs[runs["evaluation"] == evaluation]
        for key, values in own.groupby(cell, sort=True):
            reference = base[(base[cell] == pd.Series(key, index=cell)).all(axis=1)]
            if reference.empty:
                continue
            paired = values.merge(reference, on=[*cell, "seed"], suffixes=("", "_base"))
            differences = paired["test_acc"] - paired["test_acc_base"]
            if len(differences):
                mean, std, low, high = t_interval(differences)
            else:
                mean, std, low, high = values["test_acc"].mean() - reference["test_acc"].mean(), np.nan, np.nan, np.nan
            known = np.isfinite(low) and np.isfinite(high)
            rows.append([*key, evaluation, len(differences), mean, std, low, high,
                         bool(low > 0 or high < 0) if known else None])
    return pd.DataFrame(rows, columns=DELTA_COLUMNS)


def delta_cell(delta: pd.Series) -> str:
    """A paired Δ in points: ``+1.2 ± 0.8 [−0.5, +2.9] ~`` (mean ± std over seeds, 95 % interval,
    ``~`` where it includes 0), or only the mean where there is no interval."""
    if not np.isfinite(delta["delta"]):
        return MISSING
    text = f"{delta['delta'] * 100:+.1f}"
    if not (np.isfinite(delta["delta_low"]) and np.isfinite(delta["delta_high"])):
        return text
    text += f" ± {delta['delta_std'] * 100:.1f} [{delta['delta_low'] * 100:+.1f}, {delta['delta_high'] * 100:+.1f}]"
    return text + ("" if delta["delta_low"] > 0 or delta["delta_high"] < 0 else f" {NOISE_MARK}")


def gap_closed(runs: pd.DataFrame, distill_archs: dict[str, str] | None = None, baseline: str | None = None) -> pd.DataFrame:
    """Fraction of the cross-architecture gap each evaluation closes, per synthetic set and arch.

    Columns: dataset, method, ipc, evaluation, arch, same_arch, baseline_acc, evaluation_acc,
    same_arch_acc, gap_closed (NaN where undefined: missing cells, the same-arch column itself, or
    a gap of at most ``GAP_EPS``), and gap_low / gap_high: the 95 % interval of the paired Δ over
    seeds (``paired_deltas``) divided by the gap (whose own spread it leaves out); NaN without one.
    """
    distill_archs = distill_archs or {}
    baseline = baseline if baseline is not None else baseline_evaluation(runs)
    columns = ["dataset", "method", "ipc", "evaluation", "arch", "same_arch", "baseline_acc", "evaluation_acc",
               "same_arch_acc", "gap_closed", "gap_low", "gap_high"]
    if baseline is None:
        return pd.DataFrame(columns=columns)
    means = runs.groupby(KEYS)["test_acc"].mean()
    deltas = paired_deltas(runs, baseline).set_index(KEYS)
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
                defined = np.isfinite(gap) and gap > GAP_EPS and np.isfinite(value)
                closed = (value - base) / gap if defined else np.nan
                low = high = np.nan
                if defined and (dataset, method, ipc, arch, evaluation) in deltas.index:
                    delta = deltas.loc[(dataset, method, ipc, arch, evaluation)]
                    low, high = delta["delta_low"] / gap, delta["delta_high"] / gap
                rows.append([dataset, method, ipc, evaluation, arch, same_arch, base, value, same_arch_acc, closed, low,
                             high])
    return pd.DataFrame(rows, columns=columns)


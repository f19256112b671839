"""The report's tables: per synthetic set every evaluation, per dataset and IPC the paper layout
(methods x architectures, reference rows first) and the gap closed, and extra tables from files."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

import numpy as np
import pandas as pd

from elf_pipeline.artifacts.choice import choice_table
from elf_pipeline.artifacts.tables import read_table
from elf_pipeline.stages.report.conformance import KEYS, empty_table
from elf_pipeline.stages.report.document import Table
from elf_pipeline.stages.report.numbers import (
    GAP_EPS,
    MISSING,
    RANDOM_METHOD,
    arch_order,
    baseline_evaluation,
    delta_cell,
    gap_closed,
    mean_std,
    ordered,
    paired_deltas,
)


def summary_tables(runs: pd.DataFrame, baseline: str = "baseline") -> list[tuple[str, str]]:
    """One (title, markdown table) per dataset/method/IPC: architectures x evaluations, with Δ vs baseline."""
    return [(table.title, table.markdown()) for table in detail_tables(runs, baseline)]


def detail_tables(runs: pd.DataFrame, baseline: str = "baseline") -> list[Table]:
    tables = []
    evaluations = ordered(runs["evaluation"])
    others = [e for e in evaluations if e != baseline]
    archs = ordered(runs["arch"])
    deltas = paired_deltas(runs, baseline).set_index(KEYS) if baseline in evaluations else None
    for (dataset, method, ipc), group in runs.groupby(["dataset", "method", "ipc"], sort=True):
        rows = []
        for arch in archs:
            cell = group[group["arch"] == arch]
            if cell.empty:
                continue
            row = {"arch": arch}
            base = cell[cell["evaluation"] == baseline]["test_acc"]
            if baseline in evaluations:
                row[baseline] = mean_std(base) if len(base) else MISSING
            for name in others:
                values = cell[cell["evaluation"] == name]["test_acc"]
                row[name] = mean_std(values) if len(values) else MISSING
                if len(values) and len(base):
                    key = (dataset, method, ipc, arch, name)
                    row[f"Δ {name}"] = (delta_cell(deltas.loc[key]) if deltas is not None and key in deltas.index
                                        else f"{(values.mean() - base.mean()) * 100:+.1f}")
                adapted = cell[cell["evaluation"] == name]["adapter"]
                if len(adapted) and bool(adapted.any()):
                    row[name] += " ᵃ"
            rows.append(row)
        tables.append(Table(f"{dataset} · {method} · IPC {ipc}", pd.DataFrame(rows)))
    return tables


def _cell(base: pd.Series | None, value: pd.Series | None) -> str:
    """``b ± s → e ± s (+Δ)``, or the one side that exists."""
    has_base, has_value = base is not None and len(base) > 0, value is not None and len(value) > 0
    if has_base and has_value:
        return f"{mean_std(base)} → {mean_std(value)} ({(value.mean() - base.mean()) * 100:+.1f})"
    if has_base:
        return mean_std(base)
    if has_value:
        return mean_std(value)
    return MISSING


def _method_label(method: str) -> str:
    return "random real subset (reference)" if method == RANDOM_METHOD else method


FULL_LABEL = "full real data (upper bound)"


def _reference_note(reference: pd.DataFrame) -> str:
    parts = []
    for (used, total, epochs), group in reference.groupby(["train_images", "train_images_total", "train_epochs"]):
        amount = "all" if used >= total else f"{used:,} of the"
        parts.append(f"{amount} {total:,} real training images, {epochs} epochs, "
                     f"{group['seed'].nunique()} seed{'s' if group['seed'].nunique() > 1 else ''}")
    return f"{FULL_LABEL}: each architecture trained on {'; '.join(parts)}, same training protocol otherwise."


def reference_notes(runs: pd.DataFrame, reference: pd.DataFrame | None, dataset: str) -> list[str]:
    """What the reference rows of a dataset's tables are, or why one is missing."""
    full = reference[reference["dataset"] == dataset] if reference is not None else empty_table("reference")
    notes = [_reference_note(full) if not full.empty else
             "No full-real-data row: `reference.enabled` is false or no reference results were given."]
    if RANDOM_METHOD in set(runs.loc[runs["dataset"] == dataset, "method"]):
        notes.append("random real subset (reference): real training images drawn at random, the same number per "
                     "class as the IPC.")
    else:
        notes.append("No random-real-subset row: add `random: {}` to `distillation.methods` to get one.")
    return notes


def paper_tables(runs: pd.DataFrame, reference: pd.DataFrame | None = None, baseline: str | None = None,
                 distill_archs: dict[str, str] | None = None) -> list[tuple[str, Table]]:
    """Per dataset and IPC (and per non-baseline evaluation): methods × architectures in the layout
    of dataset-distillation papers, reference rows first. Returns (dataset, table) pairs."""
    reference = reference if reference is not None else empty_table("reference")
    baseline = baseline if baseline is not None else baseline_evaluation(runs)
    others = [e for e in ordered(runs["evaluation"]) if e != baseline] or [None]
    archs = arch_order(runs, distill_archs)
    out = []
    for dataset, data_runs in runs.groupby("dataset", sort=True):
        full = reference[reference["dataset"] == dataset]
        methods = ordered(data_runs["method"])
        methods = [m for m in methods if m == RANDOM_METHOD] + [m for m in methods if m != RANDOM_METHOD]
        for ipc in sorted(data_runs["ipc"].unique()):
            cell_runs = data_runs[data_runs["ipc"] == ipc]
            for evaluation in others:
                rows = []
                if not full.empty:
                    rows.append({"method": FULL_LABEL, **{arch: _cell(None, full[full["arch"] == arch]["test_acc"])
                                                          for arch in archs}})
                for method in methods:
                    row = {"method": _method_label(method)}
                    for arch in archs:
                        cell = cell_runs[(cell_runs["method"] == method) & (cell_runs["arch"] == arch)]
                        base = cell[cell["evaluation"] == baseline]["test_acc"] if baseline else None
                        value = cell[cell["evaluation"] == evaluation]["test_acc"] if evaluation else None
                        row[arch] = _cell(base, value)
                    rows.append(row)
                if evaluation and baseline:
                    title = f"IPC {ipc} · {baseline} → {evaluation}"
                else:
                    title = f"IPC {ipc} · {evaluation or baseline}"
                out.append((dataset, Table(title, pd.DataFrame(rows))))
    return out


def gap_tables(runs: pd.DataFrame, distill_archs: dict[str, str] | None = None,
               baseline: str | None = None) -> list[tuple[str, Table]]:
    """Per dataset and IPC: gap closed (%) by each non-baseline evaluation, methods × architectures."""
    gaps = gap_closed(runs, distill_archs, baseline)
    out = []
    for (dataset, ipc), group in gaps.groupby(["dataset", "ipc"], sort=True):
        archs = ordered(group["arch"])
        rows = []
        group = pd.concat([group[group["method"] == RANDOM_METHOD], group[group["method"] != RANDOM_METHOD]])
        for (method, evaluation), cells in group.groupby(["method", "evaluation"], sort=False):
            row = {"method": _method_label(method), "evaluation": evaluation, "same-arch": cells["same_arch"].iloc[0]}
            for arch in archs:
                found = cells[cells["arch"] == arch]
                row[arch] = _gap_cell(found.iloc[0]) if len(found) else MISSING
            rows.append(row)
        note = ("Gap closed = (evaluation − baseline) / (same-arch baseline − baseline) per architecture on the same "
                "synthetic set, where same-arch is the distillation architecture trained on it under baseline; "
                f"{MISSING} where undefined (no gap above {GAP_EPS * 100:.1f} points, or a missing cell). "
                "[low, high]: the 95 % t-interval of the paired Δ over seeds divided by the gap (the gap's own "
                "spread left out), shown with two seeds or more.")
        out.append((dataset, Table(f"Gap closed · IPC {ipc}", pd.DataFrame(rows), note)))
    return out




def _gap_cell(gap: pd.Series) -> str:
    """``42% [10, 74]``: gap closed with its interval (percent), or the point alone, or undefined."""
    if not np.isfinite(gap["gap_closed"]):
        return MISSING
    text = f"{gap['gap_closed'] * 100:.0f}%"
    if np.isfinite(gap["gap_low"]) and np.isfinite(gap["gap_high"]):
        text += f" [{gap['gap_low'] * 100:.0f}, {gap['gap_high'] * 100:.0f}]"
    return text


def selection_table(choices: list[dict]) -> Table | None:
    """The Selection table: per dataset, synthetic set and architecture, every candidate of
    ``students.select`` with its validation accuracy and the one chosen (None without choices)."""
    if not choices:
        return None
    frame = choice_table(choices).sort_values(["dataset", "method", "ipc", "arch"], kind="stable")
    evaluations = sorted({str(choice.get("evaluation")) for choice in choices})
    note = (f"Chosen on the validation accuracy (%, mean over the seeds shown) of {', '.join(evaluations)} trained at "
            "each candidate, the best kept (ties: the first in config order); every evaluation of that student "
            "trains at it (rows: `selected`). The test set is never read.")
    return Table("Selection", frame.reset_index(drop=True), note, level=2)


def _format_value(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return str(value)


def extra_tables(paths: Iterable[str | os.PathLike]) -> list[Table]:
    """Tables appended after the main ones, one per optional Parquet input (e.g. empirical-study
    targets), in the given order: titled by the file's ``elf_title`` metadata (else its name),
    ``elf_note`` shown under it, every column as written."""
    tables = []
    for path in paths:
        title, note, frame = read_table(path, "extra table")
        frame = frame.astype(object).apply(lambda column: column.map(_format_value))
        tables.append(Table(title, frame, note, level=2))
    return tables


def teacher_lines(runs: pd.DataFrame) -> list[str]:
    if "teacher_arch" not in runs or runs["teacher_arch"].isna().all():
        return []
    teachers = runs.dropna(subset=["teacher_arch"]).groupby(["dataset", "teacher"], sort=True)["teacher_test_acc"].first()
    return [f"{dataset}: teacher `{teacher}` test accuracy {acc * 100:.1f}%" for (dataset, teacher), acc in teachers.items()]


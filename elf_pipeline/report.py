"""Aggregate per-job Parquet files into ``runs.parquet`` and a Markdown summary."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from elf_pipeline.io import ArtifactError, atomic_path

KEYS = ["dataset", "method", "ipc", "arch", "evaluation"]


def collect(paths: list[str | os.PathLike]) -> pd.DataFrame:
    frames = []
    for path in paths:
        try:
            frames.append(pd.read_parquet(path))
        except Exception as err:
            raise ArtifactError(f"{path}: unreadable result file ({type(err).__name__}: {err})") from None
    if not frames:
        raise ArtifactError("no student result files to report")
    runs = pd.concat(frames, ignore_index=True)
    return runs.sort_values(KEYS + ["seed"], kind="stable").reset_index(drop=True)


def mean_std(values: pd.Series) -> str:
    """Accuracy in percent as ``mean ± std`` over seeds (std of one seed shown as 0.0)."""
    percent = values * 100
    std = percent.std(ddof=1) if len(percent) > 1 else 0.0
    return f"{percent.mean():.1f} ± {std:.1f}"


def summary_tables(runs: pd.DataFrame, baseline: str = "baseline") -> list[tuple[str, str]]:
    """One (title, markdown table) per dataset/method/IPC: architectures x evaluations, with Δ vs baseline."""
    tables = []
    evaluations = list(dict.fromkeys(runs["evaluation"]))
    others = [e for e in evaluations if e != baseline]
    arch_order = list(dict.fromkeys(runs["arch"]))
    for (dataset, method, ipc), group in runs.groupby(["dataset", "method", "ipc"], sort=True):
        rows = []
        for arch in arch_order:
            cell = group[group["arch"] == arch]
            if cell.empty:
                continue
            row = {"arch": arch}
            base = cell[cell["evaluation"] == baseline]["test_acc"]
            if baseline in evaluations:
                row[baseline] = mean_std(base) if len(base) else "–"
            for name in others:
                values = cell[cell["evaluation"] == name]["test_acc"]
                row[name] = mean_std(values) if len(values) else "–"
                if len(values) and len(base):
                    row[f"Δ {name}"] = f"{(values.mean() - base.mean()) * 100:+.1f}"
                adapted = cell[cell["evaluation"] == name]["adapter"]
                if len(adapted) and bool(adapted.any()):
                    row[name] += " ᵃ"
            rows.append(row)
        title = f"{dataset} · {method} · IPC {ipc}"
        tables.append((title, tabulate(pd.DataFrame(rows).fillna("–"), headers="keys", tablefmt="github",
                                       showindex=False, disable_numparse=True)))
    return tables


def teacher_lines(runs: pd.DataFrame) -> list[str]:
    if "teacher_arch" not in runs or runs["teacher_arch"].isna().all():
        return []
    teachers = runs.dropna(subset=["teacher_arch"]).groupby(["dataset", "teacher"], sort=True)["teacher_test_acc"].first()
    return [f"- {dataset}: teacher `{teacher}` test accuracy {acc * 100:.1f}%" for (dataset, teacher), acc in teachers.items()]


def render_summary(runs: pd.DataFrame) -> str:
    seeds = runs.groupby(KEYS)["seed"].nunique()
    lines = ["# ELF study summary", "",
             f"Test accuracy (%) on the full real test set, mean ± std over {seeds.min()}–{seeds.max()} seeds; "
             "Δ = evaluation − baseline in points; ᵃ = a learned adapter bridged student and teacher feature shapes.", ""]
    teachers = teacher_lines(runs)
    if teachers:
        lines += ["Teachers:", *teachers, ""]
    for title, table in summary_tables(runs):
        lines += [f"## {title}", "", table, ""]
    protocol = runs.iloc[0]
    lines += ["## Protocol", "",
              f"Students: SGD lr {protocol.get('train_lr')}, momentum {protocol.get('train_momentum')}, "
              f"weight decay {protocol.get('train_weight_decay')}, batch {protocol.get('train_batch_size')}, "
              f"{sorted(runs['train_epochs'].unique().tolist())} epochs, lr × {protocol.get('train_lr_decay')} after "
              f"{protocol.get('train_lr_decay_at')} of training, augmentation {protocol.get('dsa_strategy')}. "
              f"Every row of runs.parquet carries its full protocol.", ""]
    return "\n".join(lines)


def write_report(inputs: list[str | os.PathLike], runs_out: str | os.PathLike, summary_out: str | os.PathLike) -> pd.DataFrame:
    runs = collect(inputs)
    with atomic_path(runs_out) as tmp:
        runs.to_parquet(tmp, index=False)
    with atomic_path(summary_out) as tmp:
        Path(tmp).write_text(render_summary(runs))
    return runs

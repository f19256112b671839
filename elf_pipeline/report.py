"""Aggregate per-job Parquet files into ``runs.parquet``, ``reference.parquet``, a Markdown summary
and the same tables as HTML for ``snakemake --report``.

Tables follow the dataset-distillation papers: per dataset and IPC, methods as rows and student
architectures as columns, each cell ``baseline → ELF (Δ)`` as mean ± std over seeds, with two
reference rows: the student trained on the full real training set (upper bound) and the student
trained on a random real subset of the same IPC (the ``random`` method).

Gap closed, per architecture ``a`` (``c`` = the distillation architecture, e.g. ``convnet``):

    gap_closed(a) = (acc_ELF(a) − acc_baseline(a)) / (acc_baseline(c) − acc_baseline(a))

all on the same synthetic set (dataset, method, IPC), accuracies averaged over seeds. It is left
undefined where the denominator is at most ``GAP_EPS`` (no cross-architecture gap to close).
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from elf_pipeline.io import ArtifactError, atomic_path

KEYS = ["dataset", "method", "ipc", "arch", "evaluation"]
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "runs.schema.yaml"
GAP_EPS = 0.005  # 0.5 accuracy points: below this the same-arch/arch gap is treated as no gap
RANDOM_METHOD = "random"
DEFAULT_DISTILL_ARCH = "convnet"
MISSING = "–"


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # string | int | float | bool
    required: bool
    nullable: bool
    description: str


@cache
def load_schema(table: str = "runs", path: str | None = None) -> dict[str, Column]:
    """Columns of one table of ``workflow/schemas/runs.schema.yaml``, in file order."""
    import yaml

    schema_path = Path(path) if path else SCHEMA_PATH
    try:
        tables = yaml.safe_load(schema_path.read_text())["tables"]
        columns = tables[table]["columns"]
    except (OSError, KeyError, TypeError) as err:
        raise ArtifactError(f"{schema_path}: cannot read the column schema of table {table!r} ({err})") from None
    return {name: Column(name, spec["type"], bool(spec["required"]), bool(spec["nullable"]), spec.get("description", ""))
            for name, spec in columns.items()}


def _non_null(series: pd.Series) -> pd.Series:
    return series[series.notna()]


def _coerce(series: pd.Series, column: Column, source: str) -> pd.Series:
    """Return ``series`` in the column's dtype, or raise naming the column, the file and the problem."""
    values = _non_null(series)

    def wrong(detail: str) -> ArtifactError:
        return ArtifactError(f"{source}: column {column.name!r} must be {column.type} ({column.description}); {detail}")

    if column.type == "string":
        if not all(isinstance(v, str) for v in values):
            bad = next(v for v in values if not isinstance(v, str))
            raise wrong(f"found {type(bad).__name__} value {bad!r}")
        return series.astype(pd.StringDtype())
    if column.type == "bool":
        if pd.api.types.is_bool_dtype(series.dtype):
            return series
        if not all(isinstance(v, (bool, np.bool_)) for v in values):
            raise wrong(f"got dtype {series.dtype}")
        return series.astype(bool) if len(values) == len(series) else series.astype("boolean")
    numeric = pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)
    if not numeric:
        if not all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
                   for v in values):
            raise wrong(f"got dtype {series.dtype}")
        series = pd.to_numeric(series.astype(object).where(series.notna(), np.nan))
    if column.type == "float":
        return series.astype(np.float64)
    if column.type == "int":
        if pd.api.types.is_integer_dtype(series.dtype):
            return series.astype(np.int64)
        finite = _non_null(series)
        if len(finite) != len(series) or not np.all(np.mod(finite.to_numpy(dtype=np.float64), 1) == 0):
            raise wrong(f"got non-integer values (dtype {series.dtype})")
        return series.astype(np.int64)
    raise ArtifactError(f"{SCHEMA_PATH}: column {column.name!r} has unknown type {column.type!r}")


NULLABLE_DTYPES = {"string": pd.StringDtype(), "int": "Int64", "float": np.float64, "bool": "boolean"}


def conform(frame: pd.DataFrame, table: str = "runs", source: str = "runs") -> pd.DataFrame:
    """Check ``frame`` against the schema: required columns present, dtypes right, no nulls where
    not allowed. Optional columns that are absent are added as nulls. Extra columns are kept."""
    frame = frame.copy()
    for name, column in load_schema(table).items():
        if name not in frame.columns:
            if column.required:
                raise ArtifactError(f"{source}: missing required column {name!r} ({column.type}: {column.description})")
            frame[name] = pd.Series([None] * len(frame), index=frame.index, dtype=NULLABLE_DTYPES[column.type])
            continue
        if column.type == "int" and frame[name].isna().any() and column.nullable:
            frame[name] = frame[name].astype("Int64")
            continue
        frame[name] = _coerce(frame[name], column, source)
        if not column.nullable and frame[name].isna().any():
            raise ArtifactError(f"{source}: column {name!r} has {int(frame[name].isna().sum())} missing values "
                                f"({column.description})")
    return frame


def empty_table(table: str) -> pd.DataFrame:
    """A zero-row frame with every column of ``table`` in its dtype."""
    dtypes = {"string": pd.StringDtype(), "int": np.int64, "float": np.float64, "bool": bool}
    return pd.DataFrame({name: pd.Series(dtype=dtypes[c.type]) for name, c in load_schema(table).items()})


# --------------------------------------------------------------------------- collecting


def _read(path: str | os.PathLike) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as err:
        raise ArtifactError(f"{path}: unreadable result file ({type(err).__name__}: {err})") from None


def collect(paths: list[str | os.PathLike], table: str = "runs") -> pd.DataFrame:
    """Read per-job result files, check each against the schema, and concatenate them."""
    frames = [conform(_read(path), table, str(path)) for path in paths]
    if not frames:
        raise ArtifactError("no student result files to report")
    runs = pd.concat(frames, ignore_index=True)
    return runs.sort_values(KEYS + ["seed"], kind="stable").reset_index(drop=True)


def collect_reference(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Full-real-data reference rows (empty frame when there are none)."""
    frames = [conform(_read(path), "reference", str(path)) for path in paths]
    if not frames:
        return empty_table("reference")
    reference = pd.concat(frames, ignore_index=True)
    return reference.sort_values(["dataset", "arch", "seed"], kind="stable").reset_index(drop=True)


def read_runs(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a written ``runs.parquet``."""
    return conform(_read(path), "runs", str(path))


# --------------------------------------------------------------------------- numbers


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


def _ordered(values: Iterable) -> list:
    return list(dict.fromkeys(values))


def arch_order(runs: pd.DataFrame, distill_archs: dict[str, str] | None = None) -> list[str]:
    """Architectures for table columns and figure groups: the distillation architecture(s) first,
    then the others in the order they appear."""
    archs = _ordered(runs["arch"])
    first = [a for a in _ordered((distill_archs or {}).values() or [DEFAULT_DISTILL_ARCH]) if a in archs]
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
    others = [e for e in _ordered(runs["evaluation"]) if e != baseline]
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


# --------------------------------------------------------------------------- document model


@dataclass
class Table:
    title: str
    frame: pd.DataFrame  # cells already formatted as strings
    note: str = ""
    level: int = 3
    align: tuple[str, ...] | None = None  # Markdown alignment per column (default: all left)

    def markdown(self) -> str:
        return tabulate(self.frame.fillna(MISSING), headers="keys", tablefmt="github", showindex=False,
                        disable_numparse=True, colalign=self.align)

    def html(self) -> str:
        return self.frame.fillna(MISSING).to_html(index=False, escape=True, border=0, classes="results")


@dataclass
class Document:
    """Headings, paragraphs and tables, rendered to Markdown (summary.md) or HTML (summary.html)."""

    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", (level, text)))

    def paragraph(self, text: str) -> None:
        if text:
            self.blocks.append(("paragraph", text))

    def bullets(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("bullets", items))

    def table(self, table: Table) -> None:
        self.blocks.append(("table", table))

    def markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        for kind, value in self.blocks:
            if kind == "heading":
                level, text = value
                lines += [f"{'#' * level} {text}", ""]
            elif kind == "paragraph":
                lines += [value, ""]
            elif kind == "bullets":
                lines += [f"- {item}" for item in value] + [""]
            else:
                lines += [f"{'#' * value.level} {value.title}", "", value.markdown(), ""]
                if value.note:
                    lines += [value.note, ""]
        return "\n".join(lines)

    def html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for kind, value in self.blocks:
            if kind == "heading":
                level, text = value
                body.append(f"<h{level}>{html.escape(text)}</h{level}>")
            elif kind == "paragraph":
                body.append(f"<p>{_inline_html(value)}</p>")
            elif kind == "bullets":
                body.append("<ul>" + "".join(f"<li>{_inline_html(item)}</li>" for item in value) + "</ul>")
            else:
                body.append(f"<h{value.level}>{html.escape(value.title)}</h{value.level}>")
                body.append(value.html())
                if value.note:
                    body.append(f"<p class='note'>{_inline_html(value.note)}</p>")
        style = ("body{font-family:sans-serif;margin:1.5em;max-width:80em}table.results{border-collapse:collapse;"
                 "margin:.5em 0}table.results td,table.results th{padding:.2em .6em;border-bottom:1px solid #ccc;"
                 "text-align:right;white-space:nowrap}table.results td:first-child,table.results th:first-child"
                 "{text-align:left}p.note{color:#555;font-size:.9em}code{background:#f3f3f3}")
        return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _inline_html(text: str) -> str:
    """Escape, then turn Markdown ``code`` spans into <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))


# --------------------------------------------------------------------------- tables


def summary_tables(runs: pd.DataFrame, baseline: str = "baseline") -> list[tuple[str, str]]:
    """One (title, markdown table) per dataset/method/IPC: architectures x evaluations, with Δ vs baseline."""
    return [(table.title, table.markdown()) for table in detail_tables(runs, baseline)]


def detail_tables(runs: pd.DataFrame, baseline: str = "baseline") -> list[Table]:
    tables = []
    evaluations = _ordered(runs["evaluation"])
    others = [e for e in evaluations if e != baseline]
    arch_order = _ordered(runs["arch"])
    for (dataset, method, ipc), group in runs.groupby(["dataset", "method", "ipc"], sort=True):
        rows = []
        for arch in arch_order:
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
                    row[f"Δ {name}"] = f"{(values.mean() - base.mean()) * 100:+.1f}"
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
    others = [e for e in _ordered(runs["evaluation"]) if e != baseline] or [None]
    archs = arch_order(runs, distill_archs)
    out = []
    for dataset, data_runs in runs.groupby("dataset", sort=True):
        full = reference[reference["dataset"] == dataset]
        methods = _ordered(data_runs["method"])
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
        archs = _ordered(group["arch"])
        rows = []
        group = pd.concat([group[group["method"] == RANDOM_METHOD], group[group["method"] != RANDOM_METHOD]])
        for (method, evaluation), cells in group.groupby(["method", "evaluation"], sort=False):
            row = {"method": _method_label(method), "evaluation": evaluation, "same-arch": cells["same_arch"].iloc[0]}
            for arch in archs:
                value = cells.loc[cells["arch"] == arch, "gap_closed"]
                row[arch] = f"{value.iloc[0] * 100:.0f}%" if len(value) and np.isfinite(value.iloc[0]) else MISSING
            rows.append(row)
        note = ("Gap closed = (evaluation − baseline) / (same-arch baseline − baseline) per architecture on the same "
                "synthetic set, where same-arch is the distillation architecture trained on it under baseline; "
                f"{MISSING} where undefined (no gap above {GAP_EPS * 100:.1f} points, or a missing cell).")
        out.append((dataset, Table(f"Gap closed · IPC {ipc}", pd.DataFrame(rows), note)))
    return out


# benchmark folder -> rule, in pipeline order
STAGE_NAMES = {"experts": "train_experts", "distill": "distill", "teachers": "train_teacher",
               "features": "extract_features", "students": "train_student", "full": "train_full"}


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
        rows.append({"dataset": path.parent.parent.name, "stage": STAGE_NAMES.get(path.parent.name, path.parent.name),
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

    order = {stage: rank for rank, stage in enumerate(STAGE_NAMES.values())}
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


# --------------------------------------------------------------------------- extra tables (hook)


def write_extra_table(frame: pd.DataFrame, path: str | os.PathLike, title: str, note: str = "") -> None:
    """Write a table for the report's extra section: a Parquet file whose metadata carries its title."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = {**(table.schema.metadata or {}), b"elf_title": title.encode(), b"elf_note": note.encode()}
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(metadata), tmp)


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
    import pyarrow.parquet as pq

    tables = []
    for path in map(Path, paths):
        try:
            arrow = pq.read_table(path)
        except Exception as err:
            raise ArtifactError(f"{path}: unreadable extra table ({type(err).__name__}: {err})") from None
        metadata = arrow.schema.metadata or {}
        title = metadata.get(b"elf_title", path.stem.encode()).decode()
        note = metadata.get(b"elf_note", b"").decode()
        frame = arrow.to_pandas()
        frame = frame.astype(object).apply(lambda column: column.map(_format_value))
        tables.append(Table(title, frame, note, level=2))
    return tables


# --------------------------------------------------------------------------- summary


def teacher_lines(runs: pd.DataFrame) -> list[str]:
    if "teacher_arch" not in runs or runs["teacher_arch"].isna().all():
        return []
    teachers = runs.dropna(subset=["teacher_arch"]).groupby(["dataset", "teacher"], sort=True)["teacher_test_acc"].first()
    return [f"{dataset}: teacher `{teacher}` test accuracy {acc * 100:.1f}%" for (dataset, teacher), acc in teachers.items()]


def build_document(runs: pd.DataFrame, reference: pd.DataFrame | None = None, benchmarks: pd.DataFrame | None = None,
                   extra: Iterable[Table] = (), distill_archs: dict[str, str] | None = None) -> Document:
    seeds = runs.groupby(KEYS)["seed"].nunique()
    baseline = baseline_evaluation(runs)
    doc = Document("ELF study summary")
    seed_range = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}–{seeds.max()}"
    doc.paragraph(f"Test accuracy (%) on the full real test set, mean ± std over {seed_range} seeds. "
                  f"Cells read `{baseline or 'baseline'} → evaluation (Δ)`, Δ in points; "
                  "ᵃ = a learned adapter bridged student and teacher feature shapes.")
    teachers = teacher_lines(runs)
    if teachers:
        doc.paragraph("Teachers:")
        doc.bullets(teachers)
    papers, gaps = paper_tables(runs, reference, baseline, distill_archs), gap_tables(runs, distill_archs, baseline)
    for dataset in sorted(runs["dataset"].unique()):
        doc.heading(str(dataset), 2)
        doc.bullets(reference_notes(runs, reference, dataset))
        for table in [t for d, t in papers if d == dataset] + [t for d, t in gaps if d == dataset]:
            doc.table(table)
    doc.heading("Every evaluation per synthetic set", 2)
    for table in detail_tables(runs, baseline or "baseline"):
        doc.table(table)
    for table in extra:
        doc.table(table)
    stages = stage_table(benchmarks if benchmarks is not None else read_benchmarks([]))
    if stages is not None:
        doc.table(stages)
    protocol = runs.iloc[0]
    doc.heading("Protocol", 2)
    doc.paragraph(f"Students: SGD lr {protocol.get('train_lr')}, momentum {protocol.get('train_momentum')}, "
                  f"weight decay {protocol.get('train_weight_decay')}, batch {protocol.get('train_batch_size')}, "
                  f"{sorted(runs['train_epochs'].unique().tolist())} epochs, lr × {protocol.get('train_lr_decay')} after "
                  f"{protocol.get('train_lr_decay_at')} of training, augmentation {protocol.get('dsa_strategy')}. "
                  "Every row of runs.parquet carries its full protocol (columns: workflow/schemas/runs.schema.yaml).")
    return doc


def render_summary(runs: pd.DataFrame, reference: pd.DataFrame | None = None, benchmarks: pd.DataFrame | None = None,
                   extra: Iterable[Table] = (), distill_archs: dict[str, str] | None = None) -> str:
    return build_document(runs, reference, benchmarks, extra, distill_archs).markdown()


def write_report(inputs: list[str | os.PathLike], runs_out: str | os.PathLike, summary_out: str | os.PathLike,
                 reference: Iterable[str | os.PathLike] = (), reference_out: str | os.PathLike | None = None,
                 html_out: str | os.PathLike | None = None, benchmarks: Iterable[str | os.PathLike] = (),
                 extra: Iterable[str | os.PathLike] = (), distill_archs: dict[str, str] | None = None) -> pd.DataFrame:
    runs = collect(inputs)
    full = collect_reference(reference)
    doc = build_document(runs, full, read_benchmarks(benchmarks), extra_tables(extra), distill_archs)
    with atomic_path(runs_out) as tmp:
        runs.to_parquet(tmp, index=False)
    if reference_out is not None:
        with atomic_path(reference_out) as tmp:
            full.to_parquet(tmp, index=False)
    with atomic_path(summary_out) as tmp:
        Path(tmp).write_text(doc.markdown())
    if html_out is not None:
        with atomic_path(html_out) as tmp:
            Path(tmp).write_text(doc.html())
    return runs

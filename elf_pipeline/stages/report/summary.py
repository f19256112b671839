"""The report stage: collect the per-job result files, write ``runs.parquet`` and
``reference.parquet``, and the summary as Markdown and HTML."""

from __future__ import annotations

import os
from collections.abc import Iterable

import pandas as pd

from elf_pipeline.artifacts.choice import read_choice
from elf_pipeline.artifacts.tables import write_parquet, write_text
from elf_pipeline.stages.report import ddranking
from elf_pipeline.stages.report.benchmarks import read_benchmarks, stage_table
from elf_pipeline.stages.report.conformance import KEYS, collect, collect_reference
from elf_pipeline.stages.report.document import Document, Table
from elf_pipeline.stages.report.imports import cost_tables, expected_tables, import_tables
from elf_pipeline.stages.report.numbers import NOISE_MARK, baseline_evaluation
from elf_pipeline.stages.report.paper_tables import (
    detail_tables,
    extra_tables,
    gap_tables,
    paper_tables,
    reference_notes,
    selection_table,
    teacher_lines,
)


def build_document(runs: pd.DataFrame, reference: pd.DataFrame | None = None, benchmarks: pd.DataFrame | None = None,
                   extra: Iterable[Table] = (), distill_archs: dict[str, str] | None = None,
                   choices: list[dict] | None = None) -> Document:
    seeds = runs.groupby(KEYS)["seed"].nunique()
    baseline = baseline_evaluation(runs)
    doc = Document("ELF study summary")
    seed_range = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}–{seeds.max()}"
    sizes = sorted(int(n) for n in runs["test_images"].dropna().unique()) if "test_images" in runs else []
    tested = f"on {sizes[0]:,} real test images" if len(sizes) == 1 else "on the real test set"
    doc.paragraph(f"Test accuracy (%) {tested}, mean ± std over {seed_range} seeds. "
                  f"Cells read `{baseline or 'baseline'} → evaluation (Δ)`, Δ in points; "
                  "ᵃ = a learned adapter bridged student and teacher feature shapes. "
                  "In the per-set tables Δ reads `mean ± std [95 % interval]` of the paired difference over seeds "
                  f"(the same seed with and without the evaluation); {NOISE_MARK} = the interval includes 0: not "
                  "distinguishable from seed noise.")
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
    selection = selection_table(choices or [])
    if selection is not None:
        doc.table(selection)
    _ddranking_section(doc, ddranking.scores(runs, reference, baseline or "baseline"))
    doc.heading("Every evaluation per synthetic set", 2)
    for table in detail_tables(runs, baseline or "baseline"):
        doc.table(table)
    for table in extra:
        doc.table(table)
    for table in import_tables(runs) + expected_tables(runs) + cost_tables(runs):
        doc.table(table)
    stages = stage_table(benchmarks if benchmarks is not None else read_benchmarks([]))
    if stages is not None:
        doc.table(stages)
    doc.heading("Protocol", 2)
    doc.paragraph(protocol_line(runs))
    return doc


def setting(runs: pd.DataFrame, column: str) -> str:
    """One training setting over all rows: its most common value, then every other value with the
    architectures (or ``arch evaluation`` pairs) that used it, e.g. ``0.01 (vgg11: 0.005)``."""
    if column not in runs or runs[column].isna().all():
        return "–"
    runs = runs.reset_index(drop=True)
    shown = runs[column].map(lambda v: f"{v:g}" if isinstance(v, float) else str(v)).where(runs[column].notna())
    common = shown.value_counts().idxmax()
    exceptions = []
    for value, rows in runs[shown.notna() & (shown != common)].groupby(shown, sort=True):
        labels = []
        for arch, by_arch in rows.groupby("arch", sort=True):
            if len(by_arch) == int((runs["arch"] == arch).sum()):
                labels.append(str(arch))
            else:
                labels += [f"{arch} {evaluation}" for evaluation in sorted(by_arch["evaluation"].unique())]
        exceptions.append(f"{', '.join(labels)}: {value}")
    return f"{common} ({'; '.join(exceptions)})" if exceptions else common


def protocol_line(runs: pd.DataFrame) -> str:
    """The students' training protocol, with where it differs (e.g. a per-architecture lr)."""
    return (f"Students: SGD lr {setting(runs, 'train_lr')}, momentum {setting(runs, 'train_momentum')}, "
            f"weight decay {setting(runs, 'train_weight_decay')}, batch {setting(runs, 'train_batch_size')}, "
            f"{setting(runs, 'train_epochs')} epochs, lr × {setting(runs, 'train_lr_decay')} after "
            f"{setting(runs, 'train_lr_decay_at')} of training, augmentation {setting(runs, 'dsa_strategy')}. "
            "Every row of runs.parquet carries its full protocol (columns: workflow/schemas/runs.schema.yaml).")


def _ddranking_section(doc: Document, scores: pd.DataFrame) -> None:
    if scores.empty or scores[["hlr", "ior"]].isna().all().all():
        return
    doc.heading("DD-Ranking scores", 2)
    doc.paragraph("Cells read `HLR / IOR / LRS`: hard label recovery (full-data accuracy − the set's baseline "
                  "accuracy, points; lower is better), improvement over random (the evaluation's accuracy − the "
                  "random subset's under the same evaluation, points) and the label-robust score × 100 "
                  "(w = 0.5; docs/reports.md). – where the full-data reference or the random subset is missing.")
    for dataset, frame in ddranking.score_tables(scores):
        doc.table(Table(f"DD-Ranking · {dataset}", frame))


def render_summary(runs: pd.DataFrame, reference: pd.DataFrame | None = None, benchmarks: pd.DataFrame | None = None,
                   extra: Iterable[Table] = (), distill_archs: dict[str, str] | None = None) -> str:
    return build_document(runs, reference, benchmarks, extra, distill_archs).markdown()


def write_report(inputs: list[str | os.PathLike], runs_out: str | os.PathLike, summary_out: str | os.PathLike,
                 reference: Iterable[str | os.PathLike] = (), reference_out: str | os.PathLike | None = None,
                 html_out: str | os.PathLike | None = None, benchmarks: Iterable[str | os.PathLike] = (),
                 extra: Iterable[str | os.PathLike] = (), distill_archs: dict[str, str] | None = None,
                 ddranking_out: str | os.PathLike | None = None,
                 selections: Iterable[str | os.PathLike] = ()) -> pd.DataFrame:
    runs = collect(inputs)
    choices = [read_choice(path) for path in selections]
    full = collect_reference(reference)
    if ddranking_out is not None:
        write_parquet(ddranking.scores(runs, full, baseline_evaluation(runs) or "baseline"), ddranking_out)
    doc = build_document(runs, full, read_benchmarks(benchmarks), extra_tables(extra), distill_archs, choices)
    write_parquet(runs, runs_out)
    if reference_out is not None:
        write_parquet(full, reference_out)
    write_text(doc.markdown(), summary_out)
    if html_out is not None:
        write_text(doc.html(), html_out)
    return runs

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

Modules: ``conformance`` (the result rows against their schema), ``numbers`` (means, gap closed),
``document`` (Markdown/HTML model), ``paper_tables`` (the tables), ``benchmarks`` (time and memory per
stage), ``imports`` (imported sets' checks), ``ddranking`` (DD-Ranking's scores), ``summary`` (the
``report`` command) and ``figures`` (the ``report-results``, ``report-synset`` and ``report-teacher``
figures).
"""

from __future__ import annotations

from elf_pipeline.artifacts.tables import SCHEMA_PATH, Column, load_schema
from elf_pipeline.artifacts.tables import write_table as write_extra_table
from elf_pipeline.stages.report.benchmarks import STAGE_NAMES, read_benchmarks, stage_table
from elf_pipeline.stages.report.conformance import KEYS, collect, collect_reference, conform, empty_table, read_runs
from elf_pipeline.stages.report.document import Document, Table
from elf_pipeline.stages.report.numbers import (
    DEFAULT_DISTILL_ARCH,
    GAP_EPS,
    MISSING,
    RANDOM_METHOD,
    arch_order,
    baseline_evaluation,
    gap_closed,
    mean_std,
)
from elf_pipeline.stages.report.paper_tables import (
    FULL_LABEL,
    detail_tables,
    extra_tables,
    gap_tables,
    paper_tables,
    reference_notes,
    summary_tables,
    teacher_lines,
)
from elf_pipeline.stages.report.summary import build_document, render_summary, write_report

__all__ = [
    "DEFAULT_DISTILL_ARCH", "FULL_LABEL", "GAP_EPS", "KEYS", "MISSING", "RANDOM_METHOD", "SCHEMA_PATH", "STAGE_NAMES",
    "Column", "Document", "Table", "arch_order", "baseline_evaluation", "build_document", "collect",
    "collect_reference", "conform", "detail_tables", "empty_table", "extra_tables", "gap_closed", "gap_tables",
    "load_schema", "mean_std", "paper_tables", "read_benchmarks", "read_runs", "reference_notes", "render_summary",
    "stage_table", "summary_tables", "teacher_lines", "write_extra_table", "write_report",
]

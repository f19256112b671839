"""The ELF ablation of the empirical study (``studies.ablation``): which part of ELF helps.

One synthetic set, a few student architectures, and a list of evaluations that each change one part
of ELF (the loss terms, the feature loss, the adapter form); the first evaluation is the reference
row (normally ``baseline``, plain cross-entropy). The students are ordinary ``train_student`` jobs;
this module only reads their result rows.

For evaluation ``e`` and architecture ``a``: ``delta_val_a = val(a, e) - val(a, reference)`` and
``delta_test_a`` likewise (means over seeds); ``mean_delta_val`` is the mean over the architectures.
The evaluation with the highest ``mean_delta_val`` (the reference row aside) is marked
``best_on_val``: choices are made on the validation split, never on test accuracy, which is only
reported. Without a validation split (``datasets.<name>.val_size`` unset) nothing is chosen.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import pandas as pd

from elf_pipeline.artifacts.tables import read_results, write_table, write_text
from elf_pipeline.infra.errors import InputError
from elf_pipeline.infra.plotting import pyplot, save_figure
from elf_pipeline.stages.study.rows import STUDY_COLUMNS, cell, cell_stats, context, markdown_page

TITLE = "Study: ELF ablation"
PROTOCOL_COLUMNS = ("loss_mode", "feature_loss", "adapter_form", "train_lr")
_POINT_COLUMNS = ("val_", "test_", "std_", "delta_", "adapter_", "mean_delta_", "best_")


def _protocol(rows: pd.DataFrame, archs: list[str], evaluation: str) -> dict[str, str]:
    """loss_mode, feature_loss, adapter_form and the student lr of an evaluation as its result rows
    record them, the distinct values over the architectures ("-" where a column is missing or, for
    the teacher terms, where loss_mode task has no teacher)."""
    found = rows[(rows["evaluation"] == evaluation) & rows["arch"].isin(archs)]
    out = {}
    for column in PROTOCOL_COLUMNS:
        values = [str(v) for v in sorted(found[column].dropna().unique())] if column in found else []
        out[column] = ", ".join(values) or "-"
    if out["loss_mode"] == "task":
        out.update(feature_loss="-", adapter_form="-")
    return out


def _val(rows: pd.DataFrame, arch: str, evaluation: str) -> float:
    """Mean validation accuracy over seeds; NaN without a ``val_acc`` column or with no value in it."""
    found = cell(rows, arch, evaluation)
    if "val_acc" not in found:
        return float("nan")
    val = pd.to_numeric(found["val_acc"], errors="coerce")
    return float(val.mean()) if val.notna().any() else float("nan")


def ablation_table(rows: pd.DataFrame, archs: list[str], evaluations: list[str]) -> pd.DataFrame:
    """One row per evaluation: its protocol, per architecture validation and test accuracy, test std,
    the deltas to the first evaluation (the reference) and whether an adapter was used; the mean
    deltas over architectures, and ``best_on_val`` for the non-reference row with the highest
    ``mean_delta_val``."""
    if not archs or not evaluations:
        raise InputError("ablation: needs at least one architecture and one evaluation")
    reference = evaluations[0]
    stats = {(a, e): {**cell_stats(rows, a, e), "val": _val(rows, a, e)} for a in archs for e in evaluations}
    records = []
    for evaluation in evaluations:
        record: dict[str, object] = {"evaluation": evaluation, **_protocol(rows, archs, evaluation)}
        for arch in archs:
            mine, ref = stats[arch, evaluation], stats[arch, reference]
            record.update({f"val_{arch}": mine["val"], f"test_{arch}": mine["acc"], f"std_{arch}": mine["std"],
                           f"delta_val_{arch}": mine["val"] - ref["val"], f"delta_test_{arch}": mine["acc"] - ref["acc"],
                           f"adapter_{arch}": mine["adapter"]})
        records.append(record)
    table = pd.DataFrame(records)
    # a mean over every architecture or none: one lacking validation accuracy leaves the row unranked
    for kind in ("val", "test"):
        table[f"mean_delta_{kind}"] = table[[f"delta_{kind}_{a}" for a in archs]].astype(float).mean(axis=1, skipna=False)
    candidates = table["mean_delta_val"].iloc[1:]
    table["best_on_val"] = False
    if candidates.notna().any():
        table.loc[candidates.idxmax(), "best_on_val"] = True
    return table


def _has_val(table: pd.DataFrame, archs: list[str]) -> bool:
    return bool(table[[f"val_{a}" for a in archs]].notna().to_numpy().any())


def plot_ablation(table: pd.DataFrame, archs: list[str], out: str | os.PathLike) -> None:
    """Grouped bars: per evaluation (the reference aside), the validation accuracy change against the
    reference row on each architecture (the test change, titled so, where no row has validation accuracy)."""
    plt = pyplot()
    reference = table["evaluation"].iloc[0]
    shown = table.iloc[1:] if len(table) > 1 else table
    on_val = _has_val(table, archs)
    kind = "val" if on_val else "test"
    figure, axis = plt.subplots(figsize=(max(6.0, 0.35 * len(shown) * len(archs) + 2), 4.5))
    width = 0.8 / len(archs)
    positions = np.arange(len(shown))
    for index, arch in enumerate(archs):
        shift = (index - (len(archs) - 1) / 2) * width
        axis.bar(positions + shift, shown[f"delta_{kind}_{arch}"].astype(float) * 100, width, label=arch)
    labels = [f"{e}\n(best on val)" if best else e for e, best in zip(shown["evaluation"], shown["best_on_val"], strict=True)]
    axis.set_xticks(positions, labels, rotation=30, ha="right")
    axis.axhline(0, color="grey", linewidth=0.8)
    axis.set_ylabel(f"{'validation' if on_val else 'test'} accuracy minus {reference} (points)")
    axis.set_title(f"ELF ablation: validation accuracy change vs. {reference}" if on_val else
                   f"ELF ablation: TEST accuracy change vs. {reference} (no validation split; not for choosing)")
    axis.legend(fontsize=8)
    save_figure(figure, out)


def _note(rows: pd.DataFrame, table: pd.DataFrame, archs: list[str]) -> str:
    reference = table["evaluation"].iloc[0]
    note = (f"Synthetic set: {context(rows)}. Each evaluation trains every architecture ({', '.join(archs)}); val/test = "
            "validation/test accuracy (percentage points, mean over seeds), std = test std over seeds; delta = accuracy "
            f"minus that of the reference row {reference} on the same architecture; mean_delta = mean over architectures; "
            "adapter = a learned adapter bridged feature shapes. ")
    if not _has_val(table, archs):
        return note + ("The result rows hold no validation accuracy (no validation split, datasets.<name>.val_size): "
                       "no evaluation is chosen, since choices are made on validation accuracy, never on test accuracy.")
    best = table.loc[table["best_on_val"], "evaluation"].tolist()
    chosen = f"best_on_val: {best[0]}" if best else "best_on_val: none (no row has validation accuracy on every architecture)"
    return note + (f"{chosen}, the highest mean_delta_val. Choices are made on validation accuracy, never on test "
                   "accuracy; the test columns only report the outcome.")


def write_ablation(inputs: Iterable[str | os.PathLike], archs: list[str], evaluations: list[str],
                   out_table: str | os.PathLike, out_markdown: str | os.PathLike, out_plot: str | os.PathLike) -> pd.DataFrame:
    rows = read_results(inputs, STUDY_COLUMNS)
    table = ablation_table(rows, archs, evaluations)
    note = _note(rows, table, archs)
    write_table(table, out_table, TITLE, note)
    write_text(markdown_page(table, TITLE, [note], prefixes=_POINT_COLUMNS), out_markdown)
    plot_ablation(table, archs, out_plot)
    return table

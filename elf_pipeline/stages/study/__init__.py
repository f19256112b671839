"""The paper's empirical study as tables and plots: architecture similarity and normalisation.

One synthetic set is evaluated on many architectures (ordinary ``train_student`` jobs); this module
only reads their result rows.

**Similarity.** Every architecture is described by six design choices (``design``): family
(topology), width (channels of the widest conv), depth (conv layers), normalisation, activation and
pooling. The *design distance* of an architecture is the number of choices in which it differs
from the distillation model (the study's ``reference``, ConvNet-3: width 128, depth 3, instance
norm, ReLU, average pooling); choices unknown for an architecture (torchvision models) count as
different. ConvNet variants that change one choice are at distance 1, ResNet18 (instance norm)
at 4, AlexNet (no norm) at 5. The distance is cheap and torch-free; it orders the architectures
without training anything.

**Gap.** For evaluation ``e``: ``gap_e(arch) = acc(reference, e) - acc(arch, e)``, the accuracy the
architecture loses against the distillation model under the same evaluation protocol (mean over
seeds). A positive gap is the cross-architecture drop; the study reports its rank correlation
with the design distance.

**Normalisation.** Pairs ``arch -> the same arch with instance norm`` (the distillation model's
norm), e.g. resnet18-bn -> resnet18, vgg11-bn -> vgg11, alexnet -> alexnet-in; ``gap_change`` is
how much the gap shrinks when the instance norm is inserted (positive: the inserted norm helps).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import pandas as pd

from elf_pipeline.artifacts.tables import read_results, write_table, write_text
from elf_pipeline.infra.plotting import pyplot, save_figure
from elf_pipeline.models.registry import resolve
from elf_pipeline.stages.study.rows import STUDY_COLUMNS, cell_stats, context, markdown_page

DESIGN_CHOICES = ("family", "width", "depth", "norm", "activation", "pooling")
# module of the registry -> (family, conv layers, widest conv, pooling); norm and activation below
_FAMILIES = {
    "resnet": ("resnet", 17, 512, "strided conv"),
    "vgg": ("vgg", 8, 512, "max"),
    "alexnet": ("alexnet", 5, 256, "max"),
    "lenet": ("lenet", 2, 16, "max"),
    "mlp": ("mlp", 0, None, "none"),
}


def design(arch: str) -> dict[str, object]:
    """The six design choices of an architecture (None where the registry cannot tell)."""
    module, _, kwargs = resolve(arch)
    if module == "convnet":
        return {"family": "convnet", "width": kwargs.get("width", 128), "depth": kwargs.get("depth", 3),
                "norm": kwargs.get("norm", "instance"), "activation": kwargs.get("act", "relu"),
                "pooling": kwargs.get("pool", "avg")}
    if module in _FAMILIES:
        family, depth, width, pooling = _FAMILIES[module]
        if kwargs.get("stem") == "imagenet":
            pooling = "max + strided conv"
        return {"family": family, "width": width, "depth": depth, "norm": kwargs.get("norm", "none"),
                "activation": "relu", "pooling": pooling}
    return {"family": arch, "width": None, "depth": None, "norm": None, "activation": None, "pooling": None}


def design_distance(arch: str, reference: str) -> tuple[int, list[str]]:
    """Number of design choices that differ from ``reference``, and which."""
    mine, theirs = design(arch), design(reference)
    differs = [c for c in DESIGN_CHOICES if mine[c] is None or mine[c] != theirs[c]]
    return len(differs), differs


def rank_correlation(x: pd.Series, y: pd.Series) -> float:
    """Spearman's rank correlation (NaN with fewer than three points or a constant side)."""
    keep = x.notna() & y.notna()
    x, y = x[keep].rank(), y[keep].rank()
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def similarity_table(rows: pd.DataFrame, reference: str, archs: list[str], evaluations: list[str]) -> pd.DataFrame:
    """One row per architecture: design distance, and accuracy, std and gap per evaluation."""
    records = []
    for arch in dict.fromkeys([reference, *archs]):
        distance, differs = design_distance(arch, reference)
        record: dict[str, object] = {"arch": arch, "design_distance": distance, "differs": ", ".join(differs) or "-"}
        for evaluation in evaluations:
            mine, ref = cell_stats(rows, arch, evaluation), cell_stats(rows, reference, evaluation)
            record.update({f"acc_{evaluation}": mine["acc"], f"std_{evaluation}": mine["std"],
                           f"gap_{evaluation}": ref["acc"] - mine["acc"], f"adapter_{evaluation}": mine["adapter"],
                           f"seeds_{evaluation}": mine["seeds"]})
        records.append(record)
    return pd.DataFrame(records)


def norm_table(rows: pd.DataFrame, reference: str, pairs: dict[str, str], evaluations: list[str]) -> pd.DataFrame:
    """One row per pair: gaps with the architecture's own norm and with instance norm inserted."""
    records = []
    for own, instance in pairs.items():
        record: dict[str, object] = {"arch": own, "norm": design(own)["norm"], "arch_instance_norm": instance}
        for evaluation in evaluations:
            ref = cell_stats(rows, reference, evaluation)["acc"]
            acc_own, acc_in = cell_stats(rows, own, evaluation)["acc"], cell_stats(rows, instance, evaluation)["acc"]
            record.update({f"acc_own_{evaluation}": acc_own, f"acc_in_{evaluation}": acc_in,
                           f"gap_own_{evaluation}": ref - acc_own, f"gap_in_{evaluation}": ref - acc_in,
                           f"gap_change_{evaluation}": (ref - acc_own) - (ref - acc_in)})
        records.append(record)
    return pd.DataFrame(records)


# --------------------------------------------------------------------------- output


def plot_similarity(table: pd.DataFrame, evaluations: list[str], reference: str, out: str | os.PathLike) -> None:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for offset, evaluation in zip(np.linspace(-0.12, 0.12, len(evaluations)), evaluations, strict=True):
        x, y = table["design_distance"] + offset, table[f"gap_{evaluation}"] * 100
        axis.scatter(x, y, label=evaluation, s=36)
        for arch, xi, yi in zip(table["arch"], x, y, strict=True):
            axis.annotate(arch, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axis.axhline(0, color="grey", linewidth=0.8)
    axis.set_xlabel(f"design distance to {reference} (differing design choices)")
    axis.set_ylabel(f"accuracy gap to {reference} (points)")
    axis.set_title("Cross-architecture gap vs. similarity to the distillation model")
    axis.legend()
    save_figure(figure, out)


def plot_norm(table: pd.DataFrame, evaluations: list[str], reference: str, out: str | os.PathLike) -> None:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(max(5, 1.8 * len(table) * len(evaluations)), 4.5))
    width = 0.8 / (2 * len(evaluations))
    positions = np.arange(len(table))
    for index, evaluation in enumerate(evaluations):
        for side, (column, label) in enumerate([("gap_own", "own norm"), ("gap_in", "instance norm")]):
            shift = (2 * index + side - (2 * len(evaluations) - 1) / 2) * width
            axis.bar(positions + shift, table[f"{column}_{evaluation}"] * 100, width, label=f"{evaluation}: {label}")
    axis.set_xticks(positions, [f"{a}\n-> {b}" for a, b in zip(table["arch"], table["arch_instance_norm"], strict=True)])
    axis.axhline(0, color="grey", linewidth=0.8)
    axis.set_ylabel(f"accuracy gap to {reference} (points)")
    axis.set_title("Inserting the distillation model's normalisation (instance norm)")
    axis.legend(fontsize=8)
    save_figure(figure, out)


def write_similarity(inputs: Iterable[str | os.PathLike], reference: str, archs: list[str], evaluations: list[str],
                     out_table: str | os.PathLike, out_markdown: str | os.PathLike, out_plot: str | os.PathLike) -> pd.DataFrame:
    rows = read_results(inputs, STUDY_COLUMNS)
    table = similarity_table(rows, reference, archs, evaluations)
    others = table[table["arch"] != reference]
    correlations = {e: rank_correlation(others["design_distance"], others[f"gap_{e}"]) for e in evaluations}
    note = (f"Synthetic set: {context(rows)}. Design distance = number of design choices ({', '.join(DESIGN_CHOICES)}) "
            f"that differ from {reference}; gap = accuracy of {reference} minus that of the architecture under the same "
            "evaluation (percentage points, mean over seeds); adapter = a learned adapter bridged feature shapes. "
            + "; ".join(f"Spearman(distance, gap_{e}) = {c:.2f}" for e, c in correlations.items()))
    write_table(table, out_table, "Study: architecture similarity", note)
    write_text(markdown_page(table, "Study: architecture similarity", [note]), out_markdown)
    plot_similarity(table, evaluations, reference, out_plot)
    return table


def write_norm(inputs: Iterable[str | os.PathLike], reference: str, pairs: dict[str, str], evaluations: list[str],
               out_table: str | os.PathLike, out_markdown: str | os.PathLike, out_plot: str | os.PathLike) -> pd.DataFrame:
    rows = read_results(inputs, STUDY_COLUMNS)
    table = norm_table(rows, reference, pairs, evaluations)
    note = (f"Synthetic set: {context(rows)}. Each architecture with its own normalisation and with the distillation "
            f"model's instance norm inserted; gap = accuracy of {reference} minus the architecture's (percentage points); "
            "gap_change = gap_own - gap_in (positive: instance norm closes part of the gap).")
    write_table(table, out_table, "Study: normalisation", note)
    write_text(markdown_page(table, "Study: normalisation", [note]), out_markdown)
    plot_norm(table, evaluations, reference, out_plot)
    return table

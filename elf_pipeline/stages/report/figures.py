"""Report figures (PNG, matplotlib's Agg backend): accuracy bars, gap closed, synthetic-image
grids and teacher training curves. Part of the report stage; numbers come from the report's modules."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display needed on cluster nodes

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from elf_pipeline.infra.io import ArtifactError, open_h5  # noqa: E402
from elf_pipeline.infra.plotting import save_figure  # noqa: E402
from elf_pipeline.stages.report.conformance import collect_reference, read_runs  # noqa: E402
from elf_pipeline.stages.report.numbers import RANDOM_METHOD, arch_order, baseline_evaluation, gap_closed, ordered  # noqa: E402
from elf_pipeline.stages.report.paper_tables import FULL_LABEL  # noqa: E402


def _methods(values) -> list:
    """Methods in first-seen order, the random-real-subset reference first (as in the tables)."""
    methods = ordered(values)
    return [m for m in methods if m == RANDOM_METHOD] + [m for m in methods if m != RANDOM_METHOD]


def _message_figure(text: str, out: str | os.PathLike) -> None:
    """A small figure that says why there is nothing to plot (the output must still exist)."""
    figure, axis = plt.subplots(figsize=(6, 1.5))
    axis.axis("off")
    axis.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    save_figure(figure, out)


def plot_accuracy(runs: pd.DataFrame, reference: pd.DataFrame, dataset: str, out: str | os.PathLike,
                  distill_archs: dict[str, str] | None = None) -> None:
    """Grouped bars per architecture (one bar per evaluation, mean ± std over seeds), one panel per
    method (columns) and IPC (rows); the full-real-data accuracy as a black tick above each group."""
    runs = runs[runs["dataset"] == dataset]
    if runs.empty:
        raise ArtifactError(f"no runs of dataset {dataset!r} to plot")
    full = reference[reference["dataset"] == dataset].groupby("arch")["test_acc"].mean() * 100
    methods, ipcs = _methods(runs["method"]), sorted(runs["ipc"].unique())
    archs, evaluations = arch_order(runs, distill_archs), ordered(runs["evaluation"])
    baseline = baseline_evaluation(runs)
    if baseline in evaluations:  # baseline first so its bar is leftmost
        evaluations = [baseline] + [e for e in evaluations if e != baseline]
    stats = runs.groupby(["method", "ipc", "arch", "evaluation"])["test_acc"].agg(["mean", "std", "count"]) * [100, 100, 1]
    width = 0.8 / len(evaluations)
    colors = plt.get_cmap("tab10").colors
    figure, axes = plt.subplots(len(ipcs), len(methods), figsize=(max(4.5, 0.9 * len(archs) + 1.5) * len(methods),
                                3.2 * len(ipcs)), squeeze=False, sharey=True)
    for row, ipc in enumerate(ipcs):
        for col, method in enumerate(methods):
            axis = axes[row][col]
            x = np.arange(len(archs))
            for k, evaluation in enumerate(evaluations):
                means, stds = [], []
                for arch in archs:
                    key = (method, ipc, arch, evaluation)
                    means.append(stats.loc[key, "mean"] if key in stats.index else np.nan)
                    stds.append(np.nan_to_num(stats.loc[key, "std"]) if key in stats.index else 0.0)
                axis.bar(x + (k - (len(evaluations) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
                         label=evaluation, color=colors[k % len(colors)])
            marked = [(i, full[arch]) for i, arch in enumerate(archs) if arch in full.index]
            for n, (i, accuracy) in enumerate(marked):
                axis.hlines(accuracy, i - 0.4, i + 0.4, colors="black", linewidth=1.5, label=FULL_LABEL if n == 0 else None)
            axis.set_xticks(x, archs, rotation=30, ha="right")
            axis.set_title(f"{method} · IPC {ipc}")
            if col == 0:
                axis.set_ylabel("test accuracy (%)")
            axis.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    figure.legend(unique.values(), unique.keys(), loc="upper center", ncol=len(unique), bbox_to_anchor=(0.5, 1.02),
                  frameon=False)
    figure.suptitle(f"{dataset}: test accuracy per architecture (mean ± std over seeds)", y=1.08)
    figure.tight_layout()
    save_figure(figure, out)


def plot_gap_closed(runs: pd.DataFrame, dataset: str, out: str | os.PathLike,
                    distill_archs: dict[str, str] | None = None) -> None:
    """Gap closed (%) per architecture, one bar per method; one panel per IPC (rows) and
    non-baseline evaluation (columns)."""
    gaps = gap_closed(runs[runs["dataset"] == dataset], distill_archs)
    gaps = gaps[np.isfinite(gaps["gap_closed"].astype(float))]
    if gaps.empty:
        _message_figure(f"{dataset}: gap closed is undefined for every cell (no baseline, no non-baseline evaluation, "
                        "the distillation architecture not among the students, or no gap to close)", out)
        return
    ipcs, evaluations = sorted(gaps["ipc"].unique()), ordered(gaps["evaluation"])
    methods, archs = _methods(gaps["method"]), ordered(gaps["arch"])
    width = 0.8 / len(methods)
    colors = plt.get_cmap("tab10").colors
    figure, axes = plt.subplots(len(ipcs), len(evaluations), squeeze=False, sharey=True,
                                figsize=(max(4.5, 0.9 * len(archs) + 1.5) * len(evaluations), 3.2 * len(ipcs)))
    for row, ipc in enumerate(ipcs):
        for col, evaluation in enumerate(evaluations):
            axis = axes[row][col]
            cell = gaps[(gaps["ipc"] == ipc) & (gaps["evaluation"] == evaluation)].set_index(["method", "arch"])["gap_closed"]
            x = np.arange(len(archs))
            for k, method in enumerate(methods):
                values = [cell.get((method, arch), np.nan) * 100 for arch in archs]
                axis.bar(x + (k - (len(methods) - 1) / 2) * width, values, width, label=method, color=colors[k % len(colors)])
            axis.axhline(0, color="black", linewidth=0.8)
            axis.axhline(100, color="gray", linewidth=0.8, linestyle="--")
            axis.set_xticks(x, archs, rotation=30, ha="right")
            axis.set_title(f"{evaluation} · IPC {ipc}")
            if col == 0:
                axis.set_ylabel("gap closed (%)")
            axis.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", ncol=len(labels), bbox_to_anchor=(0.5, 1.02), frameon=False)
    figure.suptitle(f"{dataset}: share of the gap to the distillation architecture closed (100% = dashed line)", y=1.08)
    figure.tight_layout()
    save_figure(figure, out)


def plot_results(runs_path: str | os.PathLike, reference_path: str | os.PathLike | None, dataset: str,
                 out_accuracy: str | os.PathLike, out_gap: str | os.PathLike,
                 distill_archs: dict[str, str] | None = None) -> None:
    runs = read_runs(runs_path)
    reference = collect_reference([reference_path] if reference_path else [])
    plot_accuracy(runs, reference, dataset, out_accuracy, distill_archs)
    plot_gap_closed(runs, dataset, out_gap, distill_archs)


def denormalize(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Normalised NCHW float images -> NHWC in [0, 1] (the inverse of data.normalize, clipped)."""
    pixels = images * std.reshape(1, -1, 1, 1) + mean.reshape(1, -1, 1, 1)
    return np.clip(pixels, 0.0, 1.0).transpose(0, 2, 3, 1)


def plot_synset(synset: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike, max_per_class: int = 10) -> None:
    """The synthetic images as a grid: one column per class (named), up to ``max_per_class`` rows."""
    with open_h5(data) as h5:
        missing = [key for key in ("mean", "std", "classes") if key not in h5.attrs]
        if missing:  # h5py's KeyError text does not name the attribute plainly
            raise ArtifactError(f"{data}: prepared dataset lacks attribute {missing[0]!r}")
        mean = np.asarray(h5.attrs["mean"], dtype=np.float32)
        std = np.asarray(h5.attrs["std"], dtype=np.float32)
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in h5.attrs["classes"]]
    with open_h5(synset) as h5:
        if "images" not in h5 or "labels" not in h5:
            raise ArtifactError(f"{synset}: synthetic set needs datasets 'images' and 'labels'")
        images, labels = h5["images"][:].astype(np.float32), h5["labels"][:]
        method, ipc = str(h5.attrs.get("method", Path(synset).parent.parent.name)), str(h5.attrs.get("ipc", "?"))
    if images.ndim != 4 or images.shape[1] != len(mean):
        raise ArtifactError(f"{synset}: images {images.shape} are not NCHW with {len(mean)} channels (from {data})")
    pixels = denormalize(images, mean, std)
    largest = max(int((labels == c).sum()) for c in range(len(classes)))
    rows = max(1, min(max_per_class, largest))
    cell = min(1.0, 16.0 / len(classes))
    figure, axes = plt.subplots(rows, len(classes), figsize=(cell * len(classes), cell * rows + 0.6), squeeze=False)
    for c, name in enumerate(classes):
        members = np.flatnonzero(labels == c)[:rows]
        for r in range(rows):
            axis = axes[r][c]
            axis.set_xticks([])
            axis.set_yticks([])
            for spine in axis.spines.values():
                spine.set_visible(False)
            if r < len(members):
                image = pixels[members[r]]
                axis.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None,
                            vmin=0, vmax=1, interpolation="nearest")
        axes[0][c].set_title(name, fontsize=max(5, min(9, 90 / len(classes))))
    shown = f", first {rows} of {largest} per class" if rows < largest else ""
    figure.suptitle(f"{method}, IPC {ipc}: synthetic images (de-normalised){shown}", fontsize=10)
    figure.subplots_adjust(wspace=0.05, hspace=0.05)
    save_figure(figure, out)


def plot_teacher(history: str | os.PathLike, out: str | os.PathLike, title: str | None = None) -> None:
    """Training loss per epoch and test accuracy where measured, with the checkpoint epoch marked."""
    try:
        record = json.loads(Path(history).read_text())
        epochs = record["epochs"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ArtifactError(f"{history}: not a teacher history ({type(err).__name__}: {err})") from None
    if not epochs:
        raise ArtifactError(f"{history}: history holds no epochs")
    figure, loss_axis = plt.subplots(figsize=(6, 3.5))
    loss_axis.plot([e["epoch"] for e in epochs], [e["train_loss"] for e in epochs], color="tab:blue", marker=".",
                   label="train loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("train loss", color="tab:blue")
    acc_axis = loss_axis.twinx()
    measured = [e for e in epochs if e.get("test_acc") is not None]
    acc_axis.plot([e["epoch"] for e in measured], [e["test_acc"] * 100 for e in measured], color="tab:orange",
                  marker="o", label="test accuracy")
    acc_axis.set_ylabel("test accuracy (%)", color="tab:orange")
    checkpoint = record.get("checkpoint_epoch")
    if checkpoint is not None:
        acc = record.get("test_acc")
        loss_axis.axvline(checkpoint, color="gray", linestyle="--", linewidth=1,
                          label=f"checkpoint: epoch {checkpoint}{f', {acc * 100:.1f}%' if acc is not None else ''}")
    loss_axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = loss_axis.get_legend_handles_labels()[0] + acc_axis.get_legend_handles_labels()[0]
    figure.legend(handles, [h.get_label() for h in handles], loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3,
                  fontsize=8, frameon=False)
    loss_axis.set_title(title or f"teacher {record.get('arch', '?')}: training curve")
    figure.tight_layout()
    save_figure(figure, out)

"""Report tables about what an evaluation costs and about imported sets.

- ``cost_tables``: per synthetic set and evaluation, the bytes of side information per synthetic
  image beside the image itself (``elf_pipeline.artifacts.side_info``) and the students' training time, so
  methods compare at equal cost;
- ``import_tables``: per imported set, the pixel-space check of the import (ok, or its warning);
- ``expected_tables``: per imported set with an ``expected`` block, each baseline's accuracy beside
  the one the release's authors report, flagged where it is more than the tolerance below, with
  the checks the set passed.
"""

from __future__ import annotations

import json

import pandas as pd

from elf_pipeline.artifacts.side_info import human_bytes
from elf_pipeline.stages.report.document import Table
from elf_pipeline.stages.report.numbers import baseline_evaluation


def _span(values: pd.Series, fmt) -> str:
    values = values.dropna()
    if values.empty:
        return "–"
    low, high = values.min(), values.max()
    return fmt(low) if low == high else f"{fmt(low)}–{fmt(high)}"


def cost_tables(runs: pd.DataFrame) -> list[Table]:
    """One table per dataset: side information per image (range over architectures), the image's own
    bytes, and the mean training time per student (seconds)."""
    if "side_info_bytes_per_image" not in runs or runs["side_info_bytes_per_image"].isna().all():
        return []
    tables = []
    for dataset, frame in runs.groupby("dataset", sort=True):
        rows = []
        for (method, ipc, evaluation), group in frame.groupby(["method", "ipc", "evaluation"], sort=True):
            kinds = sorted(set(group["side_info"].dropna())) if "side_info" in group else []
            rows.append({"method": str(method), "IPC": str(int(ipc)), "evaluation": str(evaluation),
                         "image": _span(group["image_bytes"], human_bytes),
                         "side info / image": _span(group["side_info_bytes_per_image"], human_bytes),
                         "what": "; ".join(kinds) or "–",
                         "train s / student": f"{group['train_seconds'].mean():.1f}"})
        tables.append(Table(f"Side information and training time · {dataset}", pd.DataFrame(rows),
                            note="Side information: what the evaluation gives the student beyond the images and their "
                                 "class indices (teacher features, soft labels, a teacher network run during training "
                                 "amortised over the images), bytes per synthetic image; image: one image as 8-bit pixels."))
    return tables


def import_tables(runs: pd.DataFrame) -> list[Table]:
    """Imported sets and their pixel-space check (``import_space_check``): ok, off, or the warning."""
    if "import_space_check" not in runs or runs["import_space_check"].isna().all():
        return []
    rows = []
    imported = runs.dropna(subset=["import_space_check"])
    for (dataset, method, ipc), group in imported.groupby(["dataset", "method", "ipc"], sort=True):
        first = group.iloc[0]
        note = first.get("import_space_note") or ""
        rows.append({"dataset": str(dataset), "method": str(method), "IPC": str(int(ipc)),
                     "pixel space": str(first["import_space_check"]), "note": note or "–"})
    return [Table("Imported sets", pd.DataFrame(rows),
                  note="Pixel space: the declared normalisation (and zca) against the images' statistics "
                       "(docs/datasets.md): ok, warning (the note says why) or off (space_check: off).")]


BELOW_MARK = "⚠"


def _checks_passed(group: pd.DataFrame) -> str:
    """The import checks a set passed: its file's structure always (it was imported), then the
    pixel-space check where it ran clean."""
    passed = ["shape, finite values, labels, IPC"]
    space = group["import_space_check"].dropna() if "import_space_check" in group else pd.Series(dtype=object)
    if len(space) and (space == "ok").all():
        passed.append("pixel space")
    return "; ".join(passed)


def expected_tables(runs: pd.DataFrame) -> list[Table]:
    """Baseline accuracy of imported sets beside the published one (``imported_expected``)."""
    if "imported_expected" not in runs or runs["imported_expected"].isna().all():
        return []
    baseline = baseline_evaluation(runs)
    rows = []
    imported = runs.dropna(subset=["imported_expected"])
    for (dataset, method, ipc), group in imported.groupby(["dataset", "method", "ipc"], sort=True):
        expected = json.loads(group["imported_expected"].iloc[0])
        tolerance = float(expected["tolerance"])
        base = group[group["evaluation"] == baseline] if baseline else group.iloc[0:0]
        for arch, published in sorted(expected["accuracy"].items()):
            measured = base.loc[base["arch"] == arch, "test_acc"]
            if measured.empty:
                cell, flag = "–", "not trained"
            else:
                mean = measured.mean()
                spread = f" ± {100 * measured.std():.1f}" if len(measured) > 1 else ""
                cell = f"{100 * mean:.1f}{spread}"
                below = published - mean
                flag = f"{BELOW_MARK} {100 * below:.1f} points below" if below > tolerance else "ok"
            rows.append({"dataset": str(dataset), "method": str(method), "IPC": str(int(ipc)), "arch": str(arch),
                         f"{baseline or 'baseline'} (%)": cell, "published (%)": f"{100 * published:.1f}",
                         "check": flag, "source": expected["source"], "checks passed": _checks_passed(group)})
    if not rows:
        return []
    return [Table("Imported sets against their published accuracy", pd.DataFrame(rows),
                  note=f"{BELOW_MARK}: the baseline (mean over seeds) is more than the import's tolerance (expected.tolerance, "
                       "default 3 points) below the accuracy the release's authors report; checks passed: what the "
                       "import verified before training.")]

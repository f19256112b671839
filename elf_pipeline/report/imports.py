"""Report tables about what an evaluation costs and about imported sets.

- ``cost_tables``: per synthetic set and evaluation, the bytes of side information per synthetic
  image beside the image itself (``elf_pipeline.side_info``) and the students' training time, so
  methods compare at equal cost;
- ``import_tables``: per imported set, the pixel-space check of the import (ok, or its warning).
"""

from __future__ import annotations

import pandas as pd

from elf_pipeline.report.document import Table
from elf_pipeline.side_info import human_bytes


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

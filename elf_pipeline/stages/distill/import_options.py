"""The import block's options beyond the file itself: the error type, the check modes, a label
permutation to accept (``label_map``) and the published accuracies (``expected``)."""

from __future__ import annotations

import json

import numpy as np

from elf_pipeline.infra.io import ArtifactError

SPACE_CHECKS = ("error", "warn", "off")  # space_check / label_check: what a failed check does


class ImportedSetError(ArtifactError):
    """The imported file is missing, unreadable, unsafe or does not fit the dataset (message names it)."""


def relabel(labels: np.ndarray, label_map: object, num_classes: int) -> np.ndarray:
    """File label ``i`` becomes class ``label_map[i]`` (soft labels: column ``i`` moves to ``label_map[i]``)."""
    if (not isinstance(label_map, (list, tuple)) or sorted(label_map) != list(range(num_classes))
            or any(isinstance(v, bool) for v in label_map)):
        raise ImportedSetError(f"method import: label_map must list each class 0..{num_classes - 1} once (file label i "
                               f"is class label_map[i]), got {label_map!r}")
    mapping = np.asarray(label_map, dtype=np.int64)
    if labels.ndim == 2:
        moved = np.empty_like(labels)
        moved[:, mapping] = labels
        return moved
    return mapping[labels]


EXPECTED_TOLERANCE = 0.03  # default: a baseline more than 3 points below the published accuracy is flagged


def expected_json(block: object) -> str:
    """``expected``: the accuracy per architecture that the release's authors report, as fractions,
    and its source; returned as canonical JSON (recorded as ``imported_expected``)."""
    where = "method import: expected"
    if not isinstance(block, dict) or set(block) - {"accuracy", "source", "tolerance"}:
        raise ImportedSetError(f"{where} takes accuracy (architecture: fraction), source and tolerance, got {block!r}")
    accuracy, source = block.get("accuracy"), block.get("source")
    if not isinstance(accuracy, dict) or not accuracy:
        raise ImportedSetError(f"{where}.accuracy must map architectures to published accuracies, e.g. {{convnet: 0.651}}")
    for arch, value in accuracy.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ImportedSetError(f"{where}.accuracy.{arch} must be a fraction in [0, 1] (65.1 % is 0.651), got {value!r}")
    if not isinstance(source, str) or not source.strip():
        raise ImportedSetError(f"{where}.source must say where the numbers come from (paper, table, repository)")
    tolerance = block.get("tolerance", EXPECTED_TOLERANCE)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < 1:
        raise ImportedSetError(f"{where}.tolerance must be a fraction in [0, 1), got {tolerance!r}")
    return json.dumps({"accuracy": {str(k): float(v) for k, v in sorted(accuracy.items())}, "source": source.strip(),
                       "tolerance": float(tolerance)}, sort_keys=True)

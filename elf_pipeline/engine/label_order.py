"""Is an imported set's label order the dataset's?  The study's teacher (trained on the real data)
classifies the synthetic images; if a permutation of the classes explains its predictions much
better than the identity, the file's labels are most likely in another order (a release whose class
list differs from this dataset's, two classes swapped).

``confusion[i, j]`` counts the images labelled ``i`` that the teacher assigns to ``j``; the best
permutation ``p`` maximises ``sum_i confusion[i, p(i)]`` (the assignment problem, solved exactly).
Label ``i`` of the file then most likely means class ``p(i)`` (``label_map``).

The evidence must be strong, because a teacher errs and at small IPC two mistakes can form a
cycle by chance.  A permutation is *likely* when

- every moved class gains: on average over the moved classes, the share of their images the
  teacher puts in ``p(i)`` exceeds the share it puts in ``i`` by at least ``MIN_CLASS_GAIN``, and
- at least ``MIN_GAIN_IMAGES`` more images agree with the permutation than with the identity.

With fewer images (IPC 1 and 2, a single swap) a gain is only *possible*: a warning, never an
error.  The limits are set from measurements on correctly labelled sets (docs/datasets.md).
Pure numpy and scipy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

MIN_CLASS_GAIN = 0.5
MIN_GAIN_IMAGES = 6


@dataclass(frozen=True)
class LabelOrder:
    per_class: list[float]  # share of each class's images the teacher assigns to it (identity)
    agreement: float        # share of all images the teacher assigns to their label
    permutation: list[int]  # the best label_map (file label i -> class permutation[i])
    permuted_agreement: float
    gain_images: int
    class_gain: float       # mean over the moved classes
    verdict: str            # identity, possible or likely

    @property
    def moved(self) -> list[int]:
        return [i for i, j in enumerate(self.permutation) if i != j]

    def record(self) -> str:
        """JSON for artifacts and rows."""
        return json.dumps({"per_class": [round(v, 4) for v in self.per_class], "agreement": round(self.agreement, 4),
                           "permutation": self.permutation, "permuted_agreement": round(self.permuted_agreement, 4),
                           "verdict": self.verdict})


def check_label_order(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> LabelOrder:
    """``labels``: the file's class per image (argmax of soft labels); ``predictions``: the teacher's."""
    from scipy.optimize import linear_sum_assignment

    labels, predictions = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    counts = np.maximum(confusion.sum(axis=1), 1)
    rows, columns = linear_sum_assignment(-confusion)
    permutation = [int(c) for c in columns[np.argsort(rows)]]
    identity = int(np.trace(confusion))
    permuted = int(confusion[np.arange(num_classes), permutation].sum())
    if permuted <= identity:  # ties keep the identity
        permutation, permuted = list(range(num_classes)), identity
    moved = [i for i, j in enumerate(permutation) if i != j]
    class_gain = float(np.mean([(confusion[i, permutation[i]] - confusion[i, i]) / counts[i] for i in moved])) if moved else 0.0
    gain = permuted - identity
    if not moved or class_gain < MIN_CLASS_GAIN:
        verdict = "identity"
    else:
        verdict = "likely" if gain >= MIN_GAIN_IMAGES else "possible"
    total = max(len(labels), 1)
    return LabelOrder([float(v) for v in np.diag(confusion) / counts], identity / total, permutation, permuted / total,
                      gain, class_gain, verdict)


def describe(order: LabelOrder, classes: list[str] | None = None) -> str:
    """The moved classes as ``label 3 (cat) -> class 5 (dog)``, at most six."""
    def name(i: int) -> str:
        return f"{i} ({classes[i]})" if classes and i < len(classes) else str(i)

    parts = [f"label {name(i)} -> class {name(order.permutation[i])}" for i in order.moved[:6]]
    return ", ".join(parts) + (", ..." if len(order.moved) > 6 else "")

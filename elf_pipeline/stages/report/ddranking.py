"""DD-Ranking's label-robust scores, from rows the study already has.

DD-Ranking (NUS-HPC-AI-Lab, "Rethinking the Evaluation of Dataset Distillation") scores a
synthetic set by two differences of test accuracy, as fractions:

- hard label recovery, ``HLR = acc(full real data, hard labels) - acc(synthetic set, hard labels)``:
  how much of the real data's accuracy the set recovers without any evaluation trick (lower is better);
- improvement over random, ``IOR = acc(synthetic set, evaluation) - acc(random real subset, same
  evaluation)``: what the set adds over as many random real images trained the same way;
- ``alpha = w * IOR - (1 - w) * HLR`` and ``LRS = (exp(alpha) - exp(-1)) / (e - exp(-1))``, which
  maps alpha in [-1, 1] to [0, 1]; DD-Ranking's leaderboard takes ``w = 0.5``.

Here the full-data accuracy is the reference row of the same architecture, the hard-label accuracy
the set's baseline evaluation (plain cross-entropy on its labels), and the random subset the
``random`` method at the same IPC; each is the mean over seeds.  A score whose inputs are missing
(no reference rows, no random subset under that evaluation) is NaN, never a guess.
"""

from __future__ import annotations

import math

import pandas as pd

KEYS = ["dataset", "method", "ipc", "arch", "evaluation"]
RANDOM_METHOD = "random"
COLUMNS = ["hlr", "ior", "lrs"]


def lrs(ior: float, hlr: float, weight: float = 0.5) -> float:
    """DD-Ranking's label-robust score of one (IOR, HLR) pair, accuracies as fractions."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"DD-Ranking weight {weight}: must lie in [0, 1]")
    alpha = weight * ior - (1.0 - weight) * hlr
    return (math.exp(alpha) - math.exp(-1.0)) / (math.e - math.exp(-1.0))


def scores(runs: pd.DataFrame, reference: pd.DataFrame | None, hard_evaluation: str = "baseline",
           weight: float = 0.5, random_method: str = RANDOM_METHOD) -> pd.DataFrame:
    """HLR, IOR and LRS per dataset x method x IPC x arch x evaluation (the random subset's own rows
    left out: it is the yardstick).  ``runs`` holds one row per student (``test_acc``), ``reference``
    one per full-data model (``dataset``, ``arch``, ``test_acc``)."""
    if runs.empty:
        return pd.DataFrame(columns=[*KEYS, *COLUMNS])
    means = runs.groupby(KEYS, sort=False)["test_acc"].mean()
    full = (reference.groupby(["dataset", "arch"])["test_acc"].mean()
            if reference is not None and not reference.empty else pd.Series(dtype=float))
    rows = []
    for (dataset, method, ipc, arch, evaluation), accuracy in means.items():
        if method == random_method:
            continue
        hard = means.get((dataset, method, ipc, arch, hard_evaluation), math.nan)
        rdm = means.get((dataset, random_method, ipc, arch, evaluation), math.nan)
        real = full.get((dataset, arch), math.nan)
        hlr, ior = real - hard, accuracy - rdm
        score = lrs(ior, hlr, weight) if not (math.isnan(hlr) or math.isnan(ior)) else math.nan
        rows.append({"dataset": dataset, "method": method, "ipc": ipc, "arch": arch, "evaluation": evaluation,
                     "hlr": hlr, "ior": ior, "lrs": score})
    return pd.DataFrame(rows, columns=[*KEYS, *COLUMNS])


def score_tables(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Per dataset, the scores as formatted cells (HLR and IOR in points, LRS x 100): rows
    method x IPC x evaluation, one column per architecture reading ``HLR / IOR / LRS``."""
    def fmt(value: float, scale: float) -> str:
        return "–" if pd.isna(value) else f"{value * scale:.1f}"

    out = []
    for dataset, part in table.groupby("dataset", sort=False):
        archs = list(dict.fromkeys(part["arch"]))
        rows = []
        for (method, ipc, evaluation), cell in part.groupby(["method", "ipc", "evaluation"], sort=False):
            by_arch = cell.set_index("arch")
            row = {"method": method, "IPC": str(ipc), "evaluation": evaluation}
            for arch in archs:
                if arch in by_arch.index:
                    score = by_arch.loc[arch]
                    row[arch] = f"{fmt(score['hlr'], 100)} / {fmt(score['ior'], 100)} / {fmt(score['lrs'], 100)}"
                else:
                    row[arch] = "–"
            rows.append(row)
        out.append((str(dataset), pd.DataFrame(rows)))
    return out

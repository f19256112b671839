"""The choice file of ``students.select`` (``choice.json``): every candidate's validation accuracy
and the values chosen, for one dataset x synthetic set x architecture.

The choice reads validation accuracy only: candidate result files are read with their ``seed`` and
``val_acc`` columns alone, so nothing measured on the test set can reach it. The best mean over
the select seeds wins; a tie goes to the first candidate in config order.
"""

from __future__ import annotations

import json
import math
import os

import pandas as pd

from elf_pipeline.infra.errors import ArtifactError, InputError
from elf_pipeline.infra.io import write_json

METRIC = "val_acc"
COLUMNS = ["seed", METRIC]  # all the choice reads of a candidate's rows


def candidate_label(values: dict) -> str:
    """``lr 0.005`` / ``lr 0.01, epochs 50``: a candidate as the report shows it."""
    return ", ".join(f"{key} {value}" for key, value in values.items())


def read_candidate(path: str | os.PathLike) -> pd.DataFrame:
    """A candidate's rows, only the columns the choice may read."""
    try:
        return pd.read_parquet(path, columns=COLUMNS)
    except (OSError, ValueError, KeyError) as error:
        raise ArtifactError(f"{path}: not a candidate result with columns {', '.join(COLUMNS)} ({error})") from None


def choose(candidates: list[dict], frames: list[pd.DataFrame], seeds: list[int] | None = None) -> dict:
    """The choice among ``candidates`` (values per training key, in config order) from their rows
    (``frames``, one per candidate): each candidate's mean validation accuracy over its seeds, the
    best chosen, ties to the first. Only the ``seed`` and ``val_acc`` columns are looked at."""
    if len(candidates) != len(frames) or not candidates:
        raise InputError(f"{len(candidates)} candidates but {len(frames)} result tables")
    scored = []
    for values, frame in zip(candidates, frames, strict=True):
        rows = frame[COLUMNS] if set(COLUMNS) <= set(frame.columns) else None
        if rows is None or rows.empty or rows[METRIC].isna().any():
            raise InputError(f"candidate {candidate_label(values)}: no validation accuracy (students.select needs a "
                             "validation split: datasets.<name>.val_size)")
        if seeds is not None and sorted(int(s) for s in rows["seed"]) != sorted(seeds):
            raise InputError(f"candidate {candidate_label(values)}: seeds {sorted(rows['seed'])}, expected {sorted(seeds)}")
        by_seed = {str(int(seed)): float(acc) for seed, acc in zip(rows["seed"], rows[METRIC], strict=True)}
        scored.append({"values": dict(values), METRIC: float(rows[METRIC].mean()), f"{METRIC}_by_seed": by_seed})
    best = 0
    for index, candidate in enumerate(scored):
        if candidate[METRIC] > scored[best][METRIC]:  # strictly better: a tie keeps the earlier candidate
            best = index
    return {"metric": METRIC, "candidates": scored, "chosen": dict(scored[best]["values"]), "chosen_index": best}


def write_choice(path: str | os.PathLike, choice: dict) -> None:
    write_json(path, choice)


def read_choice(path: str | os.PathLike) -> dict:
    try:
        choice = json.loads(open(path).read())
    except (OSError, ValueError) as error:
        raise ArtifactError(f"{path}: not a choice file ({error})") from None
    if not isinstance(choice, dict) or not isinstance(choice.get("chosen"), dict) or "candidates" not in choice:
        raise ArtifactError(f"{path}: not a choice file (no chosen values and candidates)")
    return choice


def apply_choice(train: dict, choice: dict, keys: list[str]) -> dict:
    """``train`` with the chosen value of every key of ``keys`` on top (the choice decides them)."""
    missing = [key for key in keys if key not in choice["chosen"]]
    if missing:
        raise InputError(f"the choice has no value for {', '.join(missing)} (chosen: {choice['chosen']})")
    return {**train, **{key: choice["chosen"][key] for key in keys}}


def selection_columns(choice: dict | None) -> dict:
    """What a student row records of its selection: whether its values were selected and from what."""
    if choice is None:
        return {"selected": False, "selected_from": None}
    return {"selected": True, "selected_from": "; ".join(candidate_label(c["values"]) for c in choice["candidates"])}


def choice_table(choices: list[dict]) -> pd.DataFrame:
    """One row per choice: the cell, every candidate with its validation accuracy (%), the chosen values."""
    rows = []
    for choice in choices:
        identity = choice.get("identity", {})
        chosen = choice["candidates"][choice["chosen_index"]]
        rows.append({**{key: identity.get(key) for key in ("dataset", "method", "ipc", "arch")},
                     "candidates (val acc %)": ", ".join(
                         f"{candidate_label(c['values'])}: {_percent(c[METRIC])}" for c in choice["candidates"]),
                     "chosen": candidate_label(chosen["values"]), "seeds": ", ".join(map(str, choice.get("seeds", [])))})
    return pd.DataFrame(rows).astype(str)


def _percent(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{value * 100:.1f}"

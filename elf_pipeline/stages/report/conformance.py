"""Schema conformance of result rows: each per-job Parquet file checked against
``workflow/schemas/runs.schema.yaml`` (required columns present, dtypes right, nulls only where
allowed) before the report uses it."""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import pandas as pd

from elf_pipeline.artifacts.tables import SCHEMA_PATH, Column, load_schema, read_parquet
from elf_pipeline.infra.errors import ArtifactError

KEYS = ["dataset", "method", "ipc", "arch", "evaluation"]


def _non_null(series: pd.Series) -> pd.Series:
    return series[series.notna()]


def _coerce(series: pd.Series, column: Column, source: str) -> pd.Series:
    """Return ``series`` in the column's dtype, or raise naming the column, the file and the problem."""
    values = _non_null(series)

    def wrong(detail: str) -> ArtifactError:
        return ArtifactError(f"{source}: column {column.name!r} must be {column.type} ({column.description}); {detail}")

    if column.type == "string":
        if not all(isinstance(v, str) for v in values):
            bad = next(v for v in values if not isinstance(v, str))
            raise wrong(f"found {type(bad).__name__} value {bad!r}")
        return series.astype(pd.StringDtype())
    if column.type == "bool":
        if pd.api.types.is_bool_dtype(series.dtype):
            return series
        if not all(isinstance(v, (bool, np.bool_)) for v in values):
            raise wrong(f"got dtype {series.dtype}")
        return series.astype(bool) if len(values) == len(series) else series.astype("boolean")
    numeric = pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)
    if not numeric:
        if not all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
                   for v in values):
            raise wrong(f"got dtype {series.dtype}")
        series = pd.to_numeric(series.astype(object).where(series.notna(), np.nan))
    if column.type == "float":
        return series.astype(np.float64)
    if column.type == "int":
        if pd.api.types.is_integer_dtype(series.dtype):
            return series.astype(np.int64)
        finite = _non_null(series)
        if len(finite) != len(series) or not np.all(np.mod(finite.to_numpy(dtype=np.float64), 1) == 0):
            raise wrong(f"got non-integer values (dtype {series.dtype})")
        return series.astype(np.int64)
    raise ArtifactError(f"{SCHEMA_PATH}: column {column.name!r} has unknown type {column.type!r}")


NULLABLE_DTYPES = {"string": pd.StringDtype(), "int": "Int64", "float": np.float64, "bool": "boolean"}


def conform(frame: pd.DataFrame, table: str = "runs", source: str = "runs") -> pd.DataFrame:
    """Check ``frame`` against the schema: required columns present, dtypes right, no nulls where
    not allowed. Optional columns that are absent are added as nulls. Extra columns are kept."""
    frame = frame.copy()
    for name, column in load_schema(table).items():
        if name not in frame.columns:
            if column.required:
                raise ArtifactError(f"{source}: missing required column {name!r} ({column.type}: {column.description})")
            frame[name] = pd.Series([None] * len(frame), index=frame.index, dtype=NULLABLE_DTYPES[column.type])
            continue
        if column.type == "int" and frame[name].isna().any() and column.nullable:
            frame[name] = frame[name].astype("Int64")
            continue
        frame[name] = _coerce(frame[name], column, source)
        if not column.nullable and frame[name].isna().any():
            raise ArtifactError(f"{source}: column {name!r} has {int(frame[name].isna().sum())} missing values "
                                f"({column.description})")
    return frame


def empty_table(table: str) -> pd.DataFrame:
    """A zero-row frame with every column of ``table`` in its dtype."""
    dtypes = {"string": pd.StringDtype(), "int": np.int64, "float": np.float64, "bool": bool}
    return pd.DataFrame({name: pd.Series(dtype=dtypes[c.type]) for name, c in load_schema(table).items()})



def _read(path: str | os.PathLike) -> pd.DataFrame:
    return read_parquet(path, "result file")


def collect(paths: list[str | os.PathLike], table: str = "runs") -> pd.DataFrame:
    """Read per-job result files, check each against the schema, and concatenate them."""
    frames = [conform(_read(path), table, str(path)) for path in paths]
    if not frames:
        raise ArtifactError("no student result files to report")
    runs = pd.concat(frames, ignore_index=True)
    return runs.sort_values(KEYS + ["seed"], kind="stable").reset_index(drop=True)


def collect_reference(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Full-real-data reference rows (empty frame when there are none)."""
    frames = [conform(_read(path), "reference", str(path)) for path in paths]
    if not frames:
        return empty_table("reference")
    reference = pd.concat(frames, ignore_index=True)
    return reference.sort_values(["dataset", "arch", "seed"], kind="stable").reset_index(drop=True)


def read_runs(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a written ``runs.parquet``."""
    return conform(_read(path), "runs", str(path))

"""Result tables: their columns (``workflow/schemas/runs.schema.yaml``), reading them, and writing
them atomically as Parquet (titled tables carry ``elf_title``/``elf_note`` metadata, the form the
report's extra section reads) or as Markdown text."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pandas as pd

from elf_pipeline.infra.errors import ArtifactError
from elf_pipeline.infra.io import atomic_path

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "runs.schema.yaml"
TITLE_KEY, NOTE_KEY = b"elf_title", b"elf_note"


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # string | int | float | bool
    required: bool
    nullable: bool
    description: str


@cache
def load_schema(table: str = "runs", path: str | None = None) -> dict[str, Column]:
    """Columns of one table of ``workflow/schemas/runs.schema.yaml``, in file order."""
    import yaml

    schema_path = Path(path) if path else SCHEMA_PATH
    try:
        tables = yaml.safe_load(schema_path.read_text())["tables"]
        columns = tables[table]["columns"]
    except (OSError, KeyError, TypeError) as err:
        raise ArtifactError(f"{schema_path}: cannot read the column schema of table {table!r} ({err})") from None
    return {name: Column(name, spec["type"], bool(spec["required"]), bool(spec["nullable"]), spec.get("description", ""))
            for name, spec in columns.items()}


def schema_columns(table: str, names: Iterable[str]) -> tuple[str, ...]:
    """``names`` as columns of ``table``, each checked to be a required column of the schema."""
    schema = load_schema(table)
    unknown = [name for name in names if name not in schema or not schema[name].required]
    if unknown:
        raise ArtifactError(f"{SCHEMA_PATH}: table {table!r} has no required column(s) {', '.join(unknown)}")
    return tuple(names)


def read_parquet(path: str | os.PathLike, what: str = "result file") -> pd.DataFrame:
    """One Parquet file as a frame; unreadable: an error naming the file and ``what`` it is."""
    try:
        return pd.read_parquet(path)
    except Exception as err:
        raise ArtifactError(f"{path}: unreadable {what} ({type(err).__name__}: {err})") from None


def read_results(paths: Iterable[str | os.PathLike], columns: Iterable[str], table: str = "runs",
                 what: str = "student result file", purpose: str = "the study") -> pd.DataFrame:
    """Result rows of several Parquet files, concatenated; each file must hold ``columns``
    (columns of ``table`` in the schema) and at least one file must be given."""
    columns = schema_columns(table, columns)
    frames = []
    for path in paths:
        frame = read_parquet(path, what)
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ArtifactError(f"{path}: {what} lacks column(s) {', '.join(missing)}")
        frames.append(frame)
    if not frames:
        raise ArtifactError(f"no {what}s for {purpose}")
    return pd.concat(frames, ignore_index=True)


def write_parquet(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """``frame`` as Parquet without its index, replacing ``path`` only once fully written."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_table(frame: pd.DataFrame, path: str | os.PathLike, title: str, note: str = "") -> None:
    """A titled table: Parquet whose metadata carries its title and note."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = {**(table.schema.metadata or {}), TITLE_KEY: title.encode(), NOTE_KEY: note.encode()}
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(metadata), tmp)


def read_table(path: str | os.PathLike, what: str = "extra table") -> tuple[str, str, pd.DataFrame]:
    """A titled table written by ``write_table``: (title, note, frame); the title defaults to the
    file's name and the note to empty."""
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        arrow = pq.read_table(path)
    except Exception as err:
        raise ArtifactError(f"{path}: unreadable {what} ({type(err).__name__}: {err})") from None
    metadata = arrow.schema.metadata or {}
    title = metadata.get(TITLE_KEY, path.stem.encode()).decode()
    return title, metadata.get(NOTE_KEY, b"").decode(), arrow.to_pandas()


def write_text(text: str, path: str | os.PathLike) -> None:
    """A text (Markdown, HTML) file, replacing ``path`` only once fully written."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)

"""Result tables through elf_pipeline.artifacts.tables: columns from the schema, titled Parquet and
text written atomically, and bad files named."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from elf_pipeline.artifacts.tables import (
    load_schema,
    read_results,
    read_table,
    schema_columns,
    write_table,
    write_text,
)
from elf_pipeline.infra.errors import ArtifactError
from elf_pipeline.stages.study.rows import STUDY_COLUMNS


def test_study_columns_are_required_columns_of_the_runs_schema():
    runs = load_schema("runs")
    assert all(runs[name].required for name in STUDY_COLUMNS)
    assert schema_columns("runs", STUDY_COLUMNS) == STUDY_COLUMNS
    with pytest.raises(ArtifactError, match="table 'runs' has no required column.s. accuracy, val_acc"):
        schema_columns("runs", ["arch", "accuracy", "val_acc"])  # val_acc exists but is optional


def test_read_results_concatenates_and_names_the_file_lacking_a_column(tmp_path: Path):
    rows = pd.DataFrame({"arch": ["convnet"], "evaluation": ["baseline"], "seed": [0], "test_acc": [0.5]})
    good, bad = tmp_path / "good.parquet", tmp_path / "bad.parquet"
    rows.to_parquet(good)
    rows.drop(columns=["seed", "test_acc"]).to_parquet(bad)
    assert read_results([good, good], STUDY_COLUMNS)["test_acc"].tolist() == [0.5, 0.5]
    with pytest.raises(ArtifactError, match=rf"^{bad}: student result file lacks column\(s\) seed, test_acc$"):
        read_results([good, bad], STUDY_COLUMNS)
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(ArtifactError, match=r"junk.parquet: unreadable student result file \("):
        read_results([tmp_path / "junk.parquet"], STUDY_COLUMNS)
    with pytest.raises(ArtifactError, match="no student result files for the study"):
        read_results([], STUDY_COLUMNS)


def test_titled_table_and_text_round_trip_without_leftovers(tmp_path: Path):
    frame = pd.DataFrame({"arch": ["convnet", "alexnet"], "gap": [0.0, 0.125]})
    path = tmp_path / "out" / "table.parquet"
    write_table(frame, path, "Study: a title", "a note")
    title, note, stored = read_table(path)
    assert (title, note) == ("Study: a title", "a note")
    pd.testing.assert_frame_equal(stored, frame)
    plain = tmp_path / "plain.parquet"
    frame.to_parquet(plain)
    assert read_table(plain)[:2] == ("plain", "")  # no metadata: titled by the file name
    write_text("# page\n", tmp_path / "page.md")
    assert (tmp_path / "page.md").read_text() == "# page\n"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.name.startswith(".")) == []  # no temporary files left

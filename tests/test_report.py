import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import SYN_IPC

from elf_pipeline.infra.io import ArtifactError
from elf_pipeline.stages.report import collect, mean_std, summary_tables, write_report
from elf_pipeline.stages.students import train_students


def _runs() -> pd.DataFrame:
    rows = [
        # dataset, method, ipc, arch, evaluation, seed, test_acc, adapter
        ("digits", "random", 1, "convnet", "baseline", 0, 0.50, False),
        ("digits", "random", 1, "convnet", "baseline", 1, 0.60, False),
        ("digits", "random", 1, "convnet", "elf", 0, 0.70, False),
        ("digits", "random", 1, "convnet", "elf", 1, 0.80, False),
        ("digits", "random", 1, "resnet18", "baseline", 0, 0.30, False),
        ("digits", "random", 1, "resnet18", "baseline", 1, 0.30, False),
        ("digits", "random", 1, "resnet18", "elf", 0, 0.40, True),
        ("digits", "random", 1, "resnet18", "elf", 1, 0.50, True),
        ("digits", "random", 10, "convnet", "baseline", 0, 0.90, False),
    ]
    return pd.DataFrame(rows, columns=["dataset", "method", "ipc", "arch", "evaluation", "seed", "test_acc", "adapter"])


def test_mean_std_formatting():
    assert mean_std(pd.Series([0.5, 0.6])) == "55.0 ± 7.1"  # std of (50, 60) with ddof 1 = 7.07
    assert mean_std(pd.Series([0.25])) == "25.0 ± 0.0"
    assert mean_std(pd.Series([0.3, 0.3, 0.3])) == "30.0 ± 0.0"
    assert mean_std(pd.Series([0.1, 0.2, 0.6])) == "30.0 ± 26.5"  # sqrt(700) = 26.46


def test_summary_tables_render_expected_markdown():
    tables = summary_tables(_runs())
    assert [title for title, _ in tables] == ["digits · random · IPC 1", "digits · random · IPC 10"]
    expected_ipc1 = "\n".join([
        "| arch     | baseline   | elf          | Δ elf                        |",
        "|----------|------------|--------------|------------------------------|",
        "| convnet  | 55.0 ± 7.1 | 75.0 ± 7.1   | +20.0 ± 0.0 [+20.0, +20.0]   |",
        "| resnet18 | 30.0 ± 0.0 | 45.0 ± 7.1 ᵃ | +15.0 ± 7.1 [-48.5, +78.5] ~ |",
    ])
    expected_ipc10 = "\n".join([
        "| arch    | baseline   | elf   |",
        "|---------|------------|-------|",
        "| convnet | 90.0 ± 0.0 | –     |",
    ])
    assert tables[0][1] == expected_ipc1
    assert tables[1][1] == expected_ipc10


def test_summary_tables_delta_is_evaluation_minus_baseline():
    runs = _runs()
    runs.loc[(runs["arch"] == "convnet") & (runs["evaluation"] == "elf"), "test_acc"] = [0.45, 0.55]
    markdown = summary_tables(runs)[0][1]
    convnet_row = next(line for line in markdown.splitlines() if line.startswith("| convnet"))
    assert [cell.strip() for cell in convnet_row.strip("|").split("|")] == ["convnet", "55.0 ± 7.1", "50.0 ± 7.1",
                                                                                   "-5.0 ± 0.0 [-5.0, -5.0]"]


def test_protocol_line_names_where_the_training_differs():
    from elf_pipeline.stages.report.summary import protocol_line, setting

    runs = _runs().assign(train_lr=0.01, train_epochs=50)
    assert setting(runs, "train_lr") == "0.01" and setting(runs, "train_epochs") == "50"
    runs.loc[runs["arch"] == "resnet18", "train_lr"] = 0.005  # a per-architecture lr
    runs.loc[(runs["arch"] == "convnet") & (runs["evaluation"] == "elf"), "train_epochs"] = 100  # one evaluation's
    assert setting(runs, "train_lr") == "0.01 (resnet18: 0.005)"
    assert setting(runs, "train_epochs") == "50 (convnet elf: 100)"
    assert setting(runs, "train_momentum") == "–"  # not recorded
    line = protocol_line(runs)
    assert "SGD lr 0.01 (resnet18: 0.005)" in line and "50 (convnet elf: 100) epochs" in line


@pytest.fixture(scope="module")
def student_files(digits_h5, synset_h5, features_h5, tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    train = {"epochs": 1, "batch_size": 10, "dsa": False, "eval_batch_size": 256}
    identity = {"dataset": "digits", "method": "random", "ipc": SYN_IPC}
    baseline = root / "baseline.parquet"
    train_students(digits_h5, synset_h5, None, "convnet-w4", {"loss_mode": "task"}, train, [1, 0], baseline,
                   {**identity, "teacher": None, "evaluation": "baseline"}, device="cpu")
    elf = root / "elf.parquet"
    train_students(digits_h5, synset_h5, features_h5, "convnet-w4", {"loss_mode": "front_rear_task"}, train, [0, 1], elf,
                   {**identity, "teacher": "tiny", "evaluation": "elf"}, device="cpu")
    return root, [elf, baseline]


def test_write_report_writes_parquet_readable_by_pyarrow_alone(student_files):
    root, inputs = student_files
    runs_out, summary_out = root / "out" / "runs.parquet", root / "out" / "summary.md"
    runs = write_report(inputs, runs_out, summary_out)
    table = pq.read_table(runs_out)
    assert table.num_rows == 4
    records = table.to_pylist()
    assert [(r["evaluation"], r["seed"]) for r in records] == [("baseline", 0), ("baseline", 1), ("elf", 0), ("elf", 1)]
    source = pd.concat([pd.read_parquet(p) for p in inputs])
    expected = {(r.evaluation, r.seed): r.test_acc for r in source.itertuples()}
    assert {(r["evaluation"], r["seed"]): r["test_acc"] for r in records} == expected
    assert all(r["dataset"] == "digits" and r["ipc"] == SYN_IPC and r["arch"] == "convnet-w4" for r in records)
    assert len(runs) == 4
    summary = summary_out.read_text()
    assert summary.startswith("# ELF study summary")
    assert "digits · random · IPC 2" in summary
    assert sorted(p.name for p in runs_out.parent.iterdir()) == ["runs.parquet", "summary.md"]


def test_collect_errors_name_the_file(tmp_path, student_files):
    with pytest.raises(ArtifactError, match="no student result files"):
        collect([])
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(ArtifactError, match="unreadable result file") as info:
        collect([broken])
    assert str(broken) in str(info.value)
    _, inputs = student_files
    frame = pd.read_parquet(inputs[0]).drop(columns=["test_acc"])
    partial = tmp_path / "partial.parquet"
    frame.to_parquet(partial, index=False)
    with pytest.raises(ArtifactError, match="test_acc") as info:
        collect([partial])
    assert str(partial) in str(info.value)

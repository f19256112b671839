"""Report tables, the runs schema, the full-data reference and the figures, on tiny real data or
hand-built frames whose expected output is written here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from elf_pipeline import config as elf_config
from elf_pipeline.config import checks as config_checks
from elf_pipeline.infra.io import ArtifactError
from elf_pipeline.stages import report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[1]


def student_row(method: str, ipc: int, arch: str, evaluation: str, seed: int, test_acc: float) -> dict:
    """A result row with every required column of the runs schema, as students.py writes it."""
    elf = evaluation != "baseline"
    return {"dataset": "digits", "method": method, "ipc": ipc, "evaluation": evaluation,
            "teacher": "convnet" if elf else None, "arch": arch, "seed": seed, "test_acc": test_acc,
            "train_seconds": 1.5, "num_synthetic": 10 * ipc, "student_layer": None,
            "student_feature_shape": "128x4x4", "teacher_feature_shape": "128x4x4" if elf else None,
            "adapter": elf and arch != "convnet", "teacher_arch": "convnet" if elf else None,
            "teacher_test_acc": 0.9 if elf else None, "train_epochs": 8, "train_lr": 0.01, "train_momentum": 0.9,
            "train_weight_decay": 0.0005, "train_batch_size": 256, "train_lr_decay_at": 0.5, "train_lr_decay": 0.1,
            "train_eval_batch_size": 512, "dsa_strategy": "color_crop_cutout_flip_scale_rotate",
            "loss_mode": "front_rear_task" if elf else "task", "feature_loss": "ce", "lambda_front": 1.0,
            "lambda_rear": 1.0, "teacher_layer": "block3" if elf else None, "device": "cpu", "torch_version": "2",
            "package_version": "0.1.0", "python_version": "3.11", "synset_sha256": "ab" * 32,
            "features_sha256": "cd" * 32 if elf else None, "config_hash": "0123456789abcdef"}


# accuracy[(method, arch, evaluation)] = (seed 0, seed 1)
ACCURACY = {
    ("random", "convnet", "baseline"): (0.50, 0.52), ("random", "convnet", "elf"): (0.55, 0.57),
    ("random", "resnet18", "baseline"): (0.30, 0.34), ("random", "resnet18", "elf"): (0.40, 0.40),
    ("dm", "convnet", "baseline"): (0.60, 0.60), ("dm", "convnet", "elf"): (0.64, 0.66),
    ("dm", "resnet18", "baseline"): (0.40, 0.40), ("dm", "resnet18", "elf"): (0.50, 0.50),
}


def hand_runs() -> pd.DataFrame:
    rows = [student_row(method, 1, arch, evaluation, seed, accuracy[seed])
            for (method, arch, evaluation), accuracy in ACCURACY.items() for seed in (0, 1)]
    return report.conform(pd.DataFrame(rows), "runs", "hand-built")


def hand_reference() -> pd.DataFrame:
    rows = [{"dataset": "digits", "arch": arch, "seed": 0, "test_acc": acc, "train_seconds": 3.0,
             "peak_memory_mb": 100.0, "train_images": 100, "train_images_total": 1437, "train_epochs": 2,
             "train_lr": 0.01, "train_momentum": 0.9, "train_weight_decay": 0.0005, "train_batch_size": 256,
             "train_lr_decay_at": 0.5, "train_lr_decay": 0.1, "train_eval_batch_size": 512, "dsa_strategy": "none",
             "device": "cpu", "torch_version": "2", "package_version": "0.1.0", "python_version": "3.11",
             "data_sha256": "ef" * 32, "config_hash": "fedcba9876543210"}
            for arch, acc in (("convnet", 0.95), ("resnet18", 0.90))]
    return report.conform(pd.DataFrame(rows), "reference", "hand-built")


def write_student_files(tmp_path: Path, runs: pd.DataFrame) -> list[Path]:
    paths = []
    for (method, arch, evaluation), group in runs.groupby(["method", "arch", "evaluation"]):
        path = tmp_path / "students" / f"{method}_{arch}_{evaluation}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        group.drop(columns=["peak_memory_mb", "normalization", "zca"]).to_parquet(path, index=False)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- schema


def test_schema_lists_every_column_students_write() -> None:
    columns = report.load_schema("runs")
    assert set(student_row("dm", 1, "convnet", "elf", 0, 0.5)) <= set(columns)
    assert {c.type for c in columns.values()} <= {"string", "int", "float", "bool"}
    assert all(c.description for c in columns.values())
    optional = {name for name, c in columns.items() if not c.required}
    assert {"peak_memory_mb", "normalization", "zca"} <= optional


# Reads a Parquet file with pandas made unimportable.
PYARROW_ONLY = """
import sys


class NoPandas:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "pandas":
            raise ImportError("pandas is blocked")


sys.meta_path.insert(0, NoPandas())
import pyarrow.parquet as pq

table = pq.read_table(sys.argv[1])
assert "pandas" not in sys.modules
print(table.num_rows, table.column("test_acc").to_pylist()[0], table.column("teacher").null_count)
"""


def test_runs_parquet_is_readable_by_pandas_and_by_pyarrow_alone(tmp_path: Path) -> None:
    files = write_student_files(tmp_path, hand_runs())
    runs_out, summary_out = tmp_path / "report" / "runs.parquet", tmp_path / "report" / "summary.md"
    report.write_report(files, runs_out, summary_out)
    runs = pd.read_parquet(runs_out)
    assert len(runs) == 16 and list(runs.columns[:7]) == ["dataset", "method", "ipc", "evaluation", "teacher", "arch", "seed"]
    assert runs["peak_memory_mb"].isna().all()  # absent in the inputs: filled with NaN
    assert report.read_runs(runs_out)["ipc"].dtype == np.int64
    schema = pq.read_schema(runs_out)
    assert str(schema.field("ipc").type) == "int64" and str(schema.field("test_acc").type) == "double"
    assert str(schema.field("adapter").type) == "bool" and "string" in str(schema.field("dataset").type)
    out = subprocess.run([sys.executable, "-c", PYARROW_ONLY, str(runs_out)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["16", "0.6", "8"]


def test_missing_required_column_is_named_with_its_file(tmp_path: Path) -> None:
    files = write_student_files(tmp_path, hand_runs())
    broken = pd.read_parquet(files[0]).drop(columns=["train_lr"])
    broken.to_parquet(files[0], index=False)
    with pytest.raises(ArtifactError, match=rf"{files[0].name}: missing required column 'train_lr'"):
        report.collect(files)


def test_wrong_dtype_is_named_with_its_file(tmp_path: Path) -> None:
    files = write_student_files(tmp_path, hand_runs())
    broken = pd.read_parquet(files[1])
    broken["test_acc"] = broken["test_acc"].map(lambda v: f"{v:.2f}")
    broken.to_parquet(files[1], index=False)
    with pytest.raises(ArtifactError, match=rf"{files[1].name}: column 'test_acc' must be float"):
        report.collect(files)


def test_null_in_non_nullable_column_fails() -> None:
    frame = pd.DataFrame([student_row("dm", 1, "convnet", "baseline", 0, 0.5)])
    frame["arch"] = None
    with pytest.raises(ArtifactError, match="column 'arch'"):
        report.conform(frame, "runs", "x.parquet")


# --------------------------------------------------------------------------- tables


EXPECTED_PAPER_TABLE = """\
| method                         | convnet                        | resnet18                        |
|--------------------------------|--------------------------------|---------------------------------|
| full real data (upper bound)   | 95.0 ± 0.0                     | 90.0 ± 0.0                      |
| random real subset (reference) | 51.0 ± 1.4 → 56.0 ± 1.4 (+5.0) | 32.0 ± 2.8 → 40.0 ± 0.0 (+8.0)  |
| dm                             | 60.0 ± 0.0 → 65.0 ± 1.4 (+5.0) | 40.0 ± 0.0 → 50.0 ± 0.0 (+10.0) |"""

EXPECTED_GAP_TABLE = """\
| method                         | evaluation   | same-arch   | resnet18       |
|--------------------------------|--------------|-------------|----------------|
| random real subset (reference) | elf          | convnet     | 42% [-92, 176] |
| dm                             | elf          | convnet     | 50% [50, 50]   |"""


def test_paper_table_layout() -> None:
    tables = report.paper_tables(hand_runs(), hand_reference())
    assert [(dataset, table.title) for dataset, table in tables] == [("digits", "IPC 1 · baseline → elf")]
    table = tables[0][1]
    assert table.markdown() == EXPECTED_PAPER_TABLE
    flipped = hand_runs().sort_values("arch", ascending=False)  # the distillation architecture still comes first
    assert list(report.paper_tables(flipped)[0][1].frame.columns) == ["method", "convnet", "resnet18"]
    notes = report.reference_notes(hand_runs(), hand_reference(), "digits")
    assert "100 of the 1,437 real training images, 2 epochs, 1 seed" in notes[0]
    assert notes[1].startswith("random real subset (reference): real training images drawn at random")


def test_gap_closed_table_and_definition() -> None:
    runs = hand_runs()
    gaps = report.gap_closed(runs).set_index(["method", "arch"])["gap_closed"]
    assert gaps[("dm", "resnet18")] == pytest.approx((0.50 - 0.40) / (0.60 - 0.40))
    assert gaps[("random", "resnet18")] == pytest.approx((0.40 - 0.32) / (0.51 - 0.32))
    tables = report.gap_tables(runs)
    assert tables[0][1].title == "Gap closed · IPC 1"
    assert tables[0][1].markdown() == EXPECTED_GAP_TABLE


def test_gap_closed_is_undefined_without_a_gap() -> None:
    runs = hand_runs()
    # resnet18 under baseline as good as convnet (gap 0.2 points < GAP_EPS): nothing to close
    runs.loc[(runs["method"] == "dm") & (runs["arch"] == "resnet18") & (runs["evaluation"] == "baseline"), "test_acc"] = 0.598
    gaps = report.gap_closed(runs).set_index(["method", "arch"])["gap_closed"]
    assert np.isnan(gaps[("dm", "resnet18")]) and np.isfinite(gaps[("random", "resnet18")])
    # another distillation architecture that is not a student: undefined everywhere
    assert report.gap_closed(runs, {"dm": "vgg11"}).query("method == 'dm'")["gap_closed"].isna().all()


def test_summary_notes_missing_references() -> None:
    runs = hand_runs()
    text = report.render_summary(runs[runs["method"] == "dm"])
    assert "No random-real-subset row" in text and "No full-real-data row" in text
    assert "| dm " in text and "## digits · dm · IPC 1" in text


def test_stage_table_from_benchmark_files(tmp_path: Path) -> None:
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    files = []
    for stage, job, seconds, rss in (("students", "a", 10.0, 300.0), ("students", "b", 30.0, 500.0),
                                      ("reference", "convnet", 5.0, 800.0)):
        path = tmp_path / "benchmarks" / "digits" / stage / f"{job}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + f"{seconds}\t0:00:10\t{rss}\t1\t1\t1\t0\t0\t50\t{seconds / 2}\n")
        files.append(path)
    files.append(tmp_path / "benchmarks" / "digits" / "students" / "missing.tsv")  # skipped
    table = report.stage_table(report.read_benchmarks(files))
    assert table.markdown() == """\
| dataset   | stage     |   jobs |   wall s (total) |   wall s (mean) |   wall s (max) |   CPU s (total) |   peak RSS MiB (max) |
|-----------|-----------|--------|------------------|-----------------|----------------|-----------------|----------------------|
| digits    | students  |      2 |             40.0 |            20.0 |           30.0 |            20.0 |                  500 |
| digits    | reference |      1 |              5.0 |             5.0 |            5.0 |             2.5 |                  800 |"""


def test_extra_tables_hook_and_html(tmp_path: Path) -> None:
    files = write_student_files(tmp_path, hand_runs())
    extra = tmp_path / "study.parquet"
    report.write_extra_table(pd.DataFrame({"norm": ["instance", "batch"], "acc": [0.61234, 0.5]}), extra,
                             "Normalisation study", "one row per normalisation")
    html_out, summary_out = tmp_path / "summary.html", tmp_path / "summary.md"
    report.write_report(files, tmp_path / "runs.parquet", summary_out, html_out=html_out, extra=[extra])
    summary = summary_out.read_text()
    assert "## Normalisation study\n\n| norm     | acc    |" in summary and "| instance | 0.6123 |" in summary
    assert "one row per normalisation" in summary
    page = html_out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<h2>Normalisation study</h2>" in page
    assert "<td>51.0 ± 1.4 → 56.0 ± 1.4 (+5.0)</td>" in page


# --------------------------------------------------------------------------- config


def test_reference_block_defaults_and_validation() -> None:
    import yaml

    smoke = yaml.safe_load((REPO / "tests" / "configs" / "smoke.yaml").read_text())
    smoke.pop("reference", None)
    assert elf_config.reference_config(smoke) == {"enabled": True, "full": {"epochs": 30, "train_limit": None, "seeds": [0]}}
    assert elf_config.full_train_config(smoke)["epochs"] == 30
    assert elf_config.full_train_config(smoke)["batch_size"] == smoke["students"]["train"]["batch_size"]
    assert len(elf_config.reference_jobs(smoke)) == len(smoke["students"]["archs"])
    smoke["reference"] = {"enabled": False}
    assert elf_config.reference_jobs(smoke) == []
    elf_config.validate_schema(smoke, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    smoke["reference"] = {"full": {"train": {"batch_size": 8}}}
    assert elf_config.full_train_config(smoke)["batch_size"] == 8
    smoke["reference"] = {"full": {"train": {"epochs": 8}}}
    with pytest.raises(elf_config.ConfigError, match=r"config key reference\.full\.train\.epochs: set reference\.full\.epochs"):
        config_checks.check_config(smoke)
    smoke["reference"] = {"full": {"epochz": 3}}
    with pytest.raises(elf_config.ConfigError, match=r"config key reference\.full\.epochz: unknown key"):
        elf_config.validate_schema(smoke, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    assert elf_config.distill_arch({"distillation": {"methods": {"dm": {"model": "convnet-w64"}, "random": {}}}}, "dm") == "convnet-w64"


# --------------------------------------------------------------------------- full-data reference


def test_train_full_rows_match_schema_and_repeat(tmp_path: Path, digits_h5: Path) -> None:
    from elf_pipeline.stages.reference import train_full

    train = {"epochs": 1, "batch_size": 16, "dsa": True, "eval_batch_size": 256}
    first = train_full(digits_h5, "convnet-w8", train, [0, 1], tmp_path / "a.parquet", {"dataset": "digits"}, train_limit=20)
    again = train_full(digits_h5, "convnet-w8", train, [0], tmp_path / "b.parquet", {"dataset": "digits"}, train_limit=20)
    rows = report.collect_reference([tmp_path / "a.parquet"])
    assert list(rows["seed"]) == [0, 1] and (rows["train_images"] == 20).all()
    assert (rows["train_images_total"] == 50).all() and rows["test_acc"].between(0, 1).all()
    assert (rows["peak_memory_mb"] > 0).all()
    assert first["test_acc"].iloc[0] == again["test_acc"].iloc[0]  # same seed on CPU -> same number


def test_balanced_subset_takes_every_class() -> None:
    import torch

    from elf_pipeline.stages.reference import balanced_subset

    labels = torch.arange(10).repeat(7)
    keep = balanced_subset(labels, 30, 10, torch.Generator().manual_seed(0))
    assert len(keep) == 30 and torch.bincount(labels[keep], minlength=10).tolist() == [3] * 10
    assert torch.equal(keep, balanced_subset(labels, 30, 10, torch.Generator().manual_seed(0)))


# --------------------------------------------------------------------------- figures


def assert_png(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.width > 0 and image.height > 0
        return image.size


def test_result_figures_are_pngs(tmp_path: Path) -> None:
    from elf_pipeline.stages.report import figures

    runs_path, reference_path = tmp_path / "runs.parquet", tmp_path / "reference.parquet"
    hand_runs().to_parquet(runs_path, index=False)
    hand_reference().to_parquet(reference_path, index=False)
    figures.plot_results(runs_path, reference_path, "digits", tmp_path / "acc.png", tmp_path / "gap.png")
    width, height = assert_png(tmp_path / "acc.png")
    assert width > 200 and height > 100
    assert_png(tmp_path / "gap.png")
    # nothing to plot (no gap without a second architecture) still gives a figure that says so
    only_convnet = hand_runs().query("arch == 'convnet'")
    figures.plot_gap_closed(only_convnet, "digits", tmp_path / "none.png")
    assert_png(tmp_path / "none.png")
    with pytest.raises(ArtifactError, match="no runs of dataset 'cifar10'"):
        figures.plot_accuracy(hand_runs(), hand_reference(), "cifar10", tmp_path / "x.png")


def test_synset_grid_denormalises(tmp_path: Path, digits_h5: Path, synset_h5: Path) -> None:
    import h5py

    from elf_pipeline.artifacts.data_file import load_split
    from elf_pipeline.stages.report import figures

    images, _, info = load_split(digits_h5, "train")
    with h5py.File(digits_h5, "r") as h5:
        raw = h5["train/images"][:4].astype(np.float32) / 255
    restored = figures.denormalize(images[:4].numpy(), info.mean, info.std)
    np.testing.assert_allclose(restored, raw, atol=1e-5)
    out = tmp_path / "grid.png"
    figures.plot_synset(synset_h5, digits_h5, out)
    width, height = assert_png(out)
    assert width > height  # 10 class columns, 2 images per class


def test_teacher_curve(tmp_path: Path, teacher) -> None:
    from elf_pipeline.stages.report import figures

    history = json.loads(Path(teacher[0]).with_suffix(".json").read_text())
    assert history["epochs"]
    figures.plot_teacher(Path(teacher[0]).with_suffix(".json"), tmp_path / "teacher.png")
    assert_png(tmp_path / "teacher.png")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ArtifactError, match="bad.json: not a teacher history"):
        figures.plot_teacher(bad, tmp_path / "bad.png")


def test_cli_writes_report_and_figures(tmp_path: Path, digits_h5: Path, synset_h5: Path) -> None:
    from elf_pipeline.cli import main

    files = write_student_files(tmp_path, hand_runs())
    reference = tmp_path / "full.parquet"
    hand_reference().to_parquet(reference, index=False)
    out = tmp_path / "out"
    assert main(["report", "--runs", str(out / "runs.parquet"), "--summary", str(out / "summary.md"),
                 "--html", str(out / "summary.html"), "--reference-out", str(out / "reference.parquet"),
                 *map(str, files), "--full", str(reference), "--benchmarks", "--extra",
                 "--distill-arch", "dm=convnet", "random=convnet"]) == 0
    assert "full real data (upper bound)" in (out / "summary.md").read_text()
    assert len(pd.read_parquet(out / "reference.parquet")) == 2
    assert main(["report-synset", "--synset", str(synset_h5), "--data", str(digits_h5), "--out", str(out / "s.png")]) == 0
    assert_png(out / "s.png")
    files[0].write_bytes(b"not parquet")
    assert main(["report", "--runs", str(out / "r.parquet"), "--summary", str(out / "s.md"), *map(str, files)]) == 2

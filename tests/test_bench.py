import json
import os
import shlex
import subprocess

import numpy as np
import pytest
import torch
from conftest import REPO, write_idx

from elf_pipeline.artifacts.data_file import load_split, read_info
from elf_pipeline.bench.official_loop import official_loop
from elf_pipeline.bench.run import (
    count_flops,
    format_table,
    measure_norms,
    measure_peak,
    random_real_synset,
    resolve_data,
    teacher_features,
)
from elf_pipeline.cli import build_parser, main
from elf_pipeline.engine.elf import Evaluation, fit_students
from elf_pipeline.engine.training import TrainConfig
from elf_pipeline.infra.errors import DataSourceError

ELF = Evaluation(loss_mode="front_rear_task", feature_loss="ce")
ROW_FIELDS = ["arch", "variant", "trainer", "seeds", "epochs", "train_images", "test_images", "train_seconds",
              "test_seconds", "total_seconds", "cpu_seconds", "train_images_per_s", "test_images_per_s", "images_per_s",
              "train_gflops", "test_gflops", "train_peak_fraction", "test_peak_fraction", "test_acc", "test_acc_mean",
              "test_acc_std", "peak_rss_mb", "device_peak_memory_mb"]


@pytest.fixture(scope="module")
def bench_result(digits_h5, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    status = main(["bench", "--data", str(digits_h5), "--work", str(out.parent), "--archs", "convnet-w8",
                   "--seeds", "0", "1", "--ipc", "2", "--epochs", "1", "--test-limit", "64", "--eval-batch-size", "32",
                   "--teacher-arch", "convnet-w16", "--device", "cpu", "--vectorize", "true", "--precisions", "fp32", "bf16",
                   "--compile", "false", "--out", str(out)])
    assert status == 0
    return json.loads(out.read_text())


def test_bench_writes_json_with_the_required_fields(bench_result):
    result = bench_result
    rows = result["rows"]
    assert [(r["arch"], r["variant"]) for r in rows] == [("convnet-w8", "official_loop"), ("convnet-w8", "pipeline_fp32"),
                                                         ("convnet-w8", "pipeline_bf16")]
    assert rows[0]["trainer"] == "loop" and rows[1]["trainer"] == rows[2]["trainer"] == "vectorized"
    assert (rows[1]["precision"], rows[2]["precision"]) == ("fp32", "bf16") and not rows[2]["compiled"]
    for row in rows:
        for name in ROW_FIELDS:
            assert name in row, name
        assert row["seeds"] == [0, 1] and row["epochs"] == 1
        assert row["train_images"] == 2 * 1 * 20 and row["test_images"] == 2 * 64
        assert row["total_seconds"] == pytest.approx(row["train_seconds"] + row["test_seconds"])
        assert row["train_images_per_s"] > 0 and row["test_gflops"] > 0 and 0 < row["test_peak_fraction"]
        assert all(0 <= acc <= 1 for acc in row["test_acc"]) and len(row["test_acc"]) == 2
        assert row["peak_rss_mb"] > 10 and row["device_peak_memory_mb"] is None
    comparison, bf16_vs_official, bf16_vs_fp32 = result["comparisons"]
    assert (bf16_vs_official["baseline"], bf16_vs_official["variant"]) == ("official_loop", "pipeline_bf16")
    assert (bf16_vs_fp32["baseline"], bf16_vs_fp32["variant"]) == ("pipeline_fp32", "pipeline_bf16")
    assert bf16_vs_fp32["speedup"] == pytest.approx(rows[1]["total_seconds"] / rows[2]["total_seconds"])
    assert comparison["arch"] == "convnet-w8"
    assert comparison["speedup"] == pytest.approx(rows[0]["total_seconds"] / rows[1]["total_seconds"])
    difference = rows[1]["test_acc_mean"] - rows[0]["test_acc_mean"]
    assert comparison["acc_difference"] == pytest.approx(difference)
    assert comparison["acc_within_noise"] == (abs(difference) <= 2 * comparison["acc_standard_error"] + 1e-12)
    peaks = result["peak_gflops"]
    assert {name: peak["dtype"] for name, peak in peaks.items()} == {"bf16": "bfloat16", "fp32": "float32"}
    for peak in peaks.values():
        assert peak["peak"] >= max(peak["before"]["peak"], peak["after"]["peak"]) > 0
    assert rows[2]["train_peak_fraction"] == pytest.approx(rows[2]["train_gflops"] / peaks["bf16"]["peak"])
    assert result["flops"]["convnet-w8"]["train_per_image"] > result["flops"]["convnet-w8"]["test_per_image"] > 0
    protocol = result["protocol"]
    assert protocol["train"]["epochs"] == 1 and protocol["evaluation"]["loss_mode"] == "front_rear_task"
    assert protocol["num_synthetic"] == 20 and protocol["num_test"] == 64 and protocol["teacher_arch"] == "convnet-w16"
    machine = result["machine"]
    assert machine["device"] == "cpu" and machine["torch_threads"] >= 1 and machine["cpu_model"]
    assert machine["cpu_capability"] and isinstance(machine["native_bf16"], bool) and "cpu_flags" in machine
    assert len(machine["loadavg_before"]) == 3 and len(machine["loadavg_after"]) == 3
    assert result["command"].startswith("elf-pipeline bench --device cpu --archs convnet-w8")
    table = format_table(result)
    assert "| convnet-w8 | pipeline_bf16" in table and "pipeline_bf16 / pipeline_fp32" in table and "load average" in table


def test_make_targets_parse_into_the_bench_command():
    def command(*make_args: str):
        listing = subprocess.run(["make", "-n", *make_args], cwd=REPO, capture_output=True, text=True, check=True).stdout
        [line] = [line for line in listing.splitlines() if "-m elf_pipeline" in line and " bench " in line]
        words = shlex.split(line)
        return build_parser().parse_args(words[words.index("elf_pipeline") + 1:])

    gpu = command("bench-gpu")
    assert gpu.device == "cuda" and gpu.vectorize == "true" and gpu.precisions == ["bf16"] and gpu.compile == "false"
    assert gpu.test_limit == 0
    assert command("bench-gpu", "BENCH_GPU_OPTIONS=--vectorize true --precisions bf16 --compile true").compile == "true"
    assert gpu.archs == ["convnet", "resnet18"] and gpu.seeds == [0, 1, 2, 3, 4] and gpu.ipc == 10
    assert gpu.out.startswith("results/bench/")
    cpu = command("bench", "BENCH_EPOCHS=7")
    assert cpu.device == "cpu" and cpu.epochs == 7 and cpu.precisions == ["fp32", "auto"] and cpu.compile == "auto"
    assert cpu.vectorize == "auto"
    assert cpu.contend == 0 and cpu.threads is None
    contended = command("bench", "BENCH_CONTEND=2", "BENCH_THREADS=1")
    assert contended.contend == 2 and contended.threads == 1 and contended.stage == "bench"


def test_official_loop_and_pipeline_train_the_same_protocol(digits_h5):
    """With DSA off and one full batch per epoch, the order of the samples cannot matter: the
    official-style loop (DataLoader, two passes) and the pipeline must end at the same students."""
    info = read_info(digits_h5)
    images, labels = random_real_synset(digits_h5, 2, seed=0)
    test_images, test_labels, _ = load_split(digits_h5, "test", limit=96)
    target = teacher_features("convnet-w16", images, info.num_classes, seed=0)
    config = TrainConfig(epochs=6, batch_size=64, dsa=None, eval_batch_size=96)
    official = official_loop("convnet-w8", ELF, config, images, labels, target, test_images, test_labels, [0, 1],
                             info.num_classes)
    pipeline = fit_students("convnet-w8", ELF, config, images, labels, test_images, test_labels, [0, 1],
                            info.num_classes, target=target, vectorize="false")
    assert [o.test_acc for o in official] == pytest.approx([r.test_acc for r in pipeline.seeds], abs=1 / 96 + 1e-9)
    assert all(o.train_seconds > 0 and o.test_seconds > 0 for o in official)


def test_synset_features_and_flops(digits_h5):
    info = read_info(digits_h5)
    images, labels = random_real_synset(digits_h5, 3, seed=1)
    assert images.shape == (30, 1, 16, 16) and labels.tolist() == [c for c in range(10) for _ in range(3)]
    again, _ = random_real_synset(digits_h5, 3, seed=1)
    assert torch.equal(images, again)
    assert not torch.equal(images, random_real_synset(digits_h5, 3, seed=2)[0])
    train_images, train_labels, _ = load_split(digits_h5, "train")
    for image, label in zip(images[:5], labels[:5], strict=True):  # real training images of their class
        match = (train_images - image).flatten(1).abs().amax(dim=1) == 0
        assert match.any() and (train_labels[match] == label).all()
    target = teacher_features("convnet-w16", images, info.num_classes, seed=0)
    assert target.shape == (30, 16, 2, 2)
    flops = count_flops("convnet-w8", ELF, target, images, labels, info.num_classes)
    # forward + backward of the front is about three forward passes, plus the rear terms and adapters
    assert 2.5 < flops["train_per_image"] / flops["test_per_image"] < 5


def test_measure_peak_reports_positive_rates():
    peak = measure_peak(torch.device("cpu"), repeats=1)
    assert set(peak) == {"conv", "conv_channels_last", "matmul", "peak"}
    assert peak["peak"] == max(peak["conv"], peak["conv_channels_last"], peak["matmul"]) > 0.1


def test_missing_data_is_prepared_from_fashion_mnist_files(tmp_path):
    root = tmp_path / "fashion-mnist"
    root.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    work = tmp_path / "work"
    path = resolve_data(tmp_path / "missing.h5", work, str(root))
    assert path == work / "fashion_mnist" / "data.h5" and path.exists()
    info = read_info(path)
    assert info.source == "fashion_mnist" and info.image_size == 32 and info.num_classes == 10
    stamp = os.stat(path).st_mtime_ns
    assert resolve_data(None, work, str(root)) == path and os.stat(path).st_mtime_ns == stamp  # prepared once
    assert resolve_data(path, tmp_path / "elsewhere", None) == path  # an existing file is used as is


def test_missing_fashion_mnist_files_fail_in_one_line_naming_the_folder(tmp_path):
    with pytest.raises(DataSourceError, match=r"preparing fashion_mnist into .*: .*/absent: dataset folder not found"):
        resolve_data(None, tmp_path / "work", str(tmp_path / "absent"))
    assert not (tmp_path / "work" / "fashion_mnist" / "data.h5").exists()


def test_the_norm_options_compute_group_norms_maths_and_are_timed():
    rows = measure_norms(torch.device("cpu"), ["fp32", "bf16"], batch=4, channels=8, size=8, repeats=1, modes=(False,))
    assert {(r["norm"], r["layout"], r["precision"]) for r in rows} == {
        (norm, layout, precision) for norm in ("GroupNorm(C, C)", "InstanceNorm2d(affine)", "var_mean formulation")
        for layout in ("contiguous", "channels_last") for precision in ("fp32", "bf16")}
    assert all(r["ms"] > 0 and r["max_abs_difference"] < 1e-4 for r in rows)

"""Student-training benchmark: the pipeline's trainer against a plain loop written like the official code.

Both variants do identical work in one process: the same architectures, synthetic set, teacher
features, ELF objective, seeds (model and adapter initialisation), epochs and test images.

(a) ``official_loop`` trains one seed at a time the way the official ELF/DC code does: a torch
    ``DataLoader`` over the synthetic tensors, DSA per batch, a full forward pass for the logits and
    a second pass through ``front`` for the feature term, ``loss.item()`` and a host-side accuracy
    per batch, then a test pass through a ``DataLoader`` of 256 images (under ``torch.no_grad``).
(b) ``pipeline`` calls ``elf.fit_students``, the function behind every ``train_student`` job:
    tensors stay on the device, one ``front`` pass serves both losses, no per-batch host syncs,
    channels-last convolutions, an inference-mode test pass in large batches, and on request
    (or ``auto`` on CUDA) all seeds in one vectorised pass, optionally with AMP and torch.compile.

Reported per variant: images/s, achieved GFLOP/s and the test pass as a fraction of the machine's
conv/matmul peak measured in the same process.  FLOPs are counted with ``FlopCounterMode`` on one
training step of the pipeline's objective and one test forward pass (convolutions and matrix
products only), so both variants are credited with the same useful work; (a) actually computes
more (its second front pass).  The teacher is a randomly initialised network and the synthetic set
random real images: the benchmark measures speed, for which the teacher's quality does not matter.
The accuracies of (a) and (b) must agree within noise (same protocol, different random streams:
(a) shuffles through the DataLoader's sampler).
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from elf_pipeline.artifacts.data_file import load_split, normalize, read_info
from elf_pipeline.bench.contention import Contenders, busy_warning, loadavg
from elf_pipeline.bench.kernels import measure_norms, measure_peak
from elf_pipeline.bench.official_loop import SeedOutcome, official_loop, synchronize
from elf_pipeline.engine.augment import dsa_config
from elf_pipeline.engine.elf import Evaluation, build_objective, fit_students, peak_memory_mb
from elf_pipeline.engine.precision import Numerics, cpu_protocol, native_bf16
from elf_pipeline.engine.training import Timer, TrainConfig, build_seeded, resolve_device
from elf_pipeline.infra.errors import DataSourceError, InputError
from elf_pipeline.infra.io import write_json
from elf_pipeline.models import build

log = logging.getLogger(__name__)

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist package


@dataclass
class BenchSettings:
    archs: list[str] = field(default_factory=lambda: ["convnet", "resnet18"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    ipc: int = 10
    epochs: int = 2
    test_limit: int | None = 1000  # first N test images (None: all)
    batch_size: int = 256
    eval_batch_size: int = 1024  # the pipeline's test batch; the official loop tests in batches of 256
    official_eval_batch_size: int = 256
    teacher_arch: str = "convnet-w512"
    loss_mode: str = "front_rear_task"
    feature_loss: str = "ce"
    dsa: bool = True
    device: str = "auto"
    vectorize: str = "auto"
    precisions: list[str] = field(default_factory=lambda: ["fp32", "auto"])  # one pipeline row each (after resolving)
    compile: str = "auto"
    cuda_graphs: str = "auto"
    seed: int = 0  # picks the synthetic images and initialises the teacher
    contend: int = 0  # > 0: run everything again beside this many one-thread training jobs
    norms: bool = False  # also time the instance-norm options (measure_norms)


# --------------------------------------------------------------------------- inputs

def resolve_data(data: str | os.PathLike | None, work: str | os.PathLike, root: str | None = FASHION_MNIST_ROOT,
                 source: str = "fashion_mnist", image_size: int = 32) -> Path:
    """``data`` when it exists, else ``<work>/<source>/data.h5``, prepared from ``root`` on first use
    by the ``data`` stage, run in its own process as the workflow runs it."""
    if data is not None and Path(data).exists():
        return Path(data)
    out = Path(work) / source / "data.h5"
    if not out.exists():
        log.info("preparing %s from %s into %s", source, root, out)
        settings = {"source": source, "image_size": image_size, "resize": "pad", "root": root}
        command = [sys.executable, "-m", "elf_pipeline", "data", "--settings", json.dumps(settings), "--out", str(out)]
        path = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")]))
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path})
        if done.returncode:
            lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
            raise DataSourceError(f"preparing {source} into {out}: {lines[-1].split(': error: ', 1)[-1]}")
    return out


def random_real_synset(data: str | os.PathLike, ipc: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``ipc`` random real training images per class (class-major), read without loading the split."""
    info = read_info(data)
    generator = torch.Generator().manual_seed(seed)
    with h5py.File(data, "r") as h5:
        all_labels = torch.from_numpy(h5["train/labels"][:].astype(np.int64))
        chosen = []
        for label in range(info.num_classes):
            index = torch.nonzero(all_labels == label).flatten()
            if len(index) < ipc:
                raise InputError(f"{data}: class {label} has {len(index)} training images, fewer than ipc={ipc}")
            chosen.append(index[torch.randperm(len(index), generator=generator)[:ipc]])
        picked = torch.cat(chosen).numpy()
        order = np.argsort(picked)
        rows = np.empty((len(picked), *h5["train/images"].shape[1:]), dtype=np.uint8)
        rows[order] = h5["train/images"][picked[order]]  # h5py reads increasing indices only
    return normalize(rows, info), all_labels[picked]


def teacher_features(arch: str, images: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """Features at the split layer of a randomly initialised teacher (speed does not depend on training it)."""
    teacher = build_seeded(lambda: build(arch, images.shape[1], num_classes, images.shape[-1]), seed).to(images.device)
    with torch.no_grad():
        return teacher.eval().front(images)


# --------------------------------------------------------------------------- measuring

def count_flops(arch: str, spec: Evaluation, target: torch.Tensor | None, images: torch.Tensor, labels: torch.Tensor,
                num_classes: int) -> dict[str, float]:
    """Counted FLOPs per image of one training step (ELF objective, forward + backward) and of one
    test forward pass.  Doubles as the warm-up of both variants."""
    model = build_seeded(lambda: build(arch, images.shape[1], num_classes, images.shape[-1]), 0).to(images.device)
    batch = min(8, len(labels))
    objective, _ = build_objective(spec, model, images, 1, target)
    index = torch.arange(batch, device=images.device)
    with FlopCounterMode(display=False) as counter:
        objective(model, images[:batch], labels[:batch], index).backward()
    train_flops = counter.get_total_flops() / batch
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(images[:batch])
    return {"train_per_image": train_flops, "test_per_image": counter.get_total_flops() / batch}


# --------------------------------------------------------------------------- the benchmark

def _row(arch: str, variant: str, trainer: str, outcomes: list[SeedOutcome], epochs: int, n_train: int, n_test: int,
         flops: dict[str, float]) -> dict:
    train_seconds = sum(o.train_seconds for o in outcomes)
    test_seconds = sum(o.test_seconds for o in outcomes)
    train_images, test_images = len(outcomes) * epochs * n_train, len(outcomes) * n_test
    accuracies = [o.test_acc for o in outcomes]
    test_gflops = flops["test_per_image"] * test_images / test_seconds / 1e9
    return {
        "arch": arch, "variant": variant, "trainer": trainer, "seeds": [o.seed for o in outcomes],
        "epochs": epochs, "train_images": train_images, "test_images": test_images,
        "train_seconds": train_seconds, "test_seconds": test_seconds, "total_seconds": train_seconds + test_seconds,
        "train_images_per_s": train_images / train_seconds, "test_images_per_s": test_images / test_seconds,
        "images_per_s": (train_images + test_images) / (train_seconds + test_seconds),
        "train_gflops": flops["train_per_image"] * train_images / train_seconds / 1e9,
        "test_gflops": test_gflops,
        "test_acc": accuracies, "test_acc_mean": statistics.fmean(accuracies),
        "test_acc_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "peak_rss_mb": peak_memory_mb(),
    }


def _comparison(official: dict, pipeline: dict) -> dict:
    seeds = len(official["test_acc"])
    standard_error = math.sqrt((official["test_acc_std"] ** 2 + pipeline["test_acc_std"] ** 2) / seeds)
    difference = pipeline["test_acc_mean"] - official["test_acc_mean"]
    return {"arch": official["arch"], "baseline": official["variant"], "variant": pipeline["variant"],
            "speedup": official["total_seconds"] / pipeline["total_seconds"],
            "speedup_train": official["train_seconds"] / pipeline["train_seconds"],
            "speedup_test": official["test_seconds"] / pipeline["test_seconds"],
            "speedup_cpu_time": official["cpu_seconds"] / pipeline["cpu_seconds"],
            "acc_difference": difference, "acc_standard_error": standard_error,
            "acc_within_noise": abs(difference) <= 2 * standard_error + 1e-12}


def _machine(device: torch.device) -> dict:
    info = {"device": device.type, **{k: v for k, v in cpu_protocol("fp32").items() if k.startswith("cpu_")},
            "native_bf16": native_bf16(device), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
            "python_version": platform.python_version()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


@dataclass
class Workload:
    """What both variants train and test on, identical for every architecture and condition."""

    spec: Evaluation
    config: TrainConfig
    images: torch.Tensor
    labels: torch.Tensor
    target: torch.Tensor | None
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int


def _compare(settings: BenchSettings, work: Workload, device: torch.device,
             flops_by_arch: dict[str, dict[str, float]]) -> tuple[list[dict], list[dict], list[str]]:
    """Both variants for every architecture under the machine's present load: rows, comparisons, notes."""
    rows, comparisons, notes = [], [], []
    for arch in settings.archs:
        if arch not in flops_by_arch:
            flops_by_arch[arch] = count_flops(arch, work.spec, work.target, work.images, work.labels, work.num_classes)
        flops = flops_by_arch[arch]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        cpu_start = time.process_time()
        official = official_loop(arch, work.spec, work.config, work.images, work.labels, work.target, work.test_images,
                                 work.test_labels, settings.seeds, work.num_classes, settings.official_eval_batch_size)
        official_row = _row(arch, "official_loop", "loop", official, settings.epochs, len(work.labels),
                            len(work.test_labels), flops)
        official_row["cpu_seconds"] = time.process_time() - cpu_start
        official_row["device_peak_memory_mb"] = (torch.cuda.max_memory_allocated(device) / 2**20
                                                 if device.type == "cuda" else None)
        rows.append(official_row)
        pipelines = []
        for numerics in pipeline_numerics(settings, device):
            cpu_start = time.process_time()
            with Timer() as timer:
                fit = fit_students(arch, work.spec, work.config, work.images, work.labels, work.test_images.to(device),
                                   work.test_labels.to(device), settings.seeds, work.num_classes, target=work.target,
                                   vectorize=settings.vectorize, precision=numerics.precision, compile=numerics.compile,
                                   desc="bench", cuda_graphs=settings.cuda_graphs)
                synchronize(device)
            pipeline_cpu = time.process_time() - cpu_start
            pipeline = [SeedOutcome(r.seed, r.test_acc, r.train_seconds, r.test_seconds) for r in fit.seeds]
            row = _row(arch, f"pipeline_{numerics.precision}", fit.trainer, pipeline, settings.epochs, len(work.labels),
                       len(work.test_labels), flops)
            # wall time of the whole fit (compile warm-up included) beside the training loop's own
            row.update({"cpu_seconds": pipeline_cpu, "fit_seconds": timer.seconds, "trainer_reason": fit.reason,
                        "compiled": fit.compiled, "cuda_graph": fit.cuda_graph, "precision": numerics.precision,
                        "device_peak_memory_mb": fit.device_peak_memory_mb})
            notes += [f"{arch} {numerics.precision}: {note}" for note in fit.notes]
            rows.append(row)
            comparisons.append(_comparison(official_row, row))
            pipelines.append(row)
        if len(pipelines) == 2:  # bf16 against the fp32 pipeline
            comparisons.append(_comparison(pipelines[0], pipelines[1]))
    return rows, comparisons, notes


def pipeline_numerics(settings: BenchSettings, device: torch.device) -> list[Numerics]:
    """The pipeline variants to run: each of ``settings.precisions`` resolved on ``device``, once each
    (``auto`` on a CPU without native bfloat16 is fp32 again)."""
    variants: list[Numerics] = []
    for setting in settings.precisions:
        numerics = Numerics.resolve(setting, settings.compile, device)
        if all(numerics.precision != other.precision for other in variants):
            variants.append(numerics)
    return variants


def _contended(settings: BenchSettings, work: Workload, device: torch.device,
               flops_by_arch: dict[str, dict[str, float]]) -> dict:
    """The same comparison beside ``settings.contend`` one-thread training jobs."""
    with Contenders(settings.contend) as contenders:
        load_start = loadavg()
        rows, comparisons, notes = _compare(settings, work, device, flops_by_arch)
        load_end, running = loadavg(), contenders.alive()
    if running < settings.contend:
        raise InputError(f"only {running} of {settings.contend} contending jobs ran to the end of the benchmark")
    return {"jobs": settings.contend, "threads_per_job": contenders.threads, "loadavg_start": load_start, "loadavg_end": load_end,
            "rows": rows, "comparisons": comparisons, "notes": notes}


def run_bench(settings: BenchSettings, data: str | os.PathLike | None, out: str | os.PathLike,
              work: str | os.PathLike = "results/bench", root: str | None = FASHION_MNIST_ROOT,
              command: str | None = None) -> dict:
    """Run both variants for every architecture (idle, then contended when ``settings.contend``),
    write the result as JSON to ``out`` and return it."""
    if settings.contend < 0:
        raise InputError(f"--contend must be 0 (idle only) or a number of competing jobs, got {settings.contend}")
    device = resolve_device(settings.device)
    loadavg_before = loadavg()
    warning = busy_warning(loadavg_before, os.cpu_count())
    if warning:
        log.warning(warning)
    data_path = resolve_data(data, work, root)
    info = read_info(data_path)
    spec = Evaluation(loss_mode=settings.loss_mode, feature_loss=settings.feature_loss)
    config = TrainConfig(epochs=settings.epochs, batch_size=settings.batch_size, dsa=dsa_config(settings.dsa),
                         eval_batch_size=settings.eval_batch_size)
    images, labels = random_real_synset(data_path, settings.ipc, settings.seed)
    images, labels = images.to(device), labels.to(device)
    test_images, test_labels, _ = load_split(data_path, "test", limit=settings.test_limit)
    target = teacher_features(settings.teacher_arch, images, info.num_classes, settings.seed) if spec.uses_teacher else None
    workload = Workload(spec, config, images, labels, target, test_images, test_labels, info.num_classes)
    variants = pipeline_numerics(settings, device)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    measured = sorted({"fp32", *(v.precision for v in variants)})
    before = {name: measure_peak(device, dtypes[name]) for name in measured}
    flops_by_arch: dict[str, dict[str, float]] = {}
    rows, comparisons, notes = _compare(settings, workload, device, flops_by_arch)
    after = {name: measure_peak(device, dtypes[name]) for name in measured}
    loadavg_after = loadavg()
    contended = _contended(settings, workload, device, flops_by_arch) if settings.contend else None
    peaks = {name: {"before": before[name], "after": after[name],
                    "peak": max(before[name]["peak"], after[name]["peak"]), "dtype": str(dtypes[name]).removeprefix("torch.")}
             for name in measured}
    for row in rows + (contended["rows"] if contended else []):  # against the best idle peak of its own dtype
        peak = peaks[row.get("precision", "fp32")]["peak"]
        row["train_peak_fraction"] = row["train_gflops"] / peak
        row["test_peak_fraction"] = row["test_gflops"] / peak
    if not native_bf16(device) and any(v.precision == "bf16" for v in variants):
        notes.append(f"bfloat16 is emulated on this {device.type} (no AMX or AVX512-BF16): its rows measure emulation")
    if not any(v.precision == "bf16" for v in variants):
        notes.append("no bf16 row: this device has no native bfloat16 (auto resolved to fp32); --precisions fp32 bf16 "
                     "forces the emulated one")
    if warning:
        notes.insert(0, warning)
    if settings.test_limit is not None and settings.test_limit < 10000:
        notes.append(f"test accuracy on the first {len(test_labels)} test images")
    notes.append("random-init teacher and random real synthetic images: the benchmark measures speed")
    result = {
        "benchmark": "student training: official-style loop vs pipeline",
        "command": command,
        "settings": asdict(settings), "data": str(data_path), "dataset": info.source,
        "protocol": {"train": config.to_dict(), "evaluation": asdict(spec), "teacher_arch": settings.teacher_arch,
                     "ipc": settings.ipc, "num_synthetic": len(labels), "num_test": len(test_labels)},
        "machine": {**_machine(device), "loadavg_before": loadavg_before, "loadavg_after": loadavg_after,
                    "busy_before": warning is not None},
        "peak_gflops": peaks,
        "flops": flops_by_arch, "rows": rows, "comparisons": comparisons, "notes": notes, "contended": contended,
        "norms": measure_norms(device, [v.precision for v in variants]) if settings.norms else None,
    }
    write_json(out, result)
    return result


def _rows_table(rows: list[dict]) -> str:
    from tabulate import tabulate

    table = [[r["arch"], r["variant"], r["trainer"] + ("+graph" if r.get("cuda_graph") else ""),
              f"{r['train_images_per_s']:.0f}", f"{r['test_images_per_s']:.0f}",
              f"{r['train_gflops']:.1f}", f"{r['test_gflops']:.1f}", f"{100 * r['test_peak_fraction']:.0f}%",
              f"{r['total_seconds']:.1f}", f"{r['cpu_seconds']:.1f}",
              f"{100 * r['test_acc_mean']:.1f} ± {100 * r['test_acc_std']:.1f}",
              f"{r['peak_rss_mb']:.0f}"] for r in rows]
    headers = ["arch", "variant", "trainer", "train img/s", "test img/s", "train GFLOP/s", "test GFLOP/s",
               "test / peak", "wall s", "CPU s", "test acc %", "peak RSS MB"]
    return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)


def _comparison_lines(comparisons: list[dict], condition: str) -> list[str]:
    return [f"{c['arch']} ({condition}): {c['variant']} / {c['baseline']} = {c['speedup']:.2f}x "
            f"(train {c['speedup_train']:.2f}x, "
            f"test {c['speedup_test']:.2f}x; process CPU time {c['speedup_cpu_time']:.2f}x); "
            f"accuracy difference {100 * c['acc_difference']:+.1f} points "
            f"(± {100 * c['acc_standard_error']:.1f} s.e.; {'within' if c['acc_within_noise'] else 'OUTSIDE'} noise)"
            for c in comparisons]


def format_table(result: dict) -> str:
    """The benchmark as Markdown tables (idle, and contended when run) plus one line per architecture."""
    peaks = result["peak_gflops"]
    machine = result["machine"]
    contended = result.get("contended")
    peak_text = ", ".join(f"{peak['peak']:.1f} GFLOP/s {peak['dtype']}" for peak in peaks.values())
    lines = ["idle:" if contended else "", _rows_table(result["rows"]), "",
             f"peak {peak_text} (conv, channels-last conv, matmul, best before/after; each row against its own dtype's); "
             f"CPU {machine['cpu_model']} ({machine['cpu_flags']}; ATen {machine['cpu_capability']}), "
             f"device {machine['device']}{' ' + machine['gpu'] if 'gpu' in machine else ''}, "
             f"{machine['torch_threads']} torch threads, load average before {machine['loadavg_before']}, "
             f"after {machine['loadavg_after']}"]
    lines += _comparison_lines(result["comparisons"], "idle")
    if contended:
        lines += ["", f"contended, beside {contended['jobs']} one-thread training jobs (load average at start "
                      f"{contended['loadavg_start']}, at end {contended['loadavg_end']}):",
                  _rows_table(contended["rows"]), ""]
        lines += _comparison_lines(contended["comparisons"], "contended")
    if result.get("norms"):
        from tabulate import tabulate

        lines += ["", "instance norm + ReLU + average pooling, forward and backward (one ConvNet block's small ops):",
                  tabulate([[r["norm"], r["layout"], r["precision"], "compiled" if r["compiled"] else "eager",
                             f"{r['ms']:.1f}", f"{r['max_abs_difference']:.1e}"] for r in result["norms"]],
                           headers=["norm", "layout", "precision", "mode", "ms", "max |diff| vs GroupNorm"],
                           tablefmt="github", disable_numparse=True)]
    lines += [f"note: {note}" for note in result["notes"] if note.startswith("machine busy")]
    return "\n".join(lines).lstrip("\n")

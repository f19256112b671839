"""Command line: ``elf-pipeline <stage> ...`` or ``python -m elf_pipeline <stage> ...``.

Every workflow rule calls one subcommand with explicit arguments, so any stage can be rerun by
hand.  Config blocks travel as JSON strings.  Known failures (bad input, corrupt artifacts,
diverged training) end with a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from elf_pipeline.allocator import keep_freed_memory
from elf_pipeline.errors import InputError, UserError
from elf_pipeline.gpu import pin_free_device


def _json(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("", "none", "null") else int(text)


def _subset(text: str) -> str | list[str]:
    """A named ImageNet subset, or comma-separated WordNet ids."""
    return [part.strip() for part in text.split(",") if part.strip()] if "," in text else text


def _optional_str(text: str) -> str | None:
    return None if text.lower() in ("", "none", "null") else text


def cmd_prepare_data(args: argparse.Namespace) -> None:
    from elf_pipeline.data import prepare_data

    summary = prepare_data(args.source, args.out, args.image_size, args.resize, args.root, args.train_limit, args.seed,
                           download=args.download, test_fraction=args.test_fraction, split_seed=args.split_seed,
                           subset=args.subset, channels=args.channels, val_size=args.val_size, val_seed=args.val_seed,
                           test_limit=args.test_limit)
    print(json.dumps(summary))


def cmd_distill(args: argparse.Namespace) -> None:
    from elf_pipeline.distill import run_distill

    run_distill(args.data, args.out, args.method, args.ipc, args.config, args.seed, args.device, experts=args.experts)


def cmd_train_experts(args: argparse.Namespace) -> None:
    from elf_pipeline.distill.experts import train_expert

    print(json.dumps(train_expert(args.data, args.out, args.arch, args.index, args.config, args.device)))


def cmd_train_teacher(args: argparse.Namespace) -> None:
    from elf_pipeline.teacher import train_teacher

    history = train_teacher(args.data, args.out_model, args.out_history, args.arch, args.train, args.checkpoint_epoch,
                            args.train_limit, args.seed, args.device, args.eval_every,
                            max_in_memory_gb=args.max_in_memory_gb)
    print(f"teacher {args.arch}: test accuracy {history['test_acc']:.4f} at epoch {history['checkpoint_epoch']}")


def cmd_extract_features(args: argparse.Namespace) -> None:
    from elf_pipeline.features import extract_features

    shapes = extract_features(args.synset, args.teacher, args.out, args.device, args.batch_size, data=args.data)
    print(json.dumps({name: list(shape) for name, shape in shapes.items()}))


def cmd_train_student(args: argparse.Namespace) -> None:
    from elf_pipeline.students import train_students

    frame = train_students(args.data, args.synset, args.features, args.arch, args.evaluation, args.train, args.seeds,
                           args.out, args.identity, args.device, teacher_model=args.teacher_model)
    print(frame[["arch", "evaluation", "seed", "test_acc", "train_seconds"]].to_string(index=False))


def cmd_report(args: argparse.Namespace) -> None:
    from elf_pipeline.report import write_report

    write_report(args.inputs, args.runs, args.summary, reference=args.full, reference_out=args.reference_out,
                 html_out=args.html, benchmarks=args.benchmarks, extra=args.extra, distill_archs=dict(args.distill_arch))


def cmd_train_full(args: argparse.Namespace) -> None:
    from elf_pipeline.reference import train_full

    frame = train_full(args.data, args.arch, args.train, args.seeds, args.out, args.identity, args.train_limit,
                       args.subset_seed, args.device)
    print(frame[["arch", "seed", "test_acc", "train_images", "train_seconds"]].to_string(index=False))


def cmd_plot_results(args: argparse.Namespace) -> None:
    from elf_pipeline.report.figures import plot_results

    plot_results(args.runs, args.reference, args.dataset, args.out_accuracy, args.out_gap, dict(args.distill_arch))


def cmd_plot_synset(args: argparse.Namespace) -> None:
    from elf_pipeline.report.figures import plot_synset

    plot_synset(args.synset, args.data, args.out, args.max_per_class)


def cmd_plot_teacher(args: argparse.Namespace) -> None:
    from elf_pipeline.report.figures import plot_teacher

    plot_teacher(args.history, args.out, args.title)


def cmd_teacher_from_expert(args: argparse.Namespace) -> None:
    from elf_pipeline.expert_teacher import teacher_from_expert

    meta = teacher_from_expert(args.expert, args.data, args.out, args.epoch, args.device)
    print(f"distillation model {meta['arch']} (epoch {meta['epoch']}): test accuracy {meta['test_acc']:.4f}")


def cmd_study(args: argparse.Namespace) -> None:
    from elf_pipeline.ablation import write_ablation
    from elf_pipeline.study import write_norm, write_similarity

    outputs = (args.out_table, args.out_markdown, args.out_plot)
    if args.kind in ("similarity", "ablation") and not args.archs:
        raise InputError(f"study {args.kind} needs --archs")
    if args.kind == "similarity":
        table = write_similarity(args.inputs, args.reference, args.archs, args.evaluations, *outputs)
    elif args.kind == "ablation":
        table = write_ablation(args.inputs, args.archs, args.evaluations, *outputs)
    else:
        if not args.pairs:
            raise InputError("study norm needs --pairs ARCH=ARCH_WITH_INSTANCE_NORM ...")
        table = write_norm(args.inputs, args.reference, dict(args.pairs), args.evaluations, *outputs)
    print(table.to_string(index=False))


def cmd_bench(args: argparse.Namespace) -> None:
    from elf_pipeline.bench import BenchSettings, format_table, run_bench

    settings = BenchSettings(archs=args.archs, seeds=args.seeds, ipc=args.ipc, epochs=args.epochs,
                             test_limit=args.test_limit or None, eval_batch_size=args.eval_batch_size,
                             teacher_arch=args.teacher_arch, loss_mode=args.loss_mode, dsa=not args.no_dsa,
                             device=args.device, vectorize=args.vectorize, amp=args.amp, compile=args.compile,
                             cuda_graphs=args.cuda_graphs)
    command = (f"elf-pipeline bench --device {args.device} --archs {' '.join(args.archs)} "
               f"--seeds {' '.join(map(str, args.seeds))} --ipc {args.ipc} --epochs {args.epochs} "
               f"--test-limit {args.test_limit} --vectorize {args.vectorize} --cuda-graphs {args.cuda_graphs}"
               + " --amp" * args.amp + " --compile" * args.compile + " --no-dsa" * args.no_dsa)
    result = run_bench(settings, args.data, args.out, args.work, args.root, command=command)
    print(format_table(result))
    print(f"written to {args.out}")


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elf-pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--gpu-lock-dir", default=None,
                        help="where GPU jobs lock the device they use when several are visible "
                             "(default: $ELF_GPU_LOCK_DIR, else a per-user folder in the temp dir)")
    sub = parser.add_subparsers(dest="stage", required=True)

    p = sub.add_parser("prepare-data", help="raw dataset -> data.h5")
    p.add_argument("--source", required=True)
    p.add_argument("--root", type=_optional_str, default=None)
    p.add_argument("--image-size", type=int, required=True)
    p.add_argument("--resize", default="pad", choices=["pad", "interpolate"])
    p.add_argument("--train-limit", type=_optional_int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--download", action="store_true", help="let torchvision fetch the dataset into --root")
    p.add_argument("--test-fraction", type=float, default=None, help="digits, image_folder: held-out share per class")
    p.add_argument("--split-seed", type=int, default=None, help="seed of the --test-fraction split")
    p.add_argument("--subset", type=_subset, default=None, help="ImageNet: a named subset or comma-separated WordNet ids")
    p.add_argument("--channels", type=int, choices=[1, 3], default=None, help="image_folder: 1 (greyscale) or 3 (RGB)")
    p.add_argument("--val-size", type=int, default=None, help="class-balanced validation split held out from train")
    p.add_argument("--val-seed", type=int, default=0, help="seed of the validation split")
    p.add_argument("--test-limit", type=int, default=None, help="class-balanced subset of the test split")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_prepare_data)

    p = sub.add_parser("distill", help="data.h5 -> synset.h5")
    p.add_argument("--data", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--ipc", type=int, required=True)
    p.add_argument("--config", type=_json, default={}, help="method hyperparameters as a JSON object")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--experts", nargs="+", default=None, help="expert trajectory files (method mtt)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("train-experts", help="data.h5 -> one expert trajectory (parameters per epoch) for MTT")
    p.add_argument("--data", required=True)
    p.add_argument("--arch", required=True)
    p.add_argument("--index", type=int, required=True, help="expert number k (trains with seed + k)")
    p.add_argument("--config", type=_json, default={}, help="experts block (without arch, num_experts) as JSON")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_train_experts)

    p = sub.add_parser("train-teacher", help="data.h5 -> teacher model.pt + history.json")
    p.add_argument("--data", required=True)
    p.add_argument("--arch", required=True)
    p.add_argument("--train", type=_json, required=True, help="training block as a JSON object")
    p.add_argument("--checkpoint-epoch", type=_optional_int, default=None)
    p.add_argument("--train-limit", type=_optional_int, default=None)
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument("--max-in-memory-gb", type=float, default=4.0,
                   help="stream the training split from disk when it is larger than this (uint8 GB)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out-model", required=True)
    p.add_argument("--out-history", required=True)
    p.set_defaults(func=cmd_train_teacher)

    p = sub.add_parser("extract-features", help="synset.h5 + teacher -> features.h5 (every layer)")
    p.add_argument("--synset", required=True)
    p.add_argument("--teacher", required=True)
    p.add_argument("--data", default=None, help="data.h5 (needed for a ZCA-whitened synthetic set)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_extract_features)

    p = sub.add_parser("train-student", help="train and test one architecture under one evaluation")
    p.add_argument("--data", required=True)
    p.add_argument("--synset", required=True)
    p.add_argument("--features", default=None)
    p.add_argument("--teacher-model", default=None, help="teacher checkpoint (evaluations with teacher_targets: online)")
    p.add_argument("--arch", required=True)
    p.add_argument("--evaluation", type=_json, required=True)
    p.add_argument("--train", type=_json, required=True)
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--identity", type=_json, default={}, help="dataset/method/ipc/teacher/evaluation names for the rows")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_train_student)

    p = sub.add_parser("report", help="student Parquet files -> runs.parquet + summary.md (+ reference.parquet, summary.html)")
    p.add_argument("--runs", required=True)
    p.add_argument("--summary", required=True)
    p.add_argument("inputs", nargs="+", help="student result files")
    p.add_argument("--full", nargs="*", default=[], help="full-real-data reference result files (train-full)")
    p.add_argument("--reference-out", default=None, help="write the collected reference rows here")
    p.add_argument("--html", default=None, help="also write the tables as HTML here")
    p.add_argument("--benchmarks", nargs="*", default=[], help="Snakemake benchmark TSVs (missing ones are skipped)")
    p.add_argument("--extra", nargs="*", default=[], help="optional Parquet tables appended to the summary")
    p.add_argument("--distill-arch", type=_pair, nargs="*", default=[], metavar="METHOD=ARCH",
                   help="distillation architecture per method, the same-arch column of gap closed (default convnet)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("train-full", help="train an architecture on the real training set (the full-data reference)")
    p.add_argument("--data", required=True)
    p.add_argument("--arch", required=True)
    p.add_argument("--train", type=_json, required=True, help="training block as a JSON object")
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--train-limit", type=_optional_int, default=None, help="class-balanced subset size (none = all)")
    p.add_argument("--subset-seed", type=int, default=0)
    p.add_argument("--identity", type=_json, default={}, help="dataset name for the rows")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_train_full)

    p = sub.add_parser("plot-results", help="runs.parquet -> accuracy bars and gap-closed figures of one dataset")
    p.add_argument("--runs", required=True)
    p.add_argument("--reference", default=None, help="reference.parquet (full-real-data rows)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--distill-arch", type=_pair, nargs="*", default=[], metavar="METHOD=ARCH")
    p.add_argument("--out-accuracy", required=True)
    p.add_argument("--out-gap", required=True)
    p.set_defaults(func=cmd_plot_results)

    p = sub.add_parser("plot-synset", help="synset.h5 -> grid of the synthetic images per class (PNG)")
    p.add_argument("--synset", required=True)
    p.add_argument("--data", required=True, help="data.h5 (mean/std to de-normalise, class names)")
    p.add_argument("--max-per-class", type=int, default=10)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_plot_synset)

    p = sub.add_parser("plot-teacher", help="teacher history.json -> training curve (PNG)")
    p.add_argument("--history", required=True)
    p.add_argument("--title", default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_plot_teacher)

    p = sub.add_parser("teacher-from-expert", help="an MTT expert (the distillation model) -> teacher model.pt")
    p.add_argument("--expert", required=True)
    p.add_argument("--data", required=True, help="data.h5 (test accuracy of the teacher)")
    p.add_argument("--epoch", type=_optional_int, default=None, help="expert epoch (default: its last)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_teacher_from_expert)

    p = sub.add_parser("study", help="student results of the empirical study -> table (Parquet, Markdown) + plot")
    p.add_argument("kind", choices=["similarity", "norm", "ablation"])
    p.add_argument("inputs", nargs="+", help="student result files of the study's synthetic set")
    p.add_argument("--reference", default="convnet", help="similarity, norm: the distillation model")
    p.add_argument("--evaluations", nargs="+", default=["baseline"],
                   help="ablation: the first is the reference row every other evaluation is compared with")
    p.add_argument("--archs", nargs="*", default=[], help="similarity: the architectures compared; ablation: the students")
    p.add_argument("--pairs", type=_pair, nargs="*", default=[], metavar="ARCH=ARCH_IN",
                   help="norm: architecture with its own norm = the same with instance norm")
    p.add_argument("--out-table", required=True)
    p.add_argument("--out-markdown", required=True)
    p.add_argument("--out-plot", required=True)
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("bench", help="student training speed: the pipeline's trainer vs an official-style loop (JSON)")
    p.add_argument("--data", default="results/fashion_mnist/data.h5",
                   help="prepared dataset; when missing, Fashion-MNIST is prepared from --root into --work")
    p.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--work", default="results/bench")
    p.add_argument("--archs", nargs="+", default=["convnet", "resnet18"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--test-limit", type=int, default=1000, help="first N test images (0: all)")
    p.add_argument("--eval-batch-size", type=int, default=1024, help="the pipeline's test batch size")
    p.add_argument("--teacher-arch", default="convnet-w512")
    p.add_argument("--loss-mode", default="front_rear_task")
    p.add_argument("--no-dsa", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--vectorize", default="auto", choices=["auto", "true", "false"])
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast in the vectorised trainer")
    p.add_argument("--compile", action="store_true", help="torch.compile the vectorised training step")
    p.add_argument("--cuda-graphs", default="auto", choices=["auto", "true", "false"],
                   help="replay the vectorised training step as a CUDA graph (auto: on CUDA when batches have one size)")
    p.add_argument("--out", default="results/bench/bench.json")
    p.set_defaults(func=cmd_bench)
    return parser


def _exit_on_sigterm(stage: str):
    """SLURM (time limit, scancel) and Snakemake stop a job with SIGTERM; by default Python then dies
    on the spot. Unwind instead, so that temporary outputs are removed and locks released. Returns
    the previous handler (None when this is not the main thread, where no handler can be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminate(signum, frame):
        print(f"elf-pipeline {stage}: terminated by signal {signum}", file=sys.stderr)
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, terminate)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    previous_sigterm = _exit_on_sigterm(args.stage)
    # Several GPUs visible and no device named: take a free one before anything initialises CUDA.
    gpu_lock = pin_free_device(args.device, args.gpu_lock_dir) if hasattr(args, "device") else None
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    keep_freed_memory()  # large temporaries reused from the heap, not re-faulted from the kernel
    try:
        args.func(args)
    except UserError as err:
        print(f"elf-pipeline {args.stage}: error: {err}", file=sys.stderr)
        return 2
    finally:
        if gpu_lock is not None:
            gpu_lock.release()
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
    return 0

"""Command line: ``elf-pipeline <stage> ...`` or ``python -m elf_pipeline <stage> ...``.

Every workflow rule calls one subcommand with explicit arguments, so any stage can be rerun by
hand: files as flags, and the stage's settings as one JSON object (``--settings``, parsed with
``elf_pipeline.config.stages``).  Known failures (bad input, corrupt artifacts,
diverged training) end with a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from elf_pipeline.config.stages import STAGES, parse_stage_settings
from elf_pipeline.engine.precision import COMPILE_SETTINGS, PRECISIONS
from elf_pipeline.infra.allocator import keep_freed_memory
from elf_pipeline.infra.errors import InputError, UserError
from elf_pipeline.infra.gpu import pin_free_device


def _json(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def cmd_data(args: argparse.Namespace) -> None:
    from elf_pipeline.stages.data import prepare_data

    print(json.dumps(prepare_data(out=args.out, **args.settings)))


def cmd_distill(args: argparse.Namespace) -> None:
    from elf_pipeline.stages.distill import run_distill

    s = args.settings
    run_distill(args.data, args.out, s["method"], s["ipc"], s["hyperparameters"], s["seed"], args.device, experts=args.experts,
                precision=args.precision)


def cmd_experts(args: argparse.Namespace) -> None:
    from elf_pipeline.stages.experts import train_expert

    block = {k: v for k, v in args.settings.items() if k not in ("arch", "index")}
    print(json.dumps(train_expert(args.data, args.out, args.settings["arch"], args.settings["index"], block, args.device,
                                  args.precision, args.compile)))


def cmd_teachers(args: argparse.Namespace) -> None:
    from elf_pipeline.stages.teachers import train_teacher

    s = args.settings
    history = train_teacher(args.data, args.out_model, args.out_history, s["arch"], s["train"], s["checkpoint_epoch"],
                            s["train_limit"], s["seed"], args.device, s["eval_every"], max_in_memory_gb=s["max_in_memory_gb"],
                            precision=args.precision, compile=args.compile)
    print(f"teacher {s['arch']}: test accuracy {history['test_acc']:.4f} at epoch {history['checkpoint_epoch']}")


def cmd_features(args: argparse.Namespace) -> None:
    from elf_pipeline.stages.features import extract_features

    shapes = extract_features(args.synset, args.teacher, args.out, args.device, args.settings["batch_size"], data=args.data,
                              precision=args.precision)
    print(json.dumps({name: list(shape) for name, shape in shapes.items()}))


def cmd_students(args: argparse.Namespace) -> None:
    from elf_pipeline.stages.students import train_students

    s = args.settings
    frame = train_students(args.data, args.synset, args.features, s["arch"], s["evaluation"], s["train"], s["seeds"],
                           args.out, s["identity"], args.device, teacher_model=args.teacher_model, precision=args.precision,
                           compile=args.compile, choice=args.choice, select_keys=s["select_keys"])
    print(frame[["arch", "evaluation", "seed", "test_acc", "train_seconds"]].to_string(index=False))


def cmd_select(args: argparse.Namespace) -> None:
    from elf_pipeline.stages.select import select_student

    s = args.settings
    choice = select_student(args.inputs, args.out, s["candidates"], s["seeds"], s["evaluation"], s["identity"])
    print(json.dumps({"chosen": choice["chosen"], "val_acc": [c["val_acc"] for c in choice["candidates"]]}))


def cmd_report(args: argparse.Namespace) -> None:
    from elf_pipeline.stages.report import write_report

    write_report(args.inputs, args.runs, args.summary, reference=args.full, reference_out=args.reference_out,
                 html_out=args.html, benchmarks=args.benchmarks, extra=args.extra, distill_archs=dict(args.distill_arch),
                 ddranking_out=args.ddranking_out, selections=args.selections)


def cmd_reference(args: argparse.Namespace) -> None:
    from elf_pipeline.stages.reference import train_full

    s = args.settings
    frame = train_full(args.data, s["arch"], s["train"], s["seeds"], args.out, s["identity"], s["train_limit"],
                       s["subset_seed"], args.device, args.precision, args.compile)
    print(frame[["arch", "seed", "test_acc", "train_images", "train_seconds"]].to_string(index=False))


def cmd_report_results(args: argparse.Namespace) -> None:
    from elf_pipeline.stages.report.figures import plot_results

    plot_results(args.runs, args.reference, args.dataset, args.out_accuracy, args.out_gap, dict(args.distill_arch))


def cmd_report_synset(args: argparse.Namespace) -> None:
    from elf_pipeline.stages.report.figures import plot_synset

    plot_synset(args.synset, args.data, args.out, args.max_per_class)


def cmd_report_teacher(args: argparse.Namespace) -> None:
    from elf_pipeline.stages.report.figures import plot_teacher

    plot_teacher(args.history, args.out, args.title)


def cmd_expert_teacher(args: argparse.Namespace) -> None:
    from elf_pipeline.stages.expert_teacher import teacher_from_expert

    meta = teacher_from_expert(args.expert, args.data, args.out, args.settings["epoch"], args.device, args.precision)
    print(f"distillation model {meta['arch']} (epoch {meta['epoch']}): test accuracy {meta['test_acc']:.4f}")


def cmd_study(args: argparse.Namespace) -> None:
    from elf_pipeline.stages.study import write_norm, write_similarity
    from elf_pipeline.stages.study.ablation import write_ablation

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
    from elf_pipeline.bench.run import BenchSettings, format_table, run_bench

    settings = BenchSettings(archs=args.archs, seeds=args.seeds, ipc=args.ipc, epochs=args.epochs,
                             test_limit=args.test_limit or None, eval_batch_size=args.eval_batch_size,
                             teacher_arch=args.teacher_arch, loss_mode=args.loss_mode, dsa=not args.no_dsa,
                             device=args.device, vectorize=args.vectorize, precisions=args.precisions, compile=args.compile,
                             cuda_graphs=args.cuda_graphs, contend=args.contend, norms=args.norms)
    command = (f"elf-pipeline bench --device {args.device} --archs {' '.join(args.archs)} "
               f"--seeds {' '.join(map(str, args.seeds))} --ipc {args.ipc} --epochs {args.epochs} "
               f"--test-limit {args.test_limit} --vectorize {args.vectorize} --cuda-graphs {args.cuda_graphs} "
               f"--precisions {' '.join(args.precisions)} --compile {args.compile}" + " --no-dsa" * args.no_dsa
               + (f" --contend {args.contend}" if args.contend else "") + " --norms" * args.norms)
    result = run_bench(settings, args.data, args.out, args.work, args.root, command=command)
    print(format_table(result))
    print(f"written to {args.out}")


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


REQUIRED = {"required": True}
DEVICE = (("--device",), {"default": "auto"})
PRECISION = (("--precision",), {"default": "auto", "choices": PRECISIONS,
                                "help": "networks in float32, bfloat16 autocast, or auto (bf16 where the device computes "
                                        "it natively: CUDA, AMX or AVX512-BF16 CPUs)"})
COMPILE = (("--compile",), {"default": "auto", "choices": COMPILE_SETTINGS,
                            "help": "torch.compile the training step (auto: under bf16 on a CPU)"})
OUT = (("--out",), REQUIRED)
DATA = (("--data",), REQUIRED)
DISTILL_ARCH = (("--distill-arch",), {"type": _pair, "nargs": "*", "default": [], "metavar": "METHOD=ARCH",
                                      "help": "distillation architecture per method, the same-arch column of gap closed "
                                              "(default convnet)"})
# stage -> (help, its arguments as (flags, options)); the stages of stage_settings.STAGES also take
# --settings, one JSON object of their settings. Stage X runs cmd_X (sources.py reads its imports).
ARGUMENTS: dict[str, tuple[str, list[tuple[tuple[str, ...], dict]]]] = {
    "data": ("raw dataset -> data.h5", [OUT]),
    "distill": ("data.h5 -> synset.h5", [
        DATA, (("--experts",), {"nargs": "+", "default": None, "help": "expert trajectory files (method mtt)"}), DEVICE,
        PRECISION, OUT]),
    "experts": ("data.h5 -> one expert trajectory (parameters per epoch) for MTT", [DATA, DEVICE, PRECISION, COMPILE, OUT]),
    "teachers": ("data.h5 -> teacher model.pt + history.json", [
        DATA, DEVICE, PRECISION, COMPILE, (("--out-model",), REQUIRED), (("--out-history",), REQUIRED)]),
    "features": ("synset.h5 + teacher -> features.h5 (every layer)", [
        (("--synset",), REQUIRED), (("--teacher",), REQUIRED),
        (("--data",), {"default": None, "help": "data.h5 (needed for a ZCA-whitened synthetic set)"}), DEVICE, PRECISION, OUT]),
    "students": ("train and test one architecture under one evaluation", [
        DATA, (("--synset",), REQUIRED), (("--features",), {"default": None}),
        (("--teacher-model",), {"default": None, "help": "teacher checkpoint (evaluations with teacher_targets: online)"}),
        (("--choice",), {"default": None, "help": "choice.json of select (settings select_keys take its values)"}),
        DEVICE, PRECISION, COMPILE, OUT]),
    "select": ("candidate results -> choice.json: the values with the best validation accuracy", [
        (("inputs",), {"nargs": "+", "help": "one result file per candidate, in the order of the settings' candidates"}),
        OUT]),
    "report": ("student Parquet files -> runs.parquet + summary.md (+ reference.parquet, summary.html)", [
        (("--runs",), REQUIRED), (("--summary",), REQUIRED),
        (("inputs",), {"nargs": "+", "help": "student result files"}),
        (("--full",), {"nargs": "*", "default": [], "help": "full-real-data reference result files (reference)"}),
        (("--reference-out",), {"default": None, "help": "write the collected reference rows here"}),
        (("--html",), {"default": None, "help": "also write the tables as HTML here"}),
        (("--ddranking-out",), {"default": None, "help": "write DD-Ranking's HLR / IOR / LRS per set here (Parquet)"}),
        (("--benchmarks",), {"nargs": "*", "default": [], "help": "Snakemake benchmark TSVs (missing ones are skipped)"}),
        (("--extra",), {"nargs": "*", "default": [], "help": "optional Parquet tables appended to the summary"}),
        (("--selections",), {"nargs": "*", "default": [], "help": "choice.json files of students.select (Selection table)"}),
        DISTILL_ARCH]),
    "reference": ("train an architecture on the real training set (the full-data reference)", [
        DATA, DEVICE, PRECISION, COMPILE, OUT]),
    "report-results": ("runs.parquet -> accuracy bars and gap-closed figures of one dataset", [
        (("--runs",), REQUIRED), (("--reference",), {"default": None, "help": "reference.parquet (full-real-data rows)"}),
        (("--dataset",), REQUIRED), DISTILL_ARCH, (("--out-accuracy",), REQUIRED), (("--out-gap",), REQUIRED)]),
    "report-synset": ("synset.h5 -> grid of the synthetic images per class (PNG)", [
        (("--synset",), REQUIRED), (("--data",), {"required": True, "help": "data.h5 (mean/std to de-normalise, class names)"}),
        (("--max-per-class",), {"type": int, "default": 10}), OUT]),
    "report-teacher": ("teacher history.json -> training curve (PNG)", [
        (("--history",), REQUIRED), (("--title",), {"default": None}), OUT]),
    "expert-teacher": ("an MTT expert (the distillation model) -> teacher model.pt", [
        (("--expert",), REQUIRED), (("--data",), {"required": True, "help": "data.h5 (test accuracy of the teacher)"}),
        DEVICE, PRECISION, OUT]),
    "study": ("student results of the empirical study -> table (Parquet, Markdown) + plot", [
        (("kind",), {"choices": ["similarity", "norm", "ablation"]}),
        (("inputs",), {"nargs": "+", "help": "student result files of the study's synthetic set"}),
        (("--reference",), {"default": "convnet", "help": "similarity, norm: the distillation model"}),
        (("--evaluations",), {"nargs": "+", "default": ["baseline"],
                              "help": "ablation: the first is the reference row every other evaluation is compared with"}),
        (("--archs",), {"nargs": "*", "default": [], "help": "similarity: the architectures compared; ablation: the students"}),
        (("--pairs",), {"type": _pair, "nargs": "*", "default": [], "metavar": "ARCH=ARCH_IN",
                        "help": "norm: architecture with its own norm = the same with instance norm"}),
        (("--out-table",), REQUIRED), (("--out-markdown",), REQUIRED), (("--out-plot",), REQUIRED)]),
    "bench": ("student training speed: the pipeline's trainer vs an official-style loop (JSON)", [
        (("--data",), {"default": "results/fashion_mnist/data.h5",
                       "help": "prepared dataset; when missing, Fashion-MNIST is prepared from --root into --work"}),
        (("--root",), {"default": "/usr/share/datasets/fashion-mnist"}), (("--work",), {"default": "results/bench"}),
        (("--archs",), {"nargs": "+", "default": ["convnet", "resnet18"]}),
        (("--seeds",), {"type": int, "nargs": "+", "default": [0, 1, 2, 3, 4]}),
        (("--ipc",), {"type": int, "default": 10}), (("--epochs",), {"type": int, "default": 2}),
        (("--test-limit",), {"type": int, "default": 1000, "help": "first N test images (0: all)"}),
        (("--eval-batch-size",), {"type": int, "default": 1024, "help": "the pipeline's test batch size"}),
        (("--teacher-arch",), {"default": "convnet-w512"}), (("--loss-mode",), {"default": "front_rear_task"}),
        (("--no-dsa",), {"action": "store_true"}), DEVICE,
        (("--vectorize",), {"default": "auto", "choices": ["auto", "true", "false"]}),
        (("--precisions",), {"nargs": "+", "default": ["fp32", "auto"], "choices": PRECISIONS,
                             "help": "one pipeline row per precision, after resolving (auto: bf16 where native)"}),
        COMPILE,
        (("--cuda-graphs",), {"default": "auto", "choices": ["auto", "true", "false"],
                              "help": "replay the vectorised training step as a CUDA graph "
                                      "(auto: on CUDA when batches have one size)"}),
        (("--contend",), {"type": int, "default": 0, "metavar": "JOBS",
                          "help": "after the idle run, run it again beside JOBS one-thread training jobs "
                                  "(e.g. the core count): speed on shared cores"}),
        (("--norms",), {"action": "store_true",
                        "help": "also time the instance-norm options (GroupNorm, InstanceNorm2d, a var_mean "
                                "formulation; contiguous and channels-last; eager and compiled)"}),
        (("--out",), {"default": "results/bench/bench.json"})]),
}


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    """The arguments of one stage: its ARGUMENTS entry, and --settings for a stage with settings."""
    for flags, options in ARGUMENTS[stage][1]:
        parser.add_argument(*flags, **options)
    if stage in STAGES:
        parser.add_argument("--settings", type=_json, default={},
                            help="the stage's settings as one JSON object (keys: elf_pipeline/config/stages.py)")
    parser.set_defaults(func=globals()["cmd_" + stage.replace("-", "_")])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elf-pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--gpu-lock-dir", default=None,
                        help="where GPU jobs lock the device they use when several are visible "
                             "(default: $ELF_GPU_LOCK_DIR, else a per-user folder in the temp dir)")
    sub = parser.add_subparsers(dest="stage", required=True)
    for stage, (help_text, _) in ARGUMENTS.items():
        add_arguments(sub.add_parser(stage, help=help_text), stage)
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
        if args.stage in STAGES:
            args.settings = parse_stage_settings(args.stage, args.settings)
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

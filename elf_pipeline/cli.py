"""Command line: ``elf-pipeline <stage> ...`` or ``python -m elf_pipeline <stage> ...``.

Every workflow rule calls one subcommand with explicit arguments, so any stage can be rerun by
hand.  Config blocks travel as JSON strings.  Known failures (bad input, corrupt artifacts,
diverged training) end with a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from elf_pipeline.data import DataSourceError
from elf_pipeline.io import ArtifactError
from elf_pipeline.models import UnknownArchitecture
from elf_pipeline.training import TrainingDiverged

EXPECTED_ERRORS = (ArtifactError, DataSourceError, UnknownArchitecture, TrainingDiverged, ValueError, FloatingPointError)


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


def _optional_str(text: str) -> str | None:
    return None if text.lower() in ("", "none", "null") else text


def cmd_prepare_data(args: argparse.Namespace) -> None:
    from elf_pipeline.data import prepare_data

    summary = prepare_data(args.source, args.out, args.image_size, args.resize, args.root, args.train_limit, args.seed)
    print(json.dumps(summary))


def cmd_distill(args: argparse.Namespace) -> None:
    from elf_pipeline.distill import run_distill

    run_distill(args.data, args.out, args.method, args.ipc, args.config, args.seed, args.device)


def cmd_train_teacher(args: argparse.Namespace) -> None:
    from elf_pipeline.teacher import train_teacher

    history = train_teacher(args.data, args.out_model, args.out_history, args.arch, args.train, args.checkpoint_epoch,
                            args.train_limit, args.seed, args.device, args.eval_every)
    print(f"teacher {args.arch}: test accuracy {history['test_acc']:.4f} at epoch {history['checkpoint_epoch']}")


def cmd_extract_features(args: argparse.Namespace) -> None:
    from elf_pipeline.features import extract_features

    shapes = extract_features(args.synset, args.teacher, args.out, args.device, args.batch_size)
    print(json.dumps({name: list(shape) for name, shape in shapes.items()}))


def cmd_train_student(args: argparse.Namespace) -> None:
    from elf_pipeline.students import train_students

    frame = train_students(args.data, args.synset, args.features, args.arch, args.evaluation, args.train, args.seeds,
                           args.out, args.identity, args.device)
    print(frame[["arch", "evaluation", "seed", "test_acc", "train_seconds"]].to_string(index=False))


def cmd_report(args: argparse.Namespace) -> None:
    from elf_pipeline.report import write_report

    write_report(args.inputs, args.runs, args.summary)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elf-pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="stage", required=True)

    p = sub.add_parser("prepare-data", help="raw dataset -> data.h5")
    p.add_argument("--source", required=True)
    p.add_argument("--root", type=_optional_str, default=None)
    p.add_argument("--image-size", type=int, required=True)
    p.add_argument("--resize", default="pad", choices=["pad", "interpolate"])
    p.add_argument("--train-limit", type=_optional_int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_prepare_data)

    p = sub.add_parser("distill", help="data.h5 -> synset.h5")
    p.add_argument("--data", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--ipc", type=int, required=True)
    p.add_argument("--config", type=_json, default={}, help="method hyperparameters as a JSON object")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("train-teacher", help="data.h5 -> teacher model.pt + history.json")
    p.add_argument("--data", required=True)
    p.add_argument("--arch", required=True)
    p.add_argument("--train", type=_json, required=True, help="training block as a JSON object")
    p.add_argument("--checkpoint-epoch", type=_optional_int, default=None)
    p.add_argument("--train-limit", type=_optional_int, default=None)
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out-model", required=True)
    p.add_argument("--out-history", required=True)
    p.set_defaults(func=cmd_train_teacher)

    p = sub.add_parser("extract-features", help="synset.h5 + teacher -> features.h5 (every layer)")
    p.add_argument("--synset", required=True)
    p.add_argument("--teacher", required=True)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_extract_features)

    p = sub.add_parser("train-student", help="train and test one architecture under one evaluation")
    p.add_argument("--data", required=True)
    p.add_argument("--synset", required=True)
    p.add_argument("--features", default=None)
    p.add_argument("--arch", required=True)
    p.add_argument("--evaluation", type=_json, required=True)
    p.add_argument("--train", type=_json, required=True)
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--identity", type=_json, default={}, help="dataset/method/ipc/teacher/evaluation names for the rows")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_train_student)

    p = sub.add_parser("report", help="student Parquet files -> runs.parquet + summary.md")
    p.add_argument("--runs", required=True)
    p.add_argument("--summary", required=True)
    p.add_argument("inputs", nargs="+")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        args.func(args)
    except EXPECTED_ERRORS as err:
        print(f"elf-pipeline {args.stage}: error: {err}", file=sys.stderr)
        return 2
    return 0

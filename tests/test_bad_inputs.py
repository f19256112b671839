"""Bad input against a finished smoke study: each case asserts the exit code, the one-line message
(and no traceback), and that every output that existed before is unchanged afterwards.

Config cases are dry runs of the whole workflow (``snakemake -n``); config-file cases also run the
strict reader (``python -m elf_pipeline.config.files``, what ``make run`` runs first); stage cases call
the CLI in-process. The failing-run tests run real jobs that fail, and check that the study is as it
was (``elf_pipeline.infra.safekeeping``), that a rerun of the failing config runs the job again and that
the reverted config finds its results done.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import SNAKEMAKE, study_copy

DEL = object()


@pytest.fixture(scope="module")
def study(smoke_pristine, tmp_path_factory) -> Path:
    """A private copy of the finished smoke study (cases that change a file put it back)."""
    return study_copy(smoke_pristine, tmp_path_factory, "bad_inputs")


@pytest.fixture(scope="module")
def smoke(study) -> dict:
    """The study's config (tests/configs/smoke.yaml as it ran)."""
    return yaml.safe_load((study / "tests" / "configs" / "smoke.yaml").read_text())


def snapshot(study: Path) -> dict[str, tuple[int, int, int]]:
    """Every output of the study: (inode, size, modification time) per file (logs and benchmarks aside)."""
    results = study / "results"
    return {str(path.relative_to(results)): (path.stat().st_ino, path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(results.rglob("*"))
            if path.is_file() and path.relative_to(results).parts[0] not in ("logs", "benchmarks", ".kept")
            and not path.name.startswith(".")}


def snakemake(study: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SNAKEMAKE, *args], cwd=study, capture_output=True, text=True)


def one_line(run: subprocess.CompletedProcess, pattern: str) -> None:
    """``pattern`` on one line of the output, and no Python traceback."""
    import re

    output = run.stdout + run.stderr
    assert "Traceback" not in output, output[-3000:]
    assert any(re.search(pattern, line) for line in output.splitlines()), f"{pattern!r} not in:\n{output[-3000:]}"


def with_key(config: dict, path: str, value: object) -> dict:
    config = copy.deepcopy(config)
    node = config
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if value is DEL:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value
    return config


# --------------------------------------------------------------------------- configs (dry runs)

# (config key, value, what the message says)
CONFIG_CASES = [
    ("datasets", {}, r"config key datasets: \{\} should be non-empty"),
    ("datasets", DEL, r"'datasets' is a required property"),
    ("datasets.digits.source", "nope", r"datasets.digits.source: unknown dataset 'nope'"),
    ("datasets.digits.image_size", 0, r"datasets.digits.image_size: 0 is less than the minimum"),
    ("datasets.digits.image_size", "16", r"image_size: '16' is text, not a number \(it is quoted\); write 16$"),
    ("datasets.digits.resize", "stretch", r"datasets.digits.resize: 'stretch' is not one of"),
    ("datasets.digits.val_size", -1, r"datasets.digits.val_size: -1 is less than the minimum"),
    ("datasets.digits.bogus", 1, r"datasets.digits.bogus: unknown key \(allowed: "),
    ("datasets.digits.test_limit", -1, r"datasets.digits.test_limit: -1 is less than the minimum"),
    ("datasets.digits.train_limit", 0, r"datasets.digits.train_limit: 0 is less than the minimum"),
    ("distillation.ipc", [], r"distillation.ipc: \[\] should be non-empty"),
    ("distillation.ipc", [0], r"distillation.ipc\[0\]: 0 is less than the minimum"),
    ("distillation.ipc", ["one"], r"distillation.ipc\[0\]: 'one' is not of type 'integer'"),
    ("distillation.methods", {}, r"distillation.methods: \{\} should be non-empty"),
    ("distillation.methods.bogus", {}, r"distillation.methods.bogus: unknown method"),
    ("distillation.methods.dm.iterations", -5, r"dm.iterations: -5 is less than the minimum"),
    ("distillation.methods.dm.iterations", 2.5, r"dm.iterations: 2.5 is not of type 'integer'"),
    ("distillation.methods.dm.lr_img", 0, r"dm.lr_img: 0 is less than or equal to the minimum"),
    ("distillation.methods.dm.lr_img", "1e-2", r"dm.lr_img: '1e-2' is text, not a number .*write 0.01"),
    ("distillation.methods.dm.init", "bogus", r"dm.init: 'bogus' is not one of"),
    ("distillation.methods.dm.batch_real", 0, r"dm.batch_real: 0 is less than the minimum"),
    ("distillation.methods.dm.unknown_key", 1, r"dm.unknown_key: unknown key \(allowed: "),
    ("distillation.methods.random", "x", r"distillation.methods.random: 'x' is not of type"),
    ("distillation.methods.import", {}, r"distillation.methods.import.path: required"),
    ("distillation.methods.import", {"path": "nope.pt"}, r"distillation.methods.import.normalization: required"),
    ("distillation.seed", "zero", r"distillation.seed: 'zero' is not of type 'integer'"),
    ("teachers.convnet.arch", "nope", r"teachers.convnet.arch: unknown architecture 'nope'"),
    ("teachers.convnet.train.epochs", 0, r"teachers.convnet.train.epochs: 0 is less than the minimum"),
    ("teachers.convnet.train.batch_size", -1, r"teachers.convnet.train.batch_size: -1 is less than the minimum"),
    ("teachers.convnet.train.lr", "1e-2", r"teachers.convnet.train.lr: '1e-2' is text, not a number"),
    ("teachers.convnet.train", "fast", r"teachers.convnet.train: 'fast' is not of type 'object'"),
    ("teachers.convnet.bogus", 1, r"teachers.convnet.bogus: unknown key"),
    ("teachers", {}, r"evaluations.elf.teacher: unknown teacher 'convnet'"),
    ("students.archs", [], r"students.archs: \[\] should be non-empty"),
    ("students.archs", ["nope"], r"students.archs\[0\]: unknown architecture 'nope'"),
    ("students.seeds", [], r"students.seeds: \[\] should be non-empty"),
    ("students.seeds", [-1], r"students.seeds\[0\]: -1 is less than the minimum"),
    ("students.train.epochs", 0, r"students.train.epochs: 0 is less than the minimum"),
    ("students.train.lr", "1e-2", r"students.train.lr: '1e-2' is text, not a number .*write 0.01"),
    ("students.train.batch_size", "big", r"students.train.batch_size: 'big' is not of type 'integer'"),
    ("students.train.weight_decay", -1, r"students.train.weight_decay: -1 is less than the minimum"),
    ("students.train.eval_batch_size", 0, r"students.train.eval_batch_size: 0 is less than the minimum"),
    ("students.bogus", 1, r"students.bogus: unknown key"),
    ("evaluations", {}, r"evaluations: \{\} should be non-empty"),
    ("evaluations.elf.teacher", "ghost", r"evaluations.elf.teacher: unknown teacher 'ghost'"),
    ("evaluations.elf.teacher", None, r"evaluations.elf.teacher: loss_mode 'front_rear_task' needs a teacher"),
    ("evaluations.elf.loss_mode", "nope", r"evaluations.elf.loss_mode: 'nope' is not one of"),
    ("evaluations.elf.feature_loss", "nope", r"evaluations.elf.feature_loss: 'nope' is not one of"),
    ("evaluations.baseline.loss_mode", 3, r"evaluations.baseline.loss_mode: 3 is not one of"),
    ("evaluations.elf.lambda_front", -1, r"evaluations.elf.lambda_front: -1 is less than the minimum"),
    ("evaluations.elf.bogus", 1, r"evaluations.elf.bogus: unknown key"),
    ("reference.full.epochs", 0, r"reference.full.epochs: 0 is less than the minimum"),
    ("reference.full.train_limit", -5, r"reference.full.train_limit: -5 is less than the minimum"),
    ("reference.full.seeds", [], r"reference.full.seeds: \[\] should be non-empty"),
    ("reference.bogus", 1, r"reference.bogus: unknown key"),
    ("device", "tpu", r"config key device: 'tpu' does not match"),
    ("threads", 0, r"config key threads: 0 is less than the minimum"),
    ("precision", "fp8", r"config key precision: 'fp8' is not one of"),
    ("compile", "maybe", r"config key compile: 'maybe' is not one of"),
    ("results_dir", 5, r"config key results_dir: 5 is not of type 'string'"),
    ("bogus_top", 1, r"config key bogus_top: unknown key"),
]


@pytest.mark.parametrize("key, value, message", CONFIG_CASES,
                         ids=[f"{key}={'<deleted>' if value is DEL else value!r}" for key, value, _ in CONFIG_CASES])
def test_bad_config(study, smoke, tmp_path, key, value, message):
    before = snapshot(study)
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(with_key(smoke, key, value)))
    run = snakemake(study, "-n", "--configfile", str(config))
    assert run.returncode == 1, run.stdout[-2000:]
    one_line(run, message)
    assert snapshot(study) == before


# --------------------------------------------------------------------------- targets the study does not configure

TARGET_CASES = [
    "results/digits/distill/random/ipc3/synset.h5",  # an IPC outside distillation.ipc
    "results/digits/students/random/ipc1/vgg11/baseline.parquet",  # an architecture outside students.archs
    "results/digits/students/random/ipc1/convnet/elf_l2.parquet",  # an evaluation not configured
    "results/digits/distill/dc/ipc1/synset.h5",  # a method not configured
    "results/mnist/data.h5",  # a dataset not configured
    "results/digits/teachers/resnet18/model.pt",  # a teacher not configured
]


@pytest.mark.parametrize("target", TARGET_CASES)
def test_unconfigured_target(study, target):
    before = snapshot(study)
    run = snakemake(study, "-n", target, "--configfile", "tests/configs/smoke.yaml")
    assert run.returncode == 1
    one_line(run, rf"No rule to produce {target}")
    assert snapshot(study) == before


# --------------------------------------------------------------------------- config files

SMOKE_TEXT = "{smoke}"  # the study's tests/configs/smoke.yaml

# (name, file text, what the strict reader says, what the Snakefile says or None where Snakemake
# itself stops before the Snakefile runs: its own line, without a traceback)
FILE_CASES = [
    ("duplicate-top-key", SMOKE_TEXT + "\nthreads: 2\n", r"line \d+, column 1: duplicate key 'threads' \(first at line \d+",
     r"duplicate key 'threads'"),
    ("duplicate-nested-key", SMOKE_TEXT + "\nextra:\n  seeds: [0]\n  seeds: [1]\n",
     r"duplicate key 'seeds'", r"duplicate key 'seeds'"),
    ("tab-indent", SMOKE_TEXT + "\nextra:\n\tkey: 1\n", r"bad.yaml: line \d+, column 1: .*a tab", None),
    ("syntax-error", SMOKE_TEXT + "\nextra: [1, 2\n", r"bad.yaml: line \d+, column \d+: expected ',' or ']'", None),
    ("empty-file", "", r"bad.yaml: empty", None),
    ("comments-only", "# nothing here\n", r"bad.yaml: empty", None),
    ("a-list", "- datasets\n- students\n", r"bad.yaml: holds a list, not a mapping", None),
]


@pytest.mark.parametrize("name, text, message, snakefile_message", FILE_CASES, ids=[case[0] for case in FILE_CASES])
def test_bad_config_file(study, tmp_path, name, text, message, snakefile_message):
    from elf_pipeline.config import files as configfile

    before = snapshot(study)
    config = tmp_path / "bad.yaml"
    config.write_text(text.replace(SMOKE_TEXT, (study / "tests" / "configs" / "smoke.yaml").read_text()))
    check = subprocess.run([sys.executable, "-m", "elf_pipeline.config.files", str(config)], capture_output=True, text=True,
                           cwd=study)
    assert check.returncode == 2
    one_line(check, message)
    with pytest.raises(configfile.ConfigError):
        configfile.read_config(config)
    run = snakemake(study, "-n", "--configfile", str(config))
    assert run.returncode == 1
    one_line(run, snakefile_message or r"\S")
    assert snapshot(study) == before


@pytest.mark.parametrize("what", ["missing", "folder"])
def test_config_file_missing_or_folder(study, tmp_path, what):
    before = snapshot(study)
    path = tmp_path / "absent.yaml" if what == "missing" else tmp_path
    check = subprocess.run([sys.executable, "-m", "elf_pipeline.config.files", str(path)], capture_output=True, text=True)
    assert check.returncode == 2
    one_line(check, "not found" if what == "missing" else "a folder, not a file")
    assert snapshot(study) == before


def test_results_dir_is_a_file(study, smoke, tmp_path):
    before = snapshot(study)
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder\n")
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(with_key(smoke, "results_dir", str(blocker))))
    run = snakemake(study, "-n", "--configfile", str(config))
    assert run.returncode == 1
    one_line(run, r"config key results_dir: .*taken is a file, not a folder")
    assert snapshot(study) == before


def test_results_dir_of_another_config_is_named(study, tmp_path):
    before = snapshot(study)
    other = tmp_path / "other.yaml"
    other.write_text((study / "tests" / "configs" / "smoke.yaml").read_text())
    run = snakemake(study, "-n", "--configfile", str(other))
    assert run.returncode == 0
    one_line(run, r"warning: results_dir results holds the study of config tests/configs/smoke.yaml, this run uses .*other.yaml")
    run = snakemake(study, "-n", "--configfile", "tests/configs/smoke.yaml")
    assert "holds the study of config" not in run.stderr
    assert snapshot(study) == before


# --------------------------------------------------------------------------- stages called by hand


def _png(path: Path) -> Path:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    return path


def _truncated(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


# (name, how to make the bad file from the study, the stage arguments ({bad}: that file, {study}: the
# study's results), what the one line says)
STAGE_CASES = [
    ("synset-missing", None, "report-synset --synset {tmp}/absent.h5 --data {r}/digits/data.h5 --out {tmp}/p.png",
     r"absent.h5: file not found"),
    ("data-png", "png", "report-synset --synset {r}/digits/distill/random/ipc1/synset.h5 --data {bad} --out {tmp}/p.png",
     r"bad: not a readable HDF5 file"),
    ("data-truncated", "data.h5", "report-synset --synset {r}/digits/distill/random/ipc1/synset.h5 --data {bad} "
     "--out {tmp}/p.png", r"bad: not a readable HDF5 file .*truncated"),
    ("data-is-a-synset", None, "report-synset --synset {r}/digits/distill/random/ipc1/synset.h5 --data "
     "{r}/digits/distill/random/ipc1/synset.h5 --out {tmp}/p.png", r"synset.h5: prepared dataset lacks attribute"),
    ("synset-truncated", "synset.h5", "features --synset {bad} --teacher {r}/digits/teachers/convnet/model.pt "
     "--data {r}/digits/data.h5 --out {tmp}/f.h5", r"bad: not a readable HDF5 file .*truncated"),
    ("synset-png", "png", "report-synset --synset {bad} --data {r}/digits/data.h5 --out {tmp}/p.png",
     r"bad: not a readable HDF5 file"),
    ("synset-is-data", None, "report-synset --synset {r}/digits/data.h5 --data {r}/digits/data.h5 --out {tmp}/p.png",
     r"data.h5: synthetic set needs datasets 'images' and 'labels'"),
    ("teacher-truncated", "model.pt", "features --synset {r}/digits/distill/random/ipc1/synset.h5 --teacher "
     "{bad} --data {r}/digits/data.h5 --out {tmp}/f.h5", r"bad: not a loadable weights-only checkpoint"),
    ("teacher-png", "png", "features --synset {r}/digits/distill/random/ipc1/synset.h5 --teacher {bad} "
     "--data {r}/digits/data.h5 --out {tmp}/f.h5", r"bad: not a loadable weights-only checkpoint \(no torch file: it holds a PNG image"),
    ("teacher-is-hdf5", None, "features --synset {r}/digits/distill/random/ipc1/synset.h5 --teacher "
     "{r}/digits/data.h5 --data {r}/digits/data.h5 --out {tmp}/f.h5", r"data.h5: not a loadable weights-only checkpoint \(no torch file: it holds an HDF5 file"),
    ("parquet-truncated", "parquet", "report --runs {tmp}/runs.parquet --summary {tmp}/s.md {bad}",
     r"bad: unreadable result file"),
    ("parquet-truncated-plot", "parquet", "report-results --runs {bad} --dataset digits --out-accuracy {tmp}/a.png "
     "--out-gap {tmp}/g.png", r"bad: unreadable result file"),
    ("report-of-reference-rows", None, "report --runs {tmp}/runs.parquet --summary {tmp}/s.md "
     "{r}/digits/reference/convnet.parquet", r"convnet.parquet: missing required column 'method'"),
    ("history-not-json", "json", "report-teacher --history {bad} --out {tmp}/t.png", r"bad: not a teacher history"),
    ("history-missing", None, "report-teacher --history {tmp}/absent.json --out {tmp}/t.png",
     r"absent.json: not a teacher history"),
    ("settings-not-json", None, "distill --data {r}/digits/data.h5 --settings {{nope --out {tmp}/s.h5",
     r"argument --settings: not valid JSON"),
    ("settings-not-object", None, "distill --data {r}/digits/data.h5 --settings [1] --out {tmp}/s.h5",
     r"argument --settings: expected a JSON object"),
    ("settings-missing-key", None, "students --data {r}/digits/data.h5 --synset "
     "{r}/digits/distill/random/ipc1/synset.h5 --out {tmp}/o.parquet", r"--settings: missing key 'arch'"),
]


def _bad_file(kind: str | None, study: Path, tmp_path: Path) -> Path:
    results = study / "results" / "digits"
    bad = tmp_path / "bad"
    if kind == "png":
        return _png(bad)
    if kind == "data.h5":
        return _truncated(results / "data.h5", bad)
    if kind == "synset.h5":
        return _truncated(results / "distill" / "random" / "ipc1" / "synset.h5", bad)
    if kind == "parquet":
        return _truncated(results / "students" / "random" / "ipc1" / "convnet" / "baseline.parquet", bad)
    if kind == "model.pt":
        return _truncated(results / "teachers" / "convnet" / "model.pt", bad)
    if kind == "json":
        bad.write_text('{"epochs": [1, 2')
    return bad


@pytest.mark.parametrize("name, kind, args, message", STAGE_CASES, ids=[case[0] for case in STAGE_CASES])
def test_stage_bad_file(study, tmp_path, capsys, name, kind, args, message):
    import re

    from elf_pipeline import cli

    before = snapshot(study)
    bad = _bad_file(kind, study, tmp_path)
    argv = args.format(bad=bad, r=study / "results", tmp=tmp_path).split()
    try:
        code = cli.main(["--threads", "1", *argv])
    except SystemExit as exit_:  # argparse
        code = exit_.code
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert any(re.search(message, line) for line in lines), lines
    assert snapshot(study) == before


# --------------------------------------------------------------------------- import files


def _import_files(study: Path, tmp_path: Path) -> dict[str, Path]:
    """Files that are no synthetic set, each renamed .pt (and a folder)."""
    import torch

    files = {}
    for name, content in {"text": b"just some words\n", "csv": b"a,b\n1,2\n", "json": b'{"images": [1, 2]}\n',
                          "empty": b"", "png": b"\x89PNG\r\n\x1a\n" + bytes(32)}.items():
        files[name] = tmp_path / f"{name}.pt"
        files[name].write_bytes(content)
    files["hdf5"] = tmp_path / "hdf5.pt"
    shutil.copy(study / "results" / "digits" / "distill" / "random" / "ipc1" / "synset.h5", files["hdf5"])
    files["folder"] = tmp_path / "folder.pt"
    files["folder"].mkdir()
    files["nhwc"] = tmp_path / "nhwc.pt"
    torch.save({"images": torch.zeros(10, 16, 16, 1), "labels": torch.arange(10)}, files["nhwc"])
    return files


IMPORT_CASES = [
    ("text", r"text.pt: not a torch file .*it holds text"),
    ("csv", r"csv.pt: not a torch file .*it holds text"),
    ("json", r"json.pt: not a torch file .*it holds JSON text"),
    ("empty", r"empty.pt: not a torch file .*the file is empty"),
    ("png", r"png.pt: not a torch file .*it holds a PNG image"),
    ("hdf5", r"hdf5.pt: not a torch file .*it holds an HDF5 file"),
    ("folder", r"folder.pt: a folder, not a file"),
    ("nhwc", r"nhwc.pt: .*(NHWC|channels|shape)"),
]


@pytest.mark.parametrize("name, message", IMPORT_CASES, ids=[case[0] for case in IMPORT_CASES])
def test_import_bad_file(study, tmp_path, capsys, name, message):
    import json
    import re

    from elf_pipeline import cli

    before = snapshot(study)
    path = _import_files(study, tmp_path)[name]
    settings = {"method": "import", "ipc": 1, "seed": 0,
                "hyperparameters": {"path": str(path), "normalization": "dataset"}}
    code = cli.main(["--threads", "1", "distill", "--data", str(study / "results" / "digits" / "data.h5"),
                     "--settings", json.dumps(settings), "--device", "cpu", "--out", str(tmp_path / "synset.h5")])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert any(re.search(message, line) for line in lines), lines
    assert not (tmp_path / "synset.h5").exists()
    assert snapshot(study) == before


# --------------------------------------------------------------------------- failing runs keep the study


def _nothing_to_do(study: Path, config: str | Path, *targets: str) -> bool:
    run = snakemake(study, "-n", *targets, "--configfile", str(config))  # targets first: after it they are config files
    assert run.returncode == 0, (run.stdout + run.stderr)[-2000:]
    return "Nothing to be done" in run.stdout + run.stderr


def test_failing_prepare_keeps_the_study(study, smoke, tmp_path):
    """val_size larger than the training split: the prepare job fails; data.h5 and everything after
    it stay, a rerun fails again, the original config finds its study done."""
    before = snapshot(study)
    config = tmp_path / "val.yaml"
    config.write_text(yaml.safe_dump(with_key(smoke, "datasets.digits.val_size", 100000)))
    run = snakemake(study, "--cores", "1", "results/digits/data.h5", "--configfile", str(config))
    assert run.returncode == 1
    assert "restored" in run.stderr
    assert snapshot(study) == before
    assert not _nothing_to_do(study, config, "results/digits/data.h5")  # the rerun runs the job again
    assert _nothing_to_do(study, "tests/configs/smoke.yaml")


def test_failing_distillation_keeps_the_study(study, smoke, tmp_path):
    """DM with a learning rate that makes the images diverge: the job fails with one line; the old
    synthetic set (and its metadata) stays, so the bad config reruns it and the original is done."""
    before = snapshot(study)
    config = tmp_path / "diverge.yaml"
    config.write_text(yaml.safe_dump(with_key(smoke, "distillation.methods.dm.lr_img", 1.0e30)))
    target = "results/digits/distill/dm/ipc1/synset.h5"
    run = snakemake(study, "--cores", "1", target, "--configfile", str(config))
    assert run.returncode == 1
    log = (study / "results" / "logs" / "digits" / "distill" / "dm_ipc1.log").read_text()
    assert "error: dm produced non-finite synthetic images" in log
    assert snapshot(study) == before
    assert not _nothing_to_do(study, config, target)
    assert _nothing_to_do(study, "tests/configs/smoke.yaml")


def _import_config(smoke: dict, tmp_path: Path, path: Path, labels: Path | None = None) -> Path:
    block = {"path": str(path), "normalization": "dataset", "space_check": "off"}
    if labels is not None:
        block["labels_path"] = str(labels)
    config = tmp_path / f"import-{path.stem}-{labels.stem if labels else 'none'}.yaml"
    config.write_text(yaml.safe_dump(with_key(smoke, "distillation.methods.import", block)))
    return config


def test_failing_import_keeps_the_study(study, smoke, tmp_path):
    """A finished import whose file is replaced by a malformed one, then one whose soft labels do not
    sum to 1: each failing rerun keeps the imported set; rerunning fails again; reverting finds it done."""
    import h5py
    import torch

    with h5py.File(study / "results" / "digits" / "distill" / "random" / "ipc1" / "synset.h5", "r") as h5:
        images, labels = h5["images"][()], h5["labels"][()]
    release = tmp_path / "images_best.pt"
    torch.save({"images": torch.from_numpy(images), "labels": torch.from_numpy(labels)}, release)
    soft = tmp_path / "labels_best.pt"
    torch.save(torch.from_numpy(np.eye(10, dtype=np.float32)[labels]), soft)
    config = _import_config(smoke, tmp_path, release, soft)
    target = "results/digits/distill/import/ipc1/synset.h5"
    run = snakemake(study, "--cores", "1", target, "--configfile", str(config))
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    finished = snapshot(study)
    stamp = os.stat(release).st_mtime_ns

    good = release.read_bytes()
    release.write_bytes(b"a,b\n1,2\n")  # a CSV file under the release's name
    run = snakemake(study, "--cores", "1", target, "--configfile", str(config))
    assert run.returncode == 1
    assert "not a torch file" in (study / "results" / "logs" / "digits" / "distill" / "import_ipc1.log").read_text()
    assert snapshot(study) == finished
    assert not _nothing_to_do(study, config, target)
    release.write_bytes(good)
    os.utime(release, ns=(stamp, stamp))
    assert _nothing_to_do(study, config, target)

    bad_soft = tmp_path / "labels_half.pt"
    torch.save(torch.from_numpy(np.eye(10, dtype=np.float32)[labels] * 0.5), bad_soft)
    bad = _import_config(smoke, tmp_path, release, bad_soft)
    for _ in range(2):  # fails, and fails again: never 'Nothing to be done' over the previous labels' set
        run = snakemake(study, "--cores", "1", target, "--configfile", str(bad))
        assert run.returncode == 1
        assert "labels_half.pt" in (study / "results" / "logs" / "digits" / "distill" / "import_ipc1.log").read_text()
        assert snapshot(study) == finished
    assert _nothing_to_do(study, config, target)


def test_corrupt_intermediate_does_not_cost_the_files_after_it(study, tmp_path):
    """A truncated synthetic set: the jobs after it fail naming it, and their outputs stay."""
    synset = study / "results" / "digits" / "distill" / "random" / "ipc2" / "synset.h5"
    saved = tmp_path / "synset.h5"
    shutil.copy2(synset, saved)
    try:
        _truncated(saved, synset)
        before = snapshot(study)
        run = snakemake(study, "-n", "--configfile", "tests/configs/smoke.yaml")
        one_line(run, r"warning: results/digits/distill/random/ipc2/synset.h5: not a readable HDF5 file .*delete it")
        run = snakemake(study, "--cores", "1", "results/digits/students/random/ipc2/convnet/baseline.parquet",
                        "--configfile", "tests/configs/smoke.yaml")
        assert run.returncode == 1
        log = (study / "results" / "logs" / "digits" / "students" / "random_ipc2_convnet_baseline.log").read_text()
        assert "synset.h5" in log and "Traceback" not in log
        assert snapshot(study) == before
    finally:
        shutil.copy2(saved, synset)


# --------------------------------------------------------------------------- safekeeping itself


def test_safekeeping_restores_only_what_a_failed_run_deleted(tmp_path):
    """Deleted outputs come back (same inode, modification time and metadata record); an output a
    job rewrote stays new; a file that had no record gets none."""
    from elf_pipeline.infra import safekeeping

    files = {name: tmp_path / "results" / name for name in ("deleted.h5", "rewritten.h5", "untouched.h5", "new.h5")}
    for path in list(files.values())[:3]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(path.name)
    os.utime(files["deleted.h5"], ns=(1_000_000_000, 1_000_000_000))
    inode = files["deleted.h5"].stat().st_ino
    records = {str(files["deleted.h5"]): {"params": ["old"]}}
    written: dict = {}
    keep = tmp_path / "results" / ".kept"
    kept = safekeeping.put_aside(map(str, files.values()), keep, records.get, written.__setitem__)
    assert [entry["path"] for entry in kept] == [str(path) for path in list(files.values())[:3]]
    files["deleted.h5"].unlink()  # what Snakemake does to a failed job's outputs
    files["rewritten.h5"].unlink()
    files["rewritten.h5"].write_text("new content")  # a job that succeeded
    restored = safekeeping.restore(keep, written.__setitem__)
    assert restored == [str(files["deleted.h5"])]
    assert files["deleted.h5"].read_text() == "deleted.h5"
    assert files["deleted.h5"].stat().st_ino == inode and files["deleted.h5"].stat().st_mtime_ns == 1_000_000_000
    assert written == {str(files["deleted.h5"]): {"params": ["old"]}}
    assert files["rewritten.h5"].read_text() == "new content"
    assert not keep.exists()


def test_safekeeping_after_a_killed_run(tmp_path):
    """A run killed before it could restore leaves the folder: the next run links back what is missing."""
    from elf_pipeline.infra import safekeeping

    output = tmp_path / "out.parquet"
    output.write_text("finished")
    keep = tmp_path / ".kept"
    safekeeping.put_aside([str(output)], keep, lambda path: None, lambda path, record: None)
    output.unlink()
    written: dict = {}
    assert safekeeping.put_aside([str(output)], keep, lambda path: None, written.__setitem__)  # the next run
    assert output.read_text() == "finished" and written == {str(output): None}
    safekeeping.discard(keep)
    assert not keep.exists()

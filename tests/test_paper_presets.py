"""The GPU presets (config/paper-*.yaml) run the published method: every (student, teacher) pair an
evaluation uses has matching feature shapes (no silent adapter), the pools are the official ones,
the headers' job counts are what Snakemake plans, and an imported set names the code that wrote it.
The same shape check is a config-time warning for any study. Models are built on the meta device."""

from __future__ import annotations

import copy
import re
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import REPO, SNAKEMAKE, copy_workflow

from elf_pipeline.config import ConfigError, student_jobs, teacher_ref, teacher_value, uses_teacher, validate_schema
from elf_pipeline.config.adapters import adapter_pairs, adapter_warnings
from elf_pipeline.config.checks import check_config
from elf_pipeline.datasets.catalog import SOURCE_CHANNELS
from elf_pipeline.models import build

PRESETS = sorted(path.name for path in (REPO / "config").glob("paper-*.yaml"))
SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")
# the official pools of get_eval_pool (Lirui-Zhao/ELF utils.py), by the names of this registry
OFFICIAL_POOLS = {
    "cifar10": {"convnet", "convnet-bn", "resnet18", "resnet18-bn", "vgg11", "vgg11-bn"},  # cross
    "cifar100": {"convnet", "convnet-bn", "resnet18", "resnet18-bn", "vgg11", "vgg11-bn"},
    "tiny_imagenet": {"convnet-d4", "convnet-d4-bn", "resnet18-imagenet-l4", "resnet18-bn-imagenet-l4",
                      "vgg11-imagenet-l6", "vgg11-bn-imagenet-l6"},  # cross_imagenet
}


def _load(name: str) -> dict:
    with open(REPO / "config" / name) as handle:
        return yaml.safe_load(handle)


def _built_shape(arch: str, channels: int, size: int, num_classes: int, layer: str | None) -> tuple[int, ...]:
    """The output shape of ``arch`` at ``layer`` (its split by default), from a model built on the meta device."""
    with torch.device("meta"):
        model = build(arch, channels, num_classes, size)
        outputs = model.layers(torch.zeros(1, channels, size, size))
    return tuple(outputs[layer or model.split].shape[1:])


def _used_pairs(config: dict) -> list[tuple]:
    """(dataset block, evaluation, student, teacher arch) for every student job whose ELF terms read a teacher feature."""
    pairs = set()
    for job in student_jobs(config):
        block = config["evaluations"][job["evaluation"]]
        if block.get("loss_mode", "task") == "task" or not uses_teacher(config, job["evaluation"]):
            continue
        ref = teacher_ref(teacher_value(config, job["evaluation"], job["arch"]))
        pairs.add((job["dataset"], job["evaluation"], job["arch"], config["teachers"][ref["name"]]["arch"]))
    return sorted(pairs)


@pytest.mark.parametrize("name", PRESETS)
def test_every_student_split_matches_its_teachers_feature(name):
    config = _load(name)
    pairs = _used_pairs(config)
    assert pairs, f"{name} trains no ELF student"
    mismatched = []
    for dataset, evaluation, student, teacher_arch in pairs:
        data, block = config["datasets"][dataset], config["evaluations"][evaluation]
        channels, size = SOURCE_CHANNELS[data["source"]], data["image_size"]
        classes = 200 if data["source"] == "tiny_imagenet" else 100
        student_shape = _built_shape(student, channels, size, classes, block.get("student_layer"))
        teacher_shape = _built_shape(teacher_arch, channels, size, classes, block.get("teacher_layer"))
        if student_shape != teacher_shape and "adapter" not in block:
            mismatched.append(f"{evaluation}: {student} {student_shape} vs {teacher_arch} {teacher_shape}")
    assert not mismatched, f"{name}: students that would go through an adapter: {mismatched}"


@pytest.mark.parametrize("name", PRESETS)
def test_presets_run_the_official_pools_and_warn_about_nothing(name, capsys):
    config = _load(name)
    validate_schema(config, SCHEMA)
    check_config(config)
    assert "warning" not in capsys.readouterr().err
    assert adapter_warnings(config) == []
    (dataset, block), = config["datasets"].items()
    assert set(config["students"]["archs"]) == OFFICIAL_POOLS[block["source"]]
    # the torch-free shapes the warning uses agree with the built models on every pair
    for pair in adapter_pairs(config):
        built = _built_shape(pair["student"], SOURCE_CHANNELS[block["source"]], pair["image_size"], 10,
                             pair["student_layer"])
        assert pair["student_shape"] == built == pair["teacher_shape"], pair


@pytest.mark.parametrize("name", PRESETS)
def test_header_job_counts_are_what_snakemake_plans(name, tmp_path):
    header = "".join(line for line in (REPO / "config" / name).read_text().splitlines(keepends=True)
                     if line.startswith("#"))
    match = re.search(r"Plan \(`snakemake -n`\): (\d+) jobs: (\d+) students", header)
    assert match, f"{name}: the header states no plan"
    assert "ESTIMATED" in header and "GPU-hours" in header and "Deliberately different" in header
    workdir = copy_workflow(REPO, tmp_path / "workflow")
    run = subprocess.run([SNAKEMAKE, "-n", "--configfile", f"config/{name}"], cwd=workdir, capture_output=True, text=True)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", run.stdout, flags=re.M))
    assert (int(stats["total"]), int(stats["students"])) == (int(match.group(1)), int(match.group(2)))
    for rule in ("teachers", "distill", "reference", "features"):
        assert f"{stats[rule]} {rule}" in " ".join(header.split()), (rule, stats[rule])


def _with_alexnet(config: dict, adapter: str | None = None) -> dict:
    config = copy.deepcopy(config)
    config["students"]["archs"].append("alexnet")
    config["evaluations"]["elf"]["teacher"]["alexnet"] = "convnet-w512"
    if adapter:
        config["evaluations"]["elf"]["adapter"] = adapter
    return config


def test_a_student_that_needs_an_adapter_is_named_while_the_config_is_checked(capsys):
    config = _with_alexnet(_load("paper-cifar10.yaml"))
    validate_schema(config, SCHEMA)
    check_config(config)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1, lines
    assert "evaluations.elf" in lines[0] and "alexnet (conv5: 192x4x4)" in lines[0]
    assert "convnet-w512 block3: 512x4x4" in lines[0]
    assert "resnet18" not in lines[0] and "vgg11" not in lines[0]  # the matching students are not named
    check_config(_with_alexnet(_load("paper-cifar10.yaml"), adapter="pair"))  # named explicitly: deliberate
    assert "warning" not in capsys.readouterr().err


def test_the_adapter_warning_does_not_import_torch():
    code = ("import sys, yaml\n"
            "from elf_pipeline.config.checks import check_config\n"
            f"config = yaml.safe_load(open({str(REPO / 'config' / 'paper-tiny.yaml')!r}))\n"
            "config['students']['archs'].append('resnet18')\n"
            "config['evaluations']['elf']['teacher']['resnet18'] = 'convnet-w512-d4'\n"
            "check_config(config)\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "resnet18 (layer4_0: 512x8x8)" in run.stderr and "convnet-w512-d4 block4: 512x4x4" in run.stderr


def _with_import(config: dict, normalization: object) -> dict:
    config = copy.deepcopy(config)
    config["distillation"]["methods"]["import"] = {"normalization": normalization,
                                                   "by_ipc": {ipc: {"path": f"sets/{ipc}.pt"} for ipc in config["distillation"]["ipc"]}}
    return config


def _config_error(config: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate_schema(config, SCHEMA)
        check_config(config)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_bare_published_on_cifar100_names_both_codes():
    cifar100 = _load("paper-cifar100.yaml")
    message = _config_error(_with_import(cifar100, "published"))
    assert message.startswith("config key distillation.methods.import.normalization:")
    assert "{published: dc}" in message and "{published: mtt}" in message
    assert "0.5071" in message and "0.4914" in message
    for named in ({"published": "mtt"}, {"published": "dc"}, {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}):
        config = _with_import(cifar100, named)
        validate_schema(config, SCHEMA)
        check_config(config)
    check_config(_with_import(_load("paper-cifar10.yaml"), "published"))  # every code agrees on CIFAR-10


@pytest.mark.parametrize("normalization, fragments", [
    ({"published": "datm"}, ["distillation.methods.import.normalization"]),
    ({"mean": [0.5], "std": [0.25]}, ["distillation.methods.import.normalization", "3 channel"]),
    ({"mean": [0.5, 0.5, 0.5]}, ["distillation.methods.import.normalization"]),
])
def test_a_bad_normalization_block_is_one_line_naming_the_key(normalization, fragments):
    message = _config_error(_with_import(_load("paper-cifar100.yaml"), normalization))
    for fragment in fragments:
        assert fragment in message, message

"""Teacher pools: an evaluation's ``teacher`` as a mapping from student architecture to teacher, as
the official evaluation pools pair each student with the teacher whose split matches it."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import copy_workflow

from elf_pipeline.config import ConfigError, evaluation_config, student_jobs, teacher_name, used_teacher_names, validate_schema
from elf_pipeline.config.checks import check_config

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def _config(pool) -> dict:
    config = yaml.safe_load((REPO / "tests" / "configs" / "smoke.yaml").read_text())
    config["teachers"]["wide"] = copy.deepcopy(config["teachers"]["convnet"]) | {"arch": "convnet-w256"}
    config["teachers"]["unused"] = copy.deepcopy(config["teachers"]["convnet"]) | {"arch": "convnet-w32"}
    config["evaluations"]["elf"]["teacher"] = pool
    return config


def _validated(config: dict) -> dict:
    validate_schema(copy.deepcopy(config), SCHEMA)
    check_config(config)
    return config


def test_pool_gives_each_student_its_teacher_and_default_the_rest():
    config = _validated(_config({"resnet18": "wide", "default": "convnet"}))
    assert teacher_name(config, "elf", "resnet18") == "wide"
    assert teacher_name(config, "elf", "convnet") == "convnet"
    assert teacher_name(config, "baseline", "resnet18") is None
    # only the teachers some student uses are trained
    assert used_teacher_names(config) == ["convnet", "wide"]
    # each job's evaluation block carries its own teacher, so editing one entry reruns only its students
    assert evaluation_config(config, "elf", "resnet18")["teacher"] == "wide"
    assert evaluation_config(config, "elf", "convnet")["teacher"] == "convnet"
    assert len([job for job in student_jobs(config) if job["evaluation"] == "elf"]) == 2 * 2 * 2  # methods x IPCs x archs


def test_plain_teacher_name_still_works():
    config = _validated(_config("wide"))
    assert {teacher_name(config, "elf", arch) for arch in ("convnet", "resnet18")} == {"wide"}


@pytest.mark.parametrize("pool, message", [
    ({"convnet": "convnet"},
     "config key evaluations.elf.teacher: no teacher for student 'resnet18' (add resnet18: <teacher> or default: <teacher>"),
    ({"resnet18": "missing", "default": "convnet"},
     "config key evaluations.elf.teacher.resnet18: unknown teacher 'missing' (configured: convnet, wide, unused)"),
    ({"resnet-18": "wide", "default": "convnet"}, "config key evaluations.elf.teacher.resnet-18: unknown architecture"),
    ({}, "config key evaluations.elf.teacher"),
    ({"source": "teachers", "default": "convnet"}, "config key evaluations.elf.teacher"),
])
def test_bad_pool_names_the_key(pool, message):
    with pytest.raises(ConfigError) as error:
        _validated(_config(pool))
    assert message in str(error.value)


def test_workflow_extracts_features_once_per_set_and_used_teacher(tmp_path):
    copy_workflow(REPO, tmp_path)
    config = _config({"resnet18": "wide", "vgg11": "unused", "default": "convnet"})
    (tmp_path / "config" / "pool.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run([SNAKEMAKE, "-n", "-p", "--cores", "1", "--configfile", "config/pool.yaml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-3000:]
    outputs = [path for line in re.findall(r"^\s+output: (.+)$", text, flags=re.M) for path in line.split(", ")]
    features = sorted(p for p in outputs if "/features/" in p)
    assert features == sorted(f"results/digits/features/{m}/ipc{i}/{t}.h5"
                              for m in ("dm", "random") for i in (1, 2) for t in ("convnet", "wide"))
    assert "results/digits/teachers/wide/model.pt" in outputs
    assert not any("/teachers/unused/" in p for p in outputs)  # vgg11 is not a student here
    commands = [line for line in text.splitlines() if "students" in line and '"arch": "resnet18"' in line
                and "elf.parquet" in line]
    assert commands and all("/features/" in line and "wide.h5" in line for line in commands)
    settings = json.loads(re.search(r"--settings '([^']+)'", commands[0]).group(1))
    assert settings["identity"]["teacher"] == "wide" and settings["evaluation"]["teacher"] == "wide"

"""``teacher: {source: distillation}``: MTT's expert (the distillation model) as the ELF teacher, its
config checks, and the jobs it plans."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import copy_workflow

from elf_pipeline.artifacts.checkpoint import load_model
from elf_pipeline.artifacts.expert_file import read_epochs
from elf_pipeline.artifacts.feature_file import load_features
from elf_pipeline.config import ConfigError, distillation_teachers, student_jobs, teacher_name, validate_schema
from elf_pipeline.config.checks import check_config
from elf_pipeline.engine.evaluation import evaluate
from elf_pipeline.stages.expert_teacher import teacher_from_expert
from elf_pipeline.stages.experts import train_expert
from elf_pipeline.stages.features import extract_features

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


@pytest.fixture(scope="module")
def expert_h5(tmp_path_factory, digits_h5) -> Path:
    out = tmp_path_factory.mktemp("expert") / "expert_0.h5"
    train_expert(digits_h5, out, "convnet-w8", 0, {"epochs": 2, "batch_size": 25, "dsa": False}, device="cpu")
    return out


def test_expert_becomes_a_teacher_checkpoint(expert_h5, digits_h5, synset_h5, tmp_path):
    from elf_pipeline.artifacts.data_file import load_split

    last, first = tmp_path / "last.pt", tmp_path / "first.pt"
    meta = teacher_from_expert(expert_h5, digits_h5, last, device="cpu")
    teacher_from_expert(expert_h5, digits_h5, first, epoch=1, device="cpu")
    model, payload = load_model(last)
    assert payload["arch"] == "convnet-w8" and payload["epoch"] == meta["epoch"] == 2 and payload["source"] == "distillation"
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.equal(flat, read_epochs(expert_h5, [2])[0])
    images, labels, _ = load_split(digits_h5, "test")
    assert payload["test_acc"] == pytest.approx(evaluate(model, images, labels))
    earlier, _ = load_model(first)
    assert not torch.equal(flat, torch.cat([p.detach().flatten() for p in earlier.parameters()]))
    # and it serves feature extraction like any teacher
    features = tmp_path / "features.h5"
    extract_features(synset_h5, last, features, device="cpu")
    stored = load_features(features, None, synset_h5, 20)
    assert stored.teacher_arch == "convnet-w8" and stored.layer == "block3"


def test_expert_epoch_outside_the_trajectory_is_refused(expert_h5, digits_h5, tmp_path):
    with pytest.raises(ValueError, match="expert epoch 3 outside 1..2"):
        teacher_from_expert(expert_h5, digits_h5, tmp_path / "x.pt", epoch=3, device="cpu")
    assert not (tmp_path / "x.pt").exists()


def _config(**evaluation) -> dict:
    config = yaml.safe_load((REPO / "tests" / "configs" / "smoke.yaml").read_text())
    config["distillation"]["methods"]["mtt"] = {"iterations": 2, "syn_steps": 2, "expert_epochs": 1, "max_start_epoch": 1}
    config["experts"] = {"num_experts": 2, "epochs": 2, "train_limit": 100}
    config["evaluations"]["elf_distill"] = {"loss_mode": "front_rear_task", **evaluation}
    return config


def test_distillation_teacher_names_and_jobs():
    config = _config(teacher={"source": "distillation", "expert": 1, "epoch": 2})
    validate_schema(config, SCHEMA)
    check_config(config)
    assert teacher_name(config, "elf_distill") == "distillation-expert1-epoch2"
    assert teacher_name(config, "elf") == "convnet" and teacher_name(config, "baseline") is None
    assert distillation_teachers(config) == ["distillation-expert1-epoch2"]
    jobs = student_jobs(config)
    assert {job["method"] for job in jobs if job["evaluation"] == "elf_distill"} == {"mtt"}
    assert {job["method"] for job in jobs if job["evaluation"] == "elf"} == {"random", "dm", "mtt"}
    named = _config(teacher={"source": "teachers", "name": "convnet"})
    validate_schema(named, SCHEMA)
    check_config(named)
    assert teacher_name(named, "elf_distill") == "convnet" and distillation_teachers(named) == []


@pytest.mark.parametrize("change, message", [
    (lambda c: c["distillation"]["methods"].pop("mtt"),
     "config key evaluations.elf_distill.teacher: source distillation uses the distillation model of the synthetic set's "
     "method, and only mtt keeps one"),
    (lambda c: c["evaluations"]["elf_distill"]["teacher"].update(expert=2),
     "config key evaluations.elf_distill.teacher.expert: 2 is not one of the 2 experts (0..1)"),
    (lambda c: c["evaluations"]["elf_distill"]["teacher"].update(source="experts"), "config key evaluations.elf_distill.teacher"),
    (lambda c: c["evaluations"]["elf_distill"].update(teacher_layer="layer4_0"),
     "config key evaluations.elf_distill.teacher_layer: teacher 'distillation-expert0' has no layer 'layer4_0'"),
    (lambda c: c["teachers"].update({"distillation-expert0": c["teachers"]["convnet"]}),
     "config key teachers.distillation-expert0: names starting with 'distillation-expert' are reserved"),
])
def test_bad_distillation_teacher_config_names_the_key(change, message):
    config = _config(teacher={"source": "distillation"})
    change(config)
    with pytest.raises(ConfigError) as error:
        validate_schema(copy.deepcopy(config), SCHEMA)
        check_config(config)
    assert message in str(error.value)


def test_workflow_plans_the_expert_teacher_only_for_mtt(tmp_path):
    copy_workflow(REPO, tmp_path)
    config = _config(teacher={"source": "distillation"})
    config["evaluations"]["elf_online"] = {"loss_mode": "front_rear_task", "teacher": "convnet", "teacher_targets": "online"}
    (tmp_path / "config" / "d.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run([SNAKEMAKE, "-n", "-p", "--cores", "1", "--configfile", "config/d.yaml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-3000:]
    outputs = {path for line in re.findall(r"^\s+output: (.+)$", text, flags=re.M) for path in line.split(", ")}
    distill_students = {p for p in outputs if p.endswith("/elf_distill.parquet")}
    assert distill_students and all("/students/mtt/" in p for p in distill_students)
    assert "results/digits/teachers/distillation-expert0/model.pt" in outputs
    assert "results/digits/features/mtt/ipc1/distillation-expert0.h5" in outputs
    assert not any("/features/random/" in p and "distillation" in p for p in outputs)
    assert re.search(r"expert-teacher --expert results/digits/experts/convnet/expert_0\.h5 .*--settings .{\"epoch\": null}.", text)
    # online targets read the teacher checkpoint and no features file
    online = [line for line in text.splitlines() if " students --data" in line and "elf_online" in line]
    assert online and all("--teacher-model results/digits/teachers/convnet/model.pt" in line and "--features" not in line
                          for line in online)

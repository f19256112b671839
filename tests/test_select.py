"""students.select: hyperparameters chosen on validation by the workflow, and the report's effects
with their uncertainty (paired Δ over seeds, 95 % intervals, gap closed with an interval).

The choice function and the interval arithmetic are tested on tiny hand-built frames; the workflow
part runs one tiny study with a validation split (digits, one random set, ConvNet, baseline and
ELF, two lr candidates) up to runs.parquet, then checks what dry runs plan against it.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, copy_workflow

from elf_pipeline.artifacts.choice import apply_choice, choose, read_candidate, selection_columns
from elf_pipeline.config import (
    applied_select_keys,
    candidate_name,
    candidate_settings,
    select_candidates,
    select_jobs,
    student_settings,
    validate_schema,
)
from elf_pipeline.config.checks import check_config
from elf_pipeline.infra.errors import ConfigError, InputError
from elf_pipeline.stages.report.numbers import NOISE_MARK, delta_cell, gap_closed, paired_deltas, t_interval
from elf_pipeline.stages.report.paper_tables import detail_tables, gap_tables, selection_table
from elf_pipeline.stages.select import select_student

SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


# --------------------------------------------------------------------------- the choice


def _frame(val: list[float], test: list[float] | None = None) -> pd.DataFrame:
    test = test if test is not None else [0.5] * len(val)
    return pd.DataFrame({"seed": list(range(len(val))), "val_acc": val, "test_acc": test})


LRS = [{"lr": 0.01}, {"lr": 0.005}, {"lr": 0.002}]


def test_choice_is_the_best_mean_validation_accuracy():
    choice = choose(LRS, [_frame([0.50, 0.60]), _frame([0.70, 0.52]), _frame([0.40, 0.41])])
    assert choice["chosen"] == {"lr": 0.005} and choice["chosen_index"] == 1
    assert [c["val_acc"] for c in choice["candidates"]] == pytest.approx([0.55, 0.61, 0.405])
    assert choice["metric"] == "val_acc"


def test_ties_go_to_the_first_candidate_in_config_order():
    assert choose(LRS, [_frame([0.5]), _frame([0.7]), _frame([0.7])])["chosen"] == {"lr": 0.005}
    assert choose(LRS, [_frame([0.7]), _frame([0.7]), _frame([0.7])])["chosen"] == {"lr": 0.01}


def test_test_accuracy_cannot_change_the_choice(tmp_path):
    val = [[0.50, 0.60], [0.70, 0.52], [0.40, 0.41]]
    chosen = set()
    for trial, tests in enumerate([[0.1, 0.1], [0.9, 0.9], [0.0, 1.0]]):
        frames = [_frame(v, tests if i != 2 else [0.99, 0.99]) for i, v in enumerate(val)]
        chosen.add(json.dumps(choose(LRS, frames), sort_keys=True))
        # through the files the stage reads: only seed and val_acc come back
        paths = []
        for index, frame in enumerate(frames):
            paths.append(tmp_path / f"{trial}_{index}.parquet")
            frame.to_parquet(paths[-1])
        assert list(read_candidate(paths[0]).columns) == ["seed", "val_acc"]
        out = tmp_path / f"choice{trial}.json"
        select_student(paths, out, LRS, [0, 1], "baseline", {"arch": "convnet"})
        chosen.add(json.dumps({k: v for k, v in json.loads(out.read_text()).items()
                               if k not in ("evaluation", "seeds", "identity")}, sort_keys=True))
    assert len(chosen) == 1, chosen


def test_choice_without_validation_accuracy_fails():
    with pytest.raises(InputError, match="val_size"):
        choose(LRS[:1], [_frame([np.nan])])
    with pytest.raises(InputError, match="seeds"):
        choose(LRS[:1], [_frame([0.5])], seeds=[0, 1])


def test_applying_a_choice_and_what_rows_record():
    choice = choose(LRS, [_frame([0.5]), _frame([0.7]), _frame([0.6])])
    assert apply_choice({"lr": 0.01, "epochs": 3}, choice, ["lr"]) == {"lr": 0.005, "epochs": 3}
    assert selection_columns(choice) == {"selected": True, "selected_from": "lr 0.01; lr 0.005; lr 0.002"}
    assert selection_columns(None) == {"selected": False, "selected_from": None}
    table = selection_table([{**choice, "evaluation": "baseline", "seeds": [0],
                              "identity": {"dataset": "digits", "method": "dm", "ipc": 1, "arch": "convnet"}}])
    assert table.title == "Selection"
    assert table.frame.iloc[0].to_dict() == {"dataset": "digits", "method": "dm", "ipc": "1", "arch": "convnet",
                                             "candidates (val acc %)": "lr 0.01: 50.0, lr 0.005: 70.0, lr 0.002: 60.0",
                                             "chosen": "lr 0.005", "seeds": "0"}
    assert "never read" in table.note


# --------------------------------------------------------------------------- the config


@pytest.fixture
def smoke() -> dict:
    config = yaml.safe_load((REPO / "tests" / "configs" / "smoke.yaml").read_text())
    config["datasets"]["digits"]["val_size"] = 50
    config["students"]["select"] = {"lr": [0.01, 0.005], "epochs": [4, 8], "seeds": [0]}
    return config


def _validate(config: dict) -> dict:
    validate_schema(config, SCHEMA)
    check_config(config)
    return config


def test_candidates_are_the_grid_in_config_order(smoke):
    _validate(smoke)
    assert [candidate_name(c) for c in select_candidates(smoke)] == ["lr0.01-epochs4", "lr0.01-epochs8",
                                                                     "lr0.005-epochs4", "lr0.005-epochs8"]
    block = candidate_settings(smoke, "resnet18", "lr0.005-epochs4", {"dataset": "digits"})
    assert block["train"]["lr"] == 0.005 and block["train"]["epochs"] == 4 and block["seeds"] == [0]
    assert block["evaluation"] == {"loss_mode": "task"} and block["identity"]["evaluation"] == "baseline"
    assert len(select_jobs(smoke)) == 2 * 2 * 2  # methods x ipc x archs


def test_students_take_the_selected_keys_from_their_choice(smoke):
    for evaluation in ("baseline", "elf"):
        block = student_settings(smoke, evaluation, "convnet", {})
        assert block["select_keys"] == ["lr", "epochs"]
        assert "lr" not in block["train"] and "epochs" not in block["train"]  # the choice decides them
    smoke["evaluations"]["elf"]["train"] = {"epochs": 3}  # an evaluation's own value still wins
    assert applied_select_keys(smoke, "elf", "convnet") == ["lr"]
    assert student_settings(smoke, "elf", "convnet", {})["train"]["epochs"] == 3


def test_an_explicit_train_by_arch_value_wins_over_select(smoke, capsys):
    smoke["students"]["train_by_arch"] = {"resnet18": {"lr": 0.003}}
    _validate(smoke)
    assert "students.train_by_arch.resnet18 sets lr: resnet18 trains at that explicit value" in capsys.readouterr().err
    assert applied_select_keys(smoke, "baseline", "resnet18") == []
    assert student_settings(smoke, "baseline", "resnet18", {})["train"]["lr"] == 0.003
    assert {job["arch"] for job in select_jobs(smoke)} == {"convnet"}
    smoke["students"]["train_by_arch"] = {"resnet18": {"batch_size": 64}}  # a key not selected: still selected
    assert applied_select_keys(smoke, "baseline", "resnet18") == ["lr", "epochs"]


def _config_error(config: dict) -> str:
    with pytest.raises(ConfigError) as info:
        _validate(config)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_select_needs_a_validation_split_and_a_plain_evaluation(smoke):
    no_val = copy.deepcopy(smoke)
    del no_val["datasets"]["digits"]["val_size"]
    assert _config_error(no_val).startswith("config key students.select: chooses on validation accuracy, but "
                                            "datasets.digits has no validation split")
    elf = copy.deepcopy(smoke)
    elf["students"]["select"]["evaluation"] = "elf"
    assert _config_error(elf).startswith("config key students.select.evaluation: 'elf' uses a teacher")
    own = copy.deepcopy(smoke)
    own["evaluations"]["baseline"]["train"] = {"lr": 0.1}
    assert _config_error(own).startswith("config key students.select.lr: evaluations.baseline.train sets lr")
    with pytest.raises(ConfigError, match="students.select"):
        validate_schema({**smoke, "students": {**smoke["students"], "select": {"lr": [0.01], "metric": "test_acc"}}},
                        SCHEMA)


# --------------------------------------------------------------------------- effects with their uncertainty


def _runs(base: list[float], elf: list[float], seeds: list[int] | None = None) -> pd.DataFrame:
    seeds = seeds or list(range(len(base)))
    rows = [("digits", "dm", 1, "resnet18", evaluation, seed, acc)
            for evaluation, values in (("baseline", base), ("elf", elf)) for seed, acc in zip(seeds, values, strict=True)]
    rows += [("digits", "dm", 1, "convnet", "baseline", seed, 0.8) for seed in seeds]
    return pd.DataFrame(rows, columns=["dataset", "method", "ipc", "arch", "evaluation", "seed", "test_acc"]).assign(
        adapter=False)


def test_t_interval_matches_the_t_table():
    mean, std, low, high = t_interval([0.1, 0.3])
    assert mean == pytest.approx(0.2) and std == pytest.approx(np.sqrt(0.02))
    assert high - mean == pytest.approx(12.7062 * np.sqrt(0.02) / np.sqrt(2), rel=1e-4)  # t(0.975, 1)
    _, _, low5, high5 = t_interval([0.1, 0.2, 0.3, 0.4, 0.5])
    assert high5 - 0.3 == pytest.approx(2.7764 * np.std([0.1, 0.2, 0.3, 0.4, 0.5], ddof=1) / np.sqrt(5), rel=1e-4)
    assert np.isnan(t_interval([0.4])[2])


def test_delta_is_paired_by_seed():
    # seed-to-seed spread is large but ELF adds 5 points on every seed: paired, the effect is clear
    runs = _runs([0.30, 0.50, 0.40], [0.35, 0.55, 0.45])
    shuffled = runs.sample(frac=1.0, random_state=0)
    delta = paired_deltas(shuffled).set_index("arch").loc["resnet18"]
    assert delta["seeds"] == 3 and delta["delta"] == pytest.approx(0.05)
    assert delta["delta_std"] == pytest.approx(0.0, abs=1e-12) and delta["distinguishable"]
    assert delta_cell(delta) == "+5.0 ± 0.0 [+5.0, +5.0]"


def test_a_delta_whose_interval_includes_zero_is_marked():
    runs = _runs([0.40, 0.40, 0.40], [0.50, 0.35, 0.45])
    delta = paired_deltas(runs).iloc[0]
    assert delta["delta_low"] < 0 < delta["delta_high"] and not delta["distinguishable"]
    assert delta_cell(delta).endswith(f" {NOISE_MARK}")
    cell = detail_tables(runs)[0].frame.set_index("arch").loc["resnet18", "Δ elf"]
    assert cell == delta_cell(delta) and re.fullmatch(r"\+3\.3 ± 7\.6 \[-15\.6, \+22\.3\] ~", cell), cell


def test_one_seed_or_unpaired_seeds_give_no_interval():
    assert delta_cell(paired_deltas(_runs([0.4], [0.5])).iloc[0]) == "+10.0"
    unpaired = pd.concat([_runs([0.4], [0.5], seeds=[0]).query("evaluation == 'baseline'"),
                          _runs([0.4], [0.5], seeds=[1]).query("evaluation == 'elf'")])
    delta = paired_deltas(unpaired).iloc[0]
    assert delta["seeds"] == 0 and delta_cell(delta) == "+10.0"


def test_gap_closed_carries_the_interval_of_its_delta():
    runs = _runs([0.40, 0.40, 0.40], [0.50, 0.35, 0.45])  # gap = 0.8 - 0.4
    gap = gap_closed(runs).iloc[0]
    delta = paired_deltas(runs).iloc[0]
    assert gap["gap_closed"] == pytest.approx(delta["delta"] / 0.4)
    assert (gap["gap_low"], gap["gap_high"]) == pytest.approx((delta["delta_low"] / 0.4, delta["delta_high"] / 0.4))
    row = gap_tables(runs)[0][1].frame.iloc[0]
    assert row["resnet18"] == f"8% [{delta['delta_low'] / 0.4 * 100:.0f}, {delta['delta_high'] / 0.4 * 100:.0f}]"


# --------------------------------------------------------------------------- the workflow

TARGET = "results/report/runs.parquet"


def _snakemake(workdir: Path, *args: str) -> str:
    run = subprocess.run([SNAKEMAKE, "--cores", "2", *args], cwd=workdir, capture_output=True, text=True)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    return run.stdout + run.stderr


def _planned(workdir: Path, config: str) -> set[str]:
    text = _snakemake(workdir, TARGET, "-n", "--configfile", config)
    return {path for line in re.findall(r"^\s+output: (.+)$", text, flags=re.M) for path in line.split(", ")}


def _write(workdir: Path, name: str, change=None) -> str:
    config = yaml.safe_load((REPO / "tests" / "configs" / "smoke.yaml").read_text())
    config["datasets"]["digits"]["val_size"] = 50
    config["distillation"]["methods"] = {"random": {}}
    config["distillation"]["ipc"] = [1]
    config["teachers"]["convnet"]["train"]["epochs"] = 1
    config["students"]["archs"] = ["convnet"]
    config["students"]["train"]["epochs"] = 2
    config["students"]["select"] = {"lr": [0.01, 0.05], "seeds": [0]}
    config["reference"] = {"enabled": False}
    if change is not None:
        change(config)
    (workdir / "config" / name).write_text(yaml.safe_dump(config))
    return f"config/{name}"


@pytest.fixture(scope="module")
def select_study(tmp_path_factory) -> Path:
    """The tiny selecting study run to its runs.parquet (about a minute on two idle cores)."""
    workdir = copy_workflow(REPO, tmp_path_factory.mktemp("select") / "study")
    config = _write(workdir, "select.yaml")
    _snakemake(workdir, TARGET, "--configfile", config)
    return workdir


CELL = "results/digits/select/random/ipc1/convnet"


@pytest.mark.slow
def test_students_train_at_the_choice(select_study):
    choice = json.loads((select_study / CELL / "choice.json").read_text())
    assert [c["values"] for c in choice["candidates"]] == [{"lr": 0.01}, {"lr": 0.05}]
    assert choice["metric"] == "val_acc" and "test_acc" not in json.dumps(choice)
    best = max(choice["candidates"], key=lambda c: c["val_acc"])  # no tie expected; a tie keeps the first
    runs = pd.read_parquet(select_study / TARGET)
    assert set(runs["evaluation"]) == {"baseline", "elf"}
    assert (runs["train_lr"] == choice["chosen"]["lr"]).all() and best["values"] == choice["chosen"]
    assert runs["selected"].all() and (runs["selected_from"] == "lr 0.01; lr 0.05").all()
    summary = (select_study / "results/report/summary.md").read_text()
    assert "## Selection" in summary and "| lr 0.01: " in summary


@pytest.mark.slow
def test_a_finished_selecting_study_reruns_nothing(select_study):
    assert _planned(select_study, "config/select.yaml") == set()


@pytest.mark.slow
def test_adding_a_candidate_runs_it_and_what_the_choice_reaches(select_study):
    config = _write(select_study, "more.yaml", lambda c: c["students"]["select"]["lr"].append(0.002))
    planned = _planned(select_study, config)
    students = "results/digits/students/random/ipc1/convnet"
    assert planned - {p for p in planned if p.startswith("results/report/")} == {
        f"{CELL}/lr0.002.parquet", f"{CELL}/choice.json", f"{students}/baseline.parquet", f"{students}/elf.parquet"}
    assert TARGET in planned


@pytest.mark.slow
def test_select_without_a_validation_split_fails_before_any_job(tmp_path):
    workdir = copy_workflow(REPO, tmp_path / "study")
    config = _write(workdir, "no_val.yaml", lambda c: c["datasets"]["digits"].pop("val_size"))
    run = subprocess.run([SNAKEMAKE, "-n", "--configfile", config], cwd=workdir, capture_output=True, text=True)
    assert run.returncode != 0 and not (workdir / "results").exists()
    lines = [line for line in (run.stdout + run.stderr).splitlines() if "config key students.select" in line]
    assert lines and "invalid configuration: config key students.select: chooses on validation accuracy" in lines[0]

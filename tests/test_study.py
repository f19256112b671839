"""The empirical study: design distance, the similarity, normalisation and ablation tables, and the
``study_similarity`` / ``study_norm`` / ``study_ablation`` workflow targets (one tiny run on digits,
then dry runs)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import copy_workflow

import elf_pipeline.stages.study.ablation as ablation
from elf_pipeline.cli import main
from elf_pipeline.config import ConfigError, study_archs, study_jobs, validate_schema
from elf_pipeline.config.checks import check_config
from elf_pipeline.stages.students import train_students
from elf_pipeline.stages.study import design, design_distance, rank_correlation, write_norm, write_similarity
from elf_pipeline.stages.study.ablation import ablation_table, write_ablation

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("arch, distance, differs", [
    ("convnet", 0, []), ("convnet-in-relu-avgpool-w128-d3", 0, []),
    ("convnet-w64", 1, ["width"]), ("convnet-d4", 1, ["depth"]), ("convnet-bn", 1, ["norm"]),
    ("convnet-sigmoid", 1, ["activation"]), ("convnet-maxpool", 1, ["pooling"]),
    ("convnet-w512-d4-bn", 3, ["width", "depth", "norm"]),
    ("resnet18", 4, ["family", "width", "depth", "pooling"]), ("resnet18-bn", 5, ["family", "width", "depth", "norm", "pooling"]),
    ("vgg11", 4, ["family", "width", "depth", "pooling"]), ("alexnet", 5, ["family", "width", "depth", "norm", "pooling"]),
    ("alexnet-in", 4, ["family", "width", "depth", "pooling"]), ("mlp", 5, ["family", "width", "depth", "norm", "pooling"]),
    ("tv-mobilenet_v2", 6, ["family", "width", "depth", "norm", "activation", "pooling"]),
])
def test_design_distance_counts_differing_choices(arch, distance, differs):
    assert design_distance(arch, "convnet") == (distance, differs)


def test_design_is_symmetric_and_torch_free():
    assert design_distance("resnet18-bn", "convnet-bn")[0] == design_distance("convnet-bn", "resnet18-bn")[0] == 4
    assert design("resnet18-imagenet")["pooling"] == "max + strided conv"
    code = "import sys; import elf_pipeline.stages.study as s; s.design_distance('vgg11', 'convnet'); assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_rank_correlation():
    assert rank_correlation(pd.Series([0, 1, 2, 3]), pd.Series([1.0, 5.0, 6.0, 9.0])) == pytest.approx(1.0)
    assert rank_correlation(pd.Series([0, 1, 2, 3]), pd.Series([9.0, 5.0, 4.0, 1.0])) == pytest.approx(-1.0)
    assert math.isnan(rank_correlation(pd.Series([0, 1]), pd.Series([1.0, 2.0])))
    assert math.isnan(rank_correlation(pd.Series([1, 1, 1]), pd.Series([1.0, 2.0, 3.0])))


# --------------------------------------------------------------------------- tables from real student runs

STUDY_ARCHS = ["convnet", "convnet-bn", "alexnet", "alexnet-in"]
EVALUATIONS = {"baseline": {"loss_mode": "task"}, "elf": {"loss_mode": "front_rear_task", "teacher": "t"}}


@pytest.fixture(scope="module")
def student_runs(tmp_path_factory, digits_h5, synset_h5, features_h5) -> list[Path]:
    out = tmp_path_factory.mktemp("study_students")
    paths = []
    for arch in STUDY_ARCHS:
        for name, evaluation in EVALUATIONS.items():
            path = out / f"{arch}_{name}.parquet"
            train_students(digits_h5, synset_h5, features_h5 if name == "elf" else None, arch, evaluation,
                           {"epochs": 1, "batch_size": 10, "dsa": True}, [0, 1], path,
                           {"dataset": "digits", "method": "random", "ipc": 2, "evaluation": name}, device="cpu")
            paths.append(path)
    return paths


def test_similarity_table_from_student_runs(student_runs, tmp_path):
    outs = [tmp_path / "similarity.parquet", tmp_path / "similarity.md", tmp_path / "similarity.png"]
    table = write_similarity(student_runs, "convnet", ["convnet-bn", "alexnet"], list(EVALUATIONS), *outs)
    assert table["arch"].tolist() == ["convnet", "convnet-bn", "alexnet"]
    assert table["design_distance"].tolist() == [0, 1, 5]
    rows = pd.concat(pd.read_parquet(p) for p in student_runs)
    for evaluation in EVALUATIONS:
        acc = rows[rows["evaluation"] == evaluation].groupby("arch")["test_acc"].mean()
        assert table[f"acc_{evaluation}"].tolist() == pytest.approx([acc["convnet"], acc["convnet-bn"], acc["alexnet"]])
        assert table[f"gap_{evaluation}"].tolist() == pytest.approx([0.0, acc["convnet"] - acc["convnet-bn"],
                                                                    acc["convnet"] - acc["alexnet"]])
        assert (table[f"seeds_{evaluation}"] == 2).all()
    # ELF against the 8-channel conftest teacher needs adapters for every student; baseline none
    assert table["adapter_elf"].all() and not table["adapter_baseline"].any()
    stored = pq.read_table(outs[0])
    assert stored.schema.metadata[b"elf_title"] == b"Study: architecture similarity"
    assert b"Spearman" in stored.schema.metadata[b"elf_note"]
    pd.testing.assert_frame_equal(stored.to_pandas(), table)
    markdown = outs[1].read_text()
    assert markdown.startswith("# Study: architecture similarity") and "| convnet-bn |" in markdown
    assert "family, width, depth, norm, pooling" in markdown
    assert outs[2].read_bytes()[:8] == PNG


def test_norm_table_through_the_cli(student_runs, tmp_path, capsys):
    outs = [tmp_path / "norm.parquet", tmp_path / "norm.md", tmp_path / "norm.png"]
    code = main(["study", "norm", *map(str, student_runs), "--reference", "convnet", "--evaluations", "baseline", "elf",
                 "--pairs", "alexnet=alexnet-in", "convnet-bn=convnet", "--out-table", str(outs[0]),
                 "--out-markdown", str(outs[1]), "--out-plot", str(outs[2])])
    assert code == 0 and "alexnet-in" in capsys.readouterr().out
    table = pd.read_parquet(outs[0])
    assert table["arch"].tolist() == ["alexnet", "convnet-bn"] and table["norm"].tolist() == ["none", "batch"]
    for evaluation in EVALUATIONS:
        change = table[f"gap_own_{evaluation}"] - table[f"gap_in_{evaluation}"]
        assert table[f"gap_change_{evaluation}"].tolist() == pytest.approx(change.tolist())
        assert table[f"gap_in_{evaluation}"].iloc[1] == pytest.approx(0.0)  # convnet-bn -> convnet is the reference
    assert outs[2].read_bytes()[:8] == PNG and "gap_change_elf" in outs[1].read_text()


def test_missing_study_rows_name_the_architecture(student_runs, tmp_path):
    outs = [tmp_path / "s.parquet", tmp_path / "s.md", tmp_path / "s.png"]
    with pytest.raises(Exception, match="no result rows for architecture 'vgg11' under evaluation 'baseline'"):
        write_similarity(student_runs, "convnet", ["vgg11"], ["baseline"], *outs)
    with pytest.raises(Exception, match="unknown architecture 'resnet19'"):
        write_norm(student_runs, "convnet", {"resnet19": "alexnet"}, ["baseline"], *outs)
    assert not any(p.exists() for p in outs)


# --------------------------------------------------------------------------- workflow targets


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([SNAKEMAKE, *args, "--cores", "2"], cwd=workdir, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def planned(workdir: Path, *args: str) -> set[str]:
    result = snakemake(workdir, *args, "-n")
    text = result.stdout + result.stderr
    return {path for line in re.findall(r"^\s+output: (.+)$", text, flags=re.M) for path in line.split(", ")}


def variant(workdir: Path, name: str, change) -> str:
    config = yaml.safe_load((workdir / "tests" / "configs" / "study-smoke.yaml").read_text())
    change(config)
    (workdir / "config" / name).write_text(yaml.safe_dump(config))
    return f"config/{name}"


TARGETS = ("study_similarity", "study_norm")
TABLES = {f"results/study/{part}.{ext}" for part in ("similarity", "norm") for ext in ("parquet", "md", "png")}


@pytest.fixture(scope="module")
def study_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("study_run")
    copy_workflow(REPO, workdir)
    first = planned(workdir, *TARGETS, "--configfile", "tests/configs/study-smoke.yaml")
    assert TABLES <= first and not any("/full/" in p or "/report/" in p for p in first)
    snakemake(workdir, *TARGETS, "--configfile", "tests/configs/study-smoke.yaml")
    return workdir


@pytest.mark.slow
def test_study_targets_write_the_tables(study_run: Path):
    smoke = yaml.safe_load((study_run / "tests" / "configs" / "study-smoke.yaml").read_text())["studies"]
    similarity = pd.read_parquet(study_run / "results/study/similarity.parquet")
    assert similarity["arch"].tolist() == [smoke["reference"], *smoke["similarity"]["archs"]]
    assert similarity[[f"acc_{e}" for e in smoke["evaluations"]]].stack().between(0, 1).all()
    norm = pd.read_parquet(study_run / "results/study/norm.parquet")
    assert dict(zip(norm["arch"], norm["arch_instance_norm"], strict=True)) == smoke["norm"]["pairs"]
    for part in ("similarity", "norm"):
        assert (study_run / f"results/study/{part}.png").read_bytes()[:8] == PNG
        assert (study_run / f"results/study/{part}.md").read_text().startswith("# Study:")
    # the study's students are ordinary students results of the one synthetic set
    students = sorted(p.relative_to(study_run / "results/digits/students").as_posix()
                      for p in (study_run / "results/digits/students").rglob("*.parquet"))
    archs = ["convnet", *smoke["similarity"]["archs"], *[a for pair in smoke["norm"]["pairs"].items() for a in pair]]
    assert students == sorted(f"random/ipc2/{a}/{e}.parquet" for a in set(archs) for e in smoke["evaluations"])


@pytest.mark.slow
def test_finished_study_has_nothing_to_do(study_run: Path):
    assert planned(study_run, *TARGETS, "--configfile", "tests/configs/study-smoke.yaml") == set()


@pytest.mark.slow
def test_changing_the_teacher_layer_replans_only_that_evaluations_students(study_run: Path):
    config = variant(study_run, "layer.yaml", lambda c: c["evaluations"]["elf"].update(teacher_layer="block2"))
    plan = planned(study_run, *TARGETS, "report", "--configfile", config)
    students = {p for p in plan if "/students/" in p}
    assert students == {f"results/digits/students/random/ipc2/{a}/elf.parquet"
                        for a in ("convnet", "convnet-bn", "alexnet", "alexnet-in")}
    assert not any("/features/" in p or "/teachers/" in p or "/distill/" in p for p in plan)
    assert plan - students - TABLES <= {f"results/report/{n}" for n in ("runs.parquet", "reference.parquet", "ddranking.parquet", "summary.md",
                                                                          "summary.html")}


@pytest.mark.slow
def test_report_includes_the_configured_study_tables(study_run: Path):
    result = snakemake(study_run, "report", "-n", "--configfile", "tests/configs/study-smoke.yaml")
    report_inputs = re.search(r"rule report:\n\s+input: (.+)", result.stdout + result.stderr)
    assert report_inputs and "results/study/similarity.parquet" in report_inputs.group(1)
    assert "results/study/norm.parquet" in report_inputs.group(1)


@pytest.mark.slow
@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("studies"), "config key studies: missing"),
    (lambda c: c["studies"].pop("norm"), "config key studies.norm: missing (needed by target study_norm)"),
])
def test_study_target_without_its_config_fails_before_any_job(study_run: Path, change, message):
    config = variant(study_run, "bad.yaml", change)
    result = snakemake(study_run, *TARGETS, "-n", "--configfile", config, check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


@pytest.mark.parametrize("change, message", [
    (lambda c: c["studies"].update(evaluations=["elf_l2"]), "config key studies.evaluations[0]: unknown evaluation 'elf_l2'"),
    (lambda c: c["studies"]["similarity"]["archs"].append("resnet19"), "config key studies.similarity.archs[2]: unknown architecture"),
    (lambda c: c["studies"]["norm"]["pairs"].update({"vgg11-bn": "vgg12"}), "config key studies.norm.pairs.vgg11-bn: unknown architecture 'vgg12'"),
    (lambda c: c["studies"].update(method="dm"), "config key studies.method: unknown method 'dm'"),
    (lambda c: c["studies"].update(dataset="cifar10"), "config key studies.dataset: unknown dataset 'cifar10'"),
    (lambda c: c["studies"].update(cka=True), "config key studies.cka: unknown key"),
    (lambda c: c["studies"].update(ipc=0), "config key studies.ipc: 0 is less than the minimum of 1"),
    (lambda c: c["evaluations"]["elf"].update(student_layer="block3"), "study architecture 'alexnet' has no layer 'block3'"),
    (lambda c: c["studies"].update(ablation={"archs": ["convnet-bn"], "evaluations": ["baseline", "elf_l2"]}),
     "config key studies.ablation.evaluations[1]: unknown evaluation 'elf_l2' (configured: baseline, elf)"),
    (lambda c: c["studies"].update(ablation={"archs": ["convnet-bn", "resnet19"], "evaluations": ["baseline"]}),
     "config key studies.ablation.archs[1]: unknown architecture 'resnet19'"),
    (lambda c: c["studies"].update(ablation={"archs": ["convnet-bn"]}), "config key studies.ablation: 'evaluations' is a required property"),
    (lambda c: c["studies"].update(ablation={"archs": [], "evaluations": ["baseline"]}), "config key studies.ablation.archs"),
    (lambda c: c["studies"].update(ablation={"archs": ["alexnet"], "evaluations": ["baseline", "baseline"]}),
     "config key studies.ablation.evaluations"),
    (lambda c: [c["studies"].pop(part) for part in ("similarity", "norm")], "config key studies: configures no part of the study"),
])
def test_bad_study_config_names_the_key(change, message):
    config = yaml.safe_load((REPO / "tests" / "configs" / "study-smoke.yaml").read_text())
    validate_schema(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    check_config(config)
    assert study_archs(config) == ["convnet", "convnet-bn", "alexnet", "alexnet-in"]
    change(config)
    with pytest.raises(ConfigError) as error:
        validate_schema(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
        check_config(config)
    assert message in str(error.value)


# --------------------------------------------------------------------------- ELF ablation

ABLATION_ARCHS = ["convnet", "alexnet"]
PROTOCOLS = {"baseline": ("task", "ce", "coupled"), "elf": ("front_rear_task", "ce", "coupled"),
             "elf_l2": ("front_rear_task", "l2", "coupled"), "elf_pair": ("front_rear_task", "ce", "pair")}


def result_rows(cells: dict[tuple[str, str], tuple[list, list]], **extra) -> pd.DataFrame:
    """Result rows as students writes them: (arch, evaluation) -> (val_acc per seed, test_acc per seed)."""
    rows = []
    for (arch, evaluation), (vals, tests) in cells.items():
        loss_mode, loss, form = PROTOCOLS[evaluation]
        for seed, (val, test) in enumerate(zip(vals, tests, strict=True)):
            rows.append({"dataset": "digits", "method": "random", "ipc": 2, "arch": arch, "evaluation": evaluation,
                         "seed": seed, "test_acc": test, "val_acc": val, "loss_mode": loss_mode, "feature_loss": loss,
                         "adapter_form": form, "adapter": arch == "alexnet" and loss_mode != "task", **extra})
    return pd.DataFrame(rows)


# elf gains more on validation (+5 points on both archs), elf_l2 more on test (+15): the choice is elf
CELLS = {
    ("convnet", "baseline"): ([0.50, 0.52], [0.60, 0.62]), ("alexnet", "baseline"): ([0.40, 0.40], [0.50, 0.50]),
    ("convnet", "elf"): ([0.55, 0.57], [0.70, 0.70]), ("alexnet", "elf"): ([0.45, 0.45], [0.60, 0.60]),
    ("convnet", "elf_l2"): ([0.53, 0.53], [0.76, 0.76]), ("alexnet", "elf_l2"): ([0.42, 0.42], [0.65, 0.65]),
}


def test_ablation_table_deltas_and_the_choice_on_validation():
    table = ablation_table(result_rows(CELLS), ABLATION_ARCHS, ["baseline", "elf", "elf_l2"]).set_index("evaluation")
    assert table.loc["baseline", ["loss_mode", "feature_loss", "adapter_form"]].tolist() == ["task", "-", "-"]
    assert table.loc["elf_l2", ["loss_mode", "feature_loss", "adapter_form"]].tolist() == ["front_rear_task", "l2", "coupled"]
    assert table.loc["baseline", "val_convnet"] == pytest.approx(0.51)
    assert table.loc["baseline", "test_convnet"] == pytest.approx(0.61)
    assert table.loc["baseline", "std_convnet"] == pytest.approx(pd.Series([0.60, 0.62]).std(ddof=1))
    assert table.loc["elf", "std_alexnet"] == pytest.approx(0.0)
    assert table["delta_val_convnet"].tolist() == pytest.approx([0.0, 0.05, 0.02])
    assert table["delta_test_convnet"].tolist() == pytest.approx([0.0, 0.09, 0.15])
    assert table["delta_val_alexnet"].tolist() == pytest.approx([0.0, 0.05, 0.02])
    assert table["delta_test_alexnet"].tolist() == pytest.approx([0.0, 0.10, 0.15])
    assert table["mean_delta_val"].tolist() == pytest.approx([0.0, 0.05, 0.02])
    assert table["mean_delta_test"].idxmax() == "elf_l2"  # the best on test ...
    assert table["best_on_val"].tolist() == [False, True, False]  # ... is not the one chosen
    assert table["adapter_alexnet"].tolist() == [False, True, True] and not table["adapter_convnet"].any()


def test_ablation_reference_is_never_chosen_and_one_seed_has_zero_std():
    cells = {(a, e): ([0.5 if e == "baseline" else 0.4], [0.5]) for a in ABLATION_ARCHS for e in ("baseline", "elf", "elf_pair")}
    cells["convnet", "elf_pair"] = ([0.45], [0.5])
    table = ablation_table(result_rows(cells), ABLATION_ARCHS, ["baseline", "elf", "elf_pair"])
    assert table["best_on_val"].tolist() == [False, False, True]  # the highest non-reference row, though below 0
    assert (table[[f"std_{a}" for a in ABLATION_ARCHS]] == 0).all().all()
    assert table.loc[2, "adapter_form"] == "pair"


def test_ablation_rows_name_the_student_lr_of_each_evaluation():
    rows = result_rows(CELLS)
    rows["train_lr"] = [0.005 if (a, e) == ("alexnet", "elf") else 0.01 for a, e in zip(rows["arch"], rows["evaluation"],
                                                                                         strict=True)]
    table = ablation_table(rows, ABLATION_ARCHS, ["baseline", "elf", "elf_l2"]).set_index("evaluation")
    assert table["train_lr"].tolist() == ["0.01", "0.005, 0.01", "0.01"]
    assert ablation_table(result_rows(CELLS), ABLATION_ARCHS, ["baseline"])["train_lr"].tolist() == ["-"]


@pytest.mark.parametrize("drop", [False, True], ids=["val_acc None", "no val_acc column"])
def test_ablation_without_validation_accuracy_chooses_nothing(tmp_path, monkeypatch, drop):
    rows = result_rows(CELLS)
    rows = rows.drop(columns=["val_acc", "adapter_form"]) if drop else rows.assign(val_acc=None)
    path = tmp_path / "rows.parquet"
    rows.to_parquet(path)
    titles = []
    monkeypatch.setattr(ablation, "save_figure", lambda figure, out: titles.append(figure.axes[0].get_title()))
    outs = [tmp_path / "ablation.parquet", tmp_path / "ablation.md", tmp_path / "ablation.png"]
    table = write_ablation([path], ABLATION_ARCHS, ["baseline", "elf", "elf_l2"], *outs)
    for column in ("val_convnet", "delta_val_alexnet", "mean_delta_val"):
        assert table[column].isna().all()
    assert not table["best_on_val"].any()
    assert table["delta_test_convnet"].tolist() == pytest.approx([0.0, 0.09, 0.15])
    assert table["adapter_form"].tolist() == (["-", "-", "-"] if drop else ["-", "coupled", "coupled"])
    assert titles and "TEST accuracy" in titles[0] and "no validation split" in titles[0]
    note = pq.read_table(outs[0]).schema.metadata[b"elf_note"].decode()
    assert "no evaluation is chosen" in note and "never on test accuracy" in note


def test_ablation_some_arch_without_validation_leaves_the_row_unranked():
    rows = result_rows(CELLS)
    rows.loc[(rows["arch"] == "alexnet") & (rows["evaluation"] == "elf"), "val_acc"] = None
    table = ablation_table(rows, ABLATION_ARCHS, ["baseline", "elf", "elf_l2"])
    assert math.isnan(table.loc[1, "mean_delta_val"])
    assert table["best_on_val"].tolist() == [False, False, True]


def test_ablation_through_the_cli(tmp_path, capsys, monkeypatch):
    paths = []
    for (arch, evaluation), cell in CELLS.items():  # one file per students job
        paths.append(tmp_path / f"{arch}_{evaluation}.parquet")
        result_rows({(arch, evaluation): cell}).to_parquet(paths[-1])
    titles = []
    save = ablation.save_figure
    monkeypatch.setattr(ablation, "save_figure", lambda figure, out: (titles.append(figure.axes[0].get_title()), save(figure, out)))
    outs = [tmp_path / "ablation.parquet", tmp_path / "ablation.md", tmp_path / "ablation.png"]
    code = main(["study", "ablation", *map(str, paths), "--archs", *ABLATION_ARCHS, "--evaluations", "baseline", "elf",
                 "elf_l2", "--out-table", str(outs[0]), "--out-markdown", str(outs[1]), "--out-plot", str(outs[2])])
    assert code == 0 and "elf_l2" in capsys.readouterr().out
    stored = pq.read_table(outs[0])
    assert stored.schema.metadata[b"elf_title"] == b"Study: ELF ablation"
    note = stored.schema.metadata[b"elf_note"].decode()
    assert "dataset digits, method random, ipc 2" in note and "best_on_val: elf" in note and "never on test accuracy" in note
    assert stored.to_pandas()["best_on_val"].tolist() == [False, True, False]
    markdown = outs[1].read_text()
    assert markdown.startswith("# Study: ELF ablation") and "| elf_l2 " in markdown and "| yes " in markdown
    assert titles == ["ELF ablation: validation accuracy change vs. baseline"]
    assert outs[2].read_bytes()[:8] == PNG
    with pytest.raises(Exception, match="no result rows for architecture 'vgg11' under evaluation 'baseline'"):
        write_ablation(paths, ["vgg11"], ["baseline", "elf"], *[tmp_path / f"x.{e}" for e in ("parquet", "md", "png")])


def ablation_config() -> dict:
    """The smoke study with an ablation: an extra evaluation only the ablation trains."""
    config = yaml.safe_load((REPO / "tests" / "configs" / "study-smoke.yaml").read_text())
    config["evaluations"]["elf_l2"] = {**config["evaluations"]["elf"], "feature_loss": "l2"}
    config["students"]["evaluations"] = ["baseline", "elf"]
    config["studies"]["ablation"] = {"archs": ["convnet-bn", "resnet18"], "evaluations": ["baseline", "elf", "elf_l2"]}
    return config


def test_study_jobs_include_the_ablation_once():
    config = ablation_config()
    validate_schema(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    check_config(config)
    assert study_archs(config) == ["convnet", "convnet-bn", "alexnet", "alexnet-in", "resnet18"]
    jobs = [(job["arch"], job["evaluation"]) for job in study_jobs(config)]
    gap = [(a, e) for a in ("convnet", "convnet-bn", "alexnet", "alexnet-in") for e in ("baseline", "elf")]
    assert jobs == [*gap, ("convnet-bn", "elf_l2"), ("resnet18", "baseline"), ("resnet18", "elf"), ("resnet18", "elf_l2")]
    assert {(j["dataset"], j["method"], j["ipc"]) for j in study_jobs(config)} == {("digits", "random", 2)}
    for part in ("similarity", "norm"):  # the ablation alone trains only its own jobs
        config["studies"].pop(part)
    check_config(config)
    assert [(job["arch"], job["evaluation"]) for job in study_jobs(config)] == [
        (a, e) for a in ("convnet-bn", "resnet18") for e in ("baseline", "elf", "elf_l2")]


@pytest.fixture(scope="module")
def ablation_workdir(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("ablation_dry_run")
    copy_workflow(REPO, workdir)
    (workdir / "config" / "ablation-smoke.yaml").write_text(yaml.safe_dump(ablation_config()))
    return workdir


def test_study_ablation_dry_run_schedules_its_students(ablation_workdir: Path):
    plan = planned(ablation_workdir, "study_ablation", "--configfile", "config/ablation-smoke.yaml")
    students = {p for p in plan if "/students/" in p}
    assert students == {f"results/digits/students/random/ipc2/{a}/{e}.parquet"
                        for a in ("convnet-bn", "resnet18") for e in ("baseline", "elf", "elf_l2")}
    assert {f"results/study/ablation.{ext}" for ext in ("parquet", "md", "png")} <= plan
    assert not any("similarity" in p or "norm." in p for p in plan)
    # the similarity and norm parts do not read (or train) the ablation's extra evaluation
    plan = planned(ablation_workdir, "study_similarity", "study_norm", "--configfile", "config/ablation-smoke.yaml")
    assert plan and not any("elf_l2" in p for p in plan) and "results/study/ablation.parquet" not in plan


def test_report_with_an_ablation_trains_the_main_students_under_students_evaluations(ablation_workdir: Path):
    result = snakemake(ablation_workdir, "report", "-n", "--configfile", "config/ablation-smoke.yaml")
    text = result.stdout + result.stderr
    report_inputs = re.search(r"rule report:\n\s+input: (.+)", text)
    assert report_inputs and "results/study/ablation.parquet" in report_inputs.group(1)
    plan = {path for line in re.findall(r"^\s+output: (.+)$", text, flags=re.M) for path in line.split(", ")}
    elf_l2 = {p for p in plan if p.endswith("/elf_l2.parquet")}
    assert elf_l2 == {f"results/digits/students/random/ipc2/{a}/elf_l2.parquet" for a in ("convnet-bn", "resnet18")}

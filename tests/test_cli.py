import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, SYN_IPC

from elf_pipeline.cli import build_parser, main
from elf_pipeline.infra.io import open_h5, read_provenance


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "elf_pipeline", "--threads", "1", *argv], capture_output=True,
                          text=True, timeout=300, cwd=REPO)


def test_prepare_data_subprocess(tmp_path):
    out = tmp_path / "data.h5"
    result = _cli("data", "--settings", json.dumps({"source": "digits", "image_size": 12, "resize": "interpolate",
                                                            "train_limit": 20, "seed": 3}), "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["train"] == 20 and summary["test"] > 0
    with open_h5(out) as h5:
        assert h5["train/images"].shape == (20, 12, 12, 1)
        assert np.bincount(h5["train/labels"][:]).tolist() == [2] * 10
        prov = read_provenance(h5)
    assert prov["config"] == {"source": "digits", "image_size": 12, "resize": "interpolate", "train_limit": 20, "seed": 3}


def test_missing_teacher_exits_2_with_one_line(synset_h5, tmp_path):
    missing = tmp_path / "no-such-teacher.pt"
    out = tmp_path / "features.h5"
    result = _cli("features", "--synset", str(synset_h5), "--teacher", str(missing),
                  "--device", "cpu", "--out", str(out))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("elf-pipeline features: error:")
    assert str(missing) in lines[0]
    assert not out.exists()
    assert result.stdout == ""


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["--log-level", "ERROR", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_unknown_method_is_a_one_line_error(capsys, digits_h5, tmp_path):
    code, _, err = _run(capsys, "distill", "--data", str(digits_h5), "--settings", '{"method": "nope", "ipc": 1}',
                        "--device", "cpu", "--out", str(tmp_path / "s.h5"))
    assert code == 2
    assert err.strip().splitlines() == [err.strip()]
    assert err.startswith("elf-pipeline distill: error: unknown distillation method 'nope'")
    assert list(tmp_path.iterdir()) == []


def test_corrupt_data_file_is_a_one_line_error(capsys, tmp_path):
    data = tmp_path / "data.h5"
    data.write_bytes(b"garbage" * 100)
    code, _, err = _run(capsys, "distill", "--data", str(data), "--settings", '{"method": "random", "ipc": 1}',
                        "--device", "cpu", "--out", str(tmp_path / "s.h5"))
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("elf-pipeline distill: error:") and str(data) in err


def test_distill_and_student_through_main(capsys, digits_h5, tmp_path):
    synset = tmp_path / "synset.h5"
    settings = {"method": "dm", "ipc": 1, "seed": 2, "hyperparameters": {"iterations": 2, "batch_real": 4, "model": "convnet-w8"}}
    code, _, err = _run(capsys, "distill", "--data", str(digits_h5), "--settings", json.dumps(settings),
                        "--device", "cpu", "--out", str(synset))
    assert code == 0, err
    with open_h5(synset) as h5:
        assert h5["images"].shape[0] == 10
        assert read_provenance(h5)["config"]["iterations"] == 2
    out = tmp_path / "student.parquet"
    code, stdout, err = _run(capsys, "students", "--data", str(digits_h5), "--synset", str(synset),
                             "--settings", json.dumps({
                                 "arch": "convnet-w4", "evaluation": {"loss_mode": "task"},
                                 "train": {"epochs": 1, "batch_size": 10, "dsa": False}, "seeds": [0, 1],
                                 "identity": {"dataset": "digits", "method": "dm", "ipc": SYN_IPC, "teacher": None,
                                              "evaluation": "baseline"}}),
                             "--device", "cpu", "--out", str(out))
    assert code == 0, err
    assert out.is_file()
    assert "test_acc" in stdout and "baseline" in stdout


@pytest.mark.parametrize("argv, fragment", [
    (["distill", "--data", "d.h5", "--settings", "{not json", "--out", "s.h5"], "not valid JSON"),
    (["distill", "--data", "d.h5", "--settings", "[1, 2]", "--out", "s.h5"], "expected a JSON object"),
    (["data", "--source", "digits", "--out", "d.h5"], "unrecognized arguments: --source"),
    (["no-such-stage"], "invalid choice"),
])
def test_bad_arguments_exit_2_from_argparse(capsys, argv, fragment):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert fragment in capsys.readouterr().err


@pytest.mark.parametrize("stage, settings, fragment", [
    ("data", {"source": "digits"}, "data --settings: missing key 'image_size'"),
    ("teachers", {"arch": "convnet", "train": {"epochs": 1}, "max_in_memory": 2},
     "teachers --settings: unknown key 'max_in_memory'"),
    ("distill", {"method": "dm", "ipc": 1, "hyperparameters": {"syn_steps": 3}}, "method dm takes no 'syn_steps'"),
])
def test_bad_settings_are_one_line_errors(capsys, tmp_path, stage, settings, fragment):
    files = {"data": ["--out", "d.h5"], "teachers": ["--data", "d.h5", "--out-model", "m.pt", "--out-history", "h.json"],
             "distill": ["--data", "d.h5", "--out", "s.h5"]}[stage]
    code, _, err = _run(capsys, stage, "--settings", json.dumps(settings), *[str(tmp_path / f) if "." in f else f for f in files])
    assert code == 2
    assert err.strip().splitlines() == [f"elf-pipeline {stage}: error: " + err.strip().split(": error: ", 1)[1]]
    assert fragment in err


def test_settings_take_the_schema_defaults():
    from elf_pipeline.config.stages import parse_stage_settings

    teacher = parse_stage_settings("teachers", {"arch": "convnet", "train": {"epochs": 1}})
    assert teacher == {"arch": "convnet", "train": {"epochs": 1}, "checkpoint_epoch": None, "train_limit": None,
                       "eval_every": 1, "max_in_memory_gb": 4.0, "seed": 0}
    data = parse_stage_settings("data", {"source": "digits", "image_size": 8})
    assert data["resize"] == "pad" and data["root"] is None and data["download"] is False and "distillation" not in data


def test_every_stage_has_a_command_and_no_function_is_long():
    import ast
    import inspect

    from elf_pipeline import cli

    parser = build_parser()
    stages = parser._subparsers._group_actions[0].choices
    assert set(stages) == set(cli.ARGUMENTS)
    tree = ast.parse(inspect.getsource(cli))
    lengths = {node.name: node.end_lineno - node.lineno + 1 for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    assert max(lengths.values()) <= 80, lengths

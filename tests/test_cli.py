import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, SYN_IPC

from elf_pipeline.cli import build_parser, main
from elf_pipeline.io import open_h5, read_provenance


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "elf_pipeline", "--threads", "1", *argv], capture_output=True,
                          text=True, timeout=300, cwd=REPO)


def test_prepare_data_subprocess(tmp_path):
    out = tmp_path / "data.h5"
    result = _cli("prepare-data", "--source", "digits", "--image-size", "12", "--resize", "interpolate",
                  "--train-limit", "20", "--seed", "3", "--out", str(out))
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
    result = _cli("extract-features", "--synset", str(synset_h5), "--teacher", str(missing),
                  "--device", "cpu", "--out", str(out))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("elf-pipeline extract-features: error:")
    assert str(missing) in lines[0]
    assert not out.exists()
    assert result.stdout == ""


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["--log-level", "ERROR", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_unknown_method_is_a_one_line_error(capsys, digits_h5, tmp_path):
    code, _, err = _run(capsys, "distill", "--data", str(digits_h5), "--method", "nope", "--ipc", "1",
                        "--device", "cpu", "--out", str(tmp_path / "s.h5"))
    assert code == 2
    assert err.strip().splitlines() == [err.strip()]
    assert err.startswith("elf-pipeline distill: error: unknown distillation method 'nope'")
    assert list(tmp_path.iterdir()) == []


def test_corrupt_data_file_is_a_one_line_error(capsys, tmp_path):
    data = tmp_path / "data.h5"
    data.write_bytes(b"garbage" * 100)
    code, _, err = _run(capsys, "distill", "--data", str(data), "--method", "random", "--ipc", "1",
                        "--device", "cpu", "--out", str(tmp_path / "s.h5"))
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("elf-pipeline distill: error:") and str(data) in err


def test_distill_and_student_through_main(capsys, digits_h5, tmp_path):
    synset = tmp_path / "synset.h5"
    code, _, err = _run(capsys, "distill", "--data", str(digits_h5), "--method", "dm", "--ipc", "1", "--seed", "2",
                        "--config", json.dumps({"iterations": 2, "batch_real": 4, "model": "convnet-w8"}),
                        "--device", "cpu", "--out", str(synset))
    assert code == 0, err
    with open_h5(synset) as h5:
        assert h5["images"].shape[0] == 10
        assert read_provenance(h5)["config"]["iterations"] == 2
    out = tmp_path / "student.parquet"
    code, stdout, err = _run(capsys, "train-student", "--data", str(digits_h5), "--synset", str(synset),
                             "--arch", "convnet-w4", "--evaluation", '{"loss_mode": "task"}',
                             "--train", '{"epochs": 1, "batch_size": 10, "dsa": false}', "--seeds", "0", "1",
                             "--identity", json.dumps({"dataset": "digits", "method": "dm", "ipc": SYN_IPC,
                                                       "teacher": None, "evaluation": "baseline"}),
                             "--device", "cpu", "--out", str(out))
    assert code == 0, err
    assert out.is_file()
    assert "test_acc" in stdout and "baseline" in stdout


@pytest.mark.parametrize("argv, fragment", [
    (["distill", "--data", "d.h5", "--method", "dm", "--ipc", "1", "--config", "{not json", "--out", "s.h5"],
     "not valid JSON"),
    (["distill", "--data", "d.h5", "--method", "dm", "--ipc", "1", "--config", "[1, 2]", "--out", "s.h5"],
     "expected a JSON object"),
    (["prepare-data", "--source", "digits", "--image-size", "8", "--resize", "stretch", "--out", "d.h5"], "invalid choice"),
    (["no-such-stage"], "invalid choice"),
])
def test_bad_arguments_exit_2_from_argparse(capsys, argv, fragment):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert fragment in capsys.readouterr().err


def test_optional_values_parse_none():
    args = build_parser().parse_args(["prepare-data", "--source", "digits", "--image-size", "8", "--root", "none",
                                      "--train-limit", "null", "--out", "x.h5"])
    assert args.root is None and args.train_limit is None
    args = build_parser().parse_args(["prepare-data", "--source", "digits", "--image-size", "8", "--train-limit", "30",
                                      "--out", "x.h5"])
    assert args.train_limit == 30 and args.resize == "pad"

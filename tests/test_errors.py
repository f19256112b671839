"""One base class for the errors a user can fix: the CLI reports those as one line (exit 2) and lets
anything else, a bug, keep its traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from elf_pipeline import cli
from elf_pipeline.infra.errors import (
    ArtifactError,
    ConfigError,
    DataSourceError,
    InputError,
    NonFiniteResult,
    TrainingDiverged,
    UnknownArchitecture,
    UserError,
)


@pytest.mark.parametrize("kind", [ArtifactError, ConfigError, DataSourceError, InputError, NonFiniteResult,
                                  TrainingDiverged, UnknownArchitecture])
def test_every_user_error_shares_the_base(kind):
    assert issubclass(kind, UserError)


def test_old_import_places_name_the_same_classes():
    from elf_pipeline.config import ConfigError as from_config
    from elf_pipeline.engine.training import TrainingDiverged as from_training
    from elf_pipeline.infra.io import ArtifactError as from_io
    from elf_pipeline.models import UnknownArchitecture as from_models
    from elf_pipeline.stages.data import DataSourceError as from_data

    assert (from_config, from_data, from_io, from_models, from_training) == (
        ConfigError, DataSourceError, ArtifactError, UnknownArchitecture, TrainingDiverged)


def _run_stage(monkeypatch, error):
    def stage(args):
        raise error

    monkeypatch.setattr(cli, "cmd_report", stage)  # build_parser binds the stage function when main runs
    return cli.main(["report", "--runs", "r.parquet", "--summary", "s.md", "x.parquet"])


def test_user_error_is_one_line_and_exit_2(monkeypatch, capsys):
    assert _run_stage(monkeypatch, InputError("config key x: bad")) == 2
    assert capsys.readouterr().err.strip() == "elf-pipeline report: error: config key x: bad"


def test_an_internal_value_error_is_a_bug_with_its_traceback(monkeypatch, capsys):
    with pytest.raises(ValueError, match="internal"):
        _run_stage(monkeypatch, ValueError("internal"))


def test_the_cli_and_errors_import_no_torch():
    code = "import sys, elf_pipeline.cli, elf_pipeline.infra.errors; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr

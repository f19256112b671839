"""Code inputs derived from the imports: every module a stage really loads is an input of its rule."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from elf_pipeline.config.sources import command_sources, module_closure

PACKAGE = Path(__file__).resolve().parents[1] / "elf_pipeline"
# rule command -> the stage module its cmd_ function imports
STAGES = {"data": "elf_pipeline.stages.data", "distill": "elf_pipeline.stages.distill", "experts": "elf_pipeline.stages.experts",
          "teachers": "elf_pipeline.stages.teachers", "features": "elf_pipeline.stages.features",
          "students": "elf_pipeline.stages.students", "report": "elf_pipeline.stages.report", "reference": "elf_pipeline.stages.reference",
          "report-results": "elf_pipeline.stages.report.figures", "study": "elf_pipeline.stages.study",
          "expert-teacher": "elf_pipeline.stages.expert_teacher"}


def _loaded(module: str) -> set[str]:
    """The package files a fresh interpreter holds after importing the CLI and ``module`` (and, as
    a stage does when it builds a model, every architecture family)."""
    code = ("import importlib, json, sys, elf_pipeline.cli\n"
            f"importlib.import_module({module!r})\n"
            "if 'elf_pipeline.models.registry' in sys.modules:\n"
            "    r = sys.modules['elf_pipeline.models.registry']\n"
            "    [importlib.import_module('elf_pipeline.models.' + m) for m, _, _ in r.FIXED.values()]\n"
            "    importlib.import_module('elf_pipeline.models.convnet')\n"
            "print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items() if n.startswith('elf_pipeline')"
            " and getattr(m, '__file__', None))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    return {str(Path(path).resolve()) for path in json.loads(result.stdout)}


@pytest.mark.parametrize("command", sorted(STAGES))
def test_every_module_a_stage_loads_is_an_input_of_its_rule(command):
    inputs = {str(path.resolve()) for path in command_sources(PACKAGE, command)}
    missing = _loaded(STAGES[command]) - inputs
    assert not missing, f"{command}: loaded but not an input: {sorted(missing)}"
    assert str((PACKAGE / "cli.py").resolve()) in inputs and str((PACKAGE / "bench.py").resolve()) not in inputs


def test_known_drift_is_covered():
    """resume.py (imported by training) and the dataset readers were once missing from the inputs."""
    teacher = {p.name for p in command_sources(PACKAGE, "teachers")}
    prepare = {str(p.relative_to(PACKAGE)) for p in command_sources(PACKAGE, "data")}
    assert "resume.py" in teacher and "datasets/cifar.py" in prepare and "students.py" not in prepare
    report = {p.name for p in command_sources(PACKAGE, "report")}
    assert "torch" not in report and "training.py" not in report and "students.py" not in report


def test_a_distill_job_runs_its_own_method_module_only():
    """The distill stage imports each method by name from the registry; a job's code inputs are the
    stage without the other methods' modules (what the workflow's distill rule lists)."""
    from elf_pipeline.config.methods import other_method_modules

    everything = {p.name for p in command_sources(PACKAGE, "distill")}
    assert {"dm.py", "dc.py", "mtt.py", "imported.py", "random_subset.py", "common.py"} <= everything
    dm = {p.name for p in command_sources(PACKAGE, "distill", exclude=other_method_modules("dm"))}
    assert {"dm.py", "common.py", "__init__.py"} <= dm and not {"dc.py", "mtt.py", "imported.py", "random_subset.py"} & dm
    dsa = {p.name for p in command_sources(PACKAGE, "distill", exclude=other_method_modules("dsa"))}
    assert "dc.py" in dsa and "dm.py" not in dsa


def test_closure_follows_every_import_form(tmp_path):
    package = tmp_path / "elf_pipeline"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from elf_pipeline import b\nfrom .sub import c\n",
        "b.py": "def f():\n    import elf_pipeline.d\n",
        "sub/__init__.py": "",
        "sub/c.py": "from ..e import name\n",
        "d.py": "", "e.py": "name = 1\n", "unused.py": "import elf_pipeline.a\n",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    closure = {str(p.relative_to(package)) for p in module_closure(package, ["elf_pipeline.a"])}
    assert closure == {"__init__.py", "a.py", "b.py", "sub/__init__.py", "sub/c.py", "d.py", "e.py"}
    shallow = {str(p.relative_to(package)) for p in module_closure(package, [], shallow=["elf_pipeline.b"])}
    assert shallow == {"__init__.py", "b.py"}  # b's import inside a function is not followed


def test_unknown_command_is_named():
    with pytest.raises(KeyError, match="no function cmd_train_dragon"):
        command_sources(PACKAGE, "train-dragon")

"""The package's layers, stated by folder and read from the ``import`` statements with ``ast``
(nothing is imported).

From the top: the entry points (``cli``, ``__main__``), ``bench/`` (a tool no rule runs),
``stages/`` (one module or package per workflow stage), ``engine/`` (the trainer and what it
trains with), ``artifacts/`` (file formats), ``config/`` (torch-free: resolution, checks, schema,
vocabulary, settings, code sources), ``models/`` and ``datasets/``, and ``infra/`` (errors, I/O,
resumable state, GPU locks). A module imports its own layer or lower ones, at module level or inside
a function; no stage imports another stage; every stage is one CLI command of its name.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "elf_pipeline"
NAME = "elf_pipeline"
# top to bottom; a folder (or top-level module) per entry
LAYERS = (("entry", {"cli", "__main__"}), ("bench", {"bench"}), ("stages", {"stages"}), ("engine", {"engine"}),
          ("artifacts", {"artifacts"}), ("config", {"config"}), ("models and datasets", {"models", "datasets"}),
          ("infra", {"infra"}))
RANK = {folder: rank for rank, (_, folders) in enumerate(LAYERS) for folder in folders}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = [NAME, *path.relative_to(PACKAGE).with_suffix("").parts]
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _targets(node: ast.AST, module: str, is_package: bool) -> set[str]:
    """Package modules one import statement names (``from a import b`` counts ``a.b`` where it is a module)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name.split(".")[0] == NAME}
    if not isinstance(node, ast.ImportFrom):
        return set()
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
    if base.split(".")[0] != NAME:
        return set()
    named = {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES}
    return named | {base}


def imports(module: str) -> set[str]:
    """Every package module ``module`` imports, at module level or inside a function."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        found |= _targets(node, module, path.name == "__init__.py")
    return {name for name in found if name in MODULES and name != module}


def folder_of(module: str) -> str | None:
    """The layer folder of a module (``elf_pipeline.engine.elf`` -> ``engine``); None for the package root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def stage_of(module: str) -> str | None:
    """``elf_pipeline.stages.distill.dc`` -> ``distill``; None outside ``stages/``."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "stages" else None


def test_every_module_lies_in_a_layer():
    loose = sorted(m for m in MODULES if folder_of(m) is not None and folder_of(m) not in RANK)
    assert not loose, f"modules outside the layer folders {sorted(RANK)}: {', '.join(loose)}"
    top_level = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top_level == ["__init__.py", "__main__.py", "cli.py"], top_level


@pytest.mark.parametrize("module", sorted(m for m in MODULES if folder_of(m) in RANK))
def test_a_module_imports_its_layer_or_lower(module):
    own = RANK[folder_of(module)]
    upward = sorted(t for t in imports(module) if folder_of(t) is not None and RANK[folder_of(t)] < own)
    assert not upward, f"{module} imports a higher layer: {', '.join(upward)}"


def test_no_stage_imports_another_stage():
    edges = sorted((m, t) for m in MODULES if stage_of(m) for t in imports(m) if stage_of(t) and stage_of(t) != stage_of(m))
    assert not edges, "stage imports another stage (move the shared code below stages/): " + ", ".join(
        f"{a} -> {b}" for a, b in edges)


def test_config_has_no_import_cycle():
    """The torch-free config package: its modules import each other without a cycle (the Snakefile
    reads them while parsing)."""
    config = {m for m in MODULES if folder_of(m) == "config"}
    graph = {m: imports(m) & config for m in config}
    done, path = set(), []

    def visit(module):
        assert module not in path, "import cycle: " + " -> ".join([*path[path.index(module):], module])
        if module in done:
            return
        path.append(module)
        for target in sorted(graph[module]):
            visit(target)
        path.pop()
        done.add(module)

    for module in sorted(config):
        visit(module)


def test_one_name_per_stage():
    """Each stage's module is named as its CLI command and its rule file: ``stages/teachers.py``,
    ``elf-pipeline teachers``, ``workflow/rules/teachers.smk`` (which defines ``rule teachers``)."""
    from elf_pipeline.cli import ARGUMENTS

    stages = {p.stem for p in (PACKAGE / "stages").iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()} - {"__init__"}
    commands = {command.replace("-", "_") for command in ARGUMENTS} - {"bench"}
    rule_files = {p.stem for p in (PACKAGE.parent / "workflow" / "rules").glob("*.smk")} - {"common", "safekeeping"}
    assert stages <= commands and stages == rule_files, (stages, commands, rule_files)
    for stage in stages:
        rules = re.findall(r"^rule (\w+):", (PACKAGE.parent / "workflow" / "rules" / f"{stage}.smk").read_text(), flags=re.M)
        assert stage in rules or any(rule.startswith(f"{stage}_") for rule in rules), (stage, rules)
    extra = commands - stages
    assert all(any(command.startswith(f"{stage}_") for stage in stages) for command in extra), extra


def test_nothing_but_main_imports_the_cli():
    users = sorted(m for m in MODULES if m != f"{NAME}.__main__" and f"{NAME}.cli" in imports(m))
    assert not users, f"the CLI is the entry point, imported by: {', '.join(users)}"


def test_config_and_artifact_formats_import_without_torch():
    """The Snakefile reads the config package, and torch-free stages and the workflow read artifacts;
    torch loads only inside the functions that build tensors or modules."""
    modules = sorted(m for m in MODULES if folder_of(m) in ("artifacts", "config"))
    code = f"import importlib, sys\nfor m in {modules!r}:\n    importlib.import_module(m)\nprint('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(modules) >= 15 and result.stdout.strip() == "False"

"""The package's layering, read from the ``import`` statements with ``ast`` (nothing is imported).

Rule: a *stage* is a module that a ``cmd_*`` function of ``elf_pipeline/cli.py`` imports (the
module behind one subcommand), together with the submodules of a stage package that are not a stage
themselves (``distill/dc.py`` belongs to the ``distill`` stage). Every other module except the entry
points (``cli``, ``__main__``) is *core*: artifact formats (``artifacts/``), models, training, losses,
augmentation, I/O. No stage imports a module of another stage, and no core module imports a stage,
at module level or inside a function; stages share code only through core modules.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "elf_pipeline"
NAME = "elf_pipeline"
ENTRY_POINTS = {f"{NAME}.cli", f"{NAME}.__main__"}


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


def stage_modules() -> set[str]:
    """The modules the ``cmd_*`` functions of the CLI import."""
    tree = ast.parse(MODULES[f"{NAME}.cli"].read_text())
    stages: set[str] = set()
    for function in tree.body:
        if isinstance(function, ast.FunctionDef) and function.name.startswith("cmd_"):
            for node in ast.walk(function):
                stages |= {name for name in _targets(node, f"{NAME}.cli", False) if name in MODULES}
    return stages - {NAME}


STAGES = stage_modules()


def stage_of(module: str) -> str | None:
    """The stage ``module`` belongs to: the outermost stage package holding it (a package such as
    ``distill`` or ``report`` is one stage whose modules serve several commands), else itself if the
    CLI runs it; None for core."""
    owners = [stage for stage in STAGES if module == stage
              or (module.startswith(stage + ".") and MODULES[stage].name == "__init__.py")]
    return min(owners, key=len) if owners else None


def test_the_cli_dispatches_to_the_known_stages():
    """The classification is read from cli.py; it must find the stages the workflow runs."""
    expected = {"data", "distill", "distill.experts", "teacher", "features", "students", "report", "reference",
                "report.figures", "expert_teacher", "study", "ablation", "bench"}
    assert {f"{NAME}.{name}" for name in expected} <= STAGES
    assert stage_of(f"{NAME}.distill.mtt") == f"{NAME}.distill"
    assert stage_of(f"{NAME}.distill.experts") == f"{NAME}.distill"
    assert stage_of(f"{NAME}.report.figures") == f"{NAME}.report"
    assert stage_of(f"{NAME}.training") is None and stage_of(f"{NAME}.artifacts.synset") is None


def _cross_stage_edges() -> set[tuple[str, str]]:
    edges = set()
    for module in MODULES:
        if module in ENTRY_POINTS or (own := stage_of(module)) is None:
            continue
        for target in imports(module):
            other = stage_of(target)
            if other is not None and other != own:
                edges.add((module, target))
    return edges


def test_no_stage_imports_another_stage():
    edges = _cross_stage_edges()
    assert not edges, "stage imports another stage (move the shared code to a core module): " + ", ".join(
        f"{a} -> {b}" for a, b in sorted(edges))


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m not in ENTRY_POINTS and stage_of(m) is None))
def test_core_module_imports_no_stage(module):
    bad = sorted(target for target in imports(module) if stage_of(target) is not None or target in ENTRY_POINTS)
    assert not bad, f"core module {module} imports stage module(s) {', '.join(bad)}"


def test_nothing_but_main_imports_the_cli():
    users = sorted(m for m in MODULES if m != f"{NAME}.__main__" and f"{NAME}.cli" in imports(m))
    assert not users, f"the CLI is the entry point, imported by: {', '.join(users)}"


def test_artifact_formats_import_without_torch():
    """Torch-free stages and the workflow can read and check artifacts; torch loads only inside the
    functions that build tensors or modules."""
    modules = sorted(m for m in MODULES if m.startswith(f"{NAME}.artifacts"))
    code = f"import importlib, sys\nfor m in {modules!r}:\n    importlib.import_module(m)\nprint('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(modules) >= 6 and result.stdout.strip() == "False"

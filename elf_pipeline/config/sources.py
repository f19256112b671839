"""The package files a workflow rule's job runs, read from the imports themselves.

Snakemake's ``code`` trigger sees only a rule's own body, not the modules its command imports, so
every rule lists the files its stage imports as inputs: editing one reruns exactly the jobs that
run it. Those lists are derived here, while the Snakefile parses, from the ``import`` statements of
the package (read with ``ast``; nothing is imported, so no torch), starting from the rule's stage
modules: every ``elf_pipeline`` import, at module level or inside a function, directly or not.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "elf_pipeline"
# Modules that import others by computed name: each may run any module of the named package.
DYNAMIC = {
    "elf_pipeline.models.registry": "elf_pipeline.models",  # build(): importlib per family
    "elf_pipeline.stages.distill": "elf_pipeline.stages.distill",  # method_function(): importlib per method (config/methods.py)
}


def module_path(root: Path, module: str) -> Path | None:
    """The file of ``elf_pipeline.a.b`` under the package folder ``root`` (a module or a package)."""
    parts = module.split(".")[1:]
    candidate = root.joinpath(*parts)
    for path in (candidate.with_suffix(".py"), candidate / "__init__.py"):
        if path.is_file():
            return path
    return None


def _module_name(root: Path, path: Path) -> str:
    relative = path.relative_to(root).with_suffix("")
    parts = [PACKAGE, *relative.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(root: Path, path: Path, top_level_only: bool) -> set[str]:
    """Package modules named by the imports of one file (``from pkg import name`` counts ``pkg.name``
    where that is a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = _module_name(root, path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    nodes = tree.body if top_level_only else ast.walk(tree)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != PACKAGE:
                continue
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if module_path(root, f"{base}.{alias.name}"))
    return found


def _with_parents(module: str) -> list[str]:
    """Importing ``a.b.c`` runs ``a/__init__``, ``a/b/__init__`` and ``a/b/c``."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def module_closure(root: str | Path, modules: Iterable[str], shallow: Iterable[str] = (),
                   exclude: Iterable[str] = ()) -> list[Path]:
    """Sorted files of ``modules`` and of everything they import from the package, transitively.
    ``shallow`` modules contribute only their module-level imports (the CLI, whose stage imports
    sit inside the functions of the other stages); ``exclude`` modules are not followed."""
    root, shallow, exclude = Path(root), set(shallow), set(exclude)
    seen: set[str] = set()
    pending = [parent for module in [*modules, *shallow] for parent in _with_parents(module)]
    while pending:
        module = pending.pop()
        if module in seen or module in exclude:
            continue
        seen.add(module)
        path = module_path(root, module)
        if path is None:
            continue
        for name in _imported(root, path, top_level_only=module in shallow):
            pending.extend(_with_parents(name))
        if module in DYNAMIC:
            folder = module_path(root, DYNAMIC[module]).parent
            pending.extend(_module_name(root, file) for file in sorted(folder.glob("*.py")))
    return sorted(path for path in (module_path(root, m) for m in seen) if path is not None)


def command_sources(root: str | Path, command: str, exclude: Iterable[str] = ()) -> list[Path]:
    """The files one CLI subcommand runs: ``cli`` (its module-level imports) and the closure of the
    imports inside ``cmd_<command>`` (``students`` -> ``cmd_train_student``)."""
    root = Path(root)
    cli = root / "cli.py"
    name = "cmd_" + command.replace("-", "_")
    function = next((node for node in ast.parse(cli.read_text()).body
                     if isinstance(node, ast.FunctionDef) and node.name == name), None)
    if function is None:
        raise KeyError(f"{cli}: no function {name} for command {command!r}")
    stages = set()
    for node in ast.walk(function):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == PACKAGE:
            stages.add(node.module)
            stages.update(f"{node.module}.{a.name}" for a in node.names if module_path(root, f"{node.module}.{a.name}"))
        elif isinstance(node, ast.Import):
            stages.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
    return module_closure(root, sorted(stages), shallow=[f"{PACKAGE}.cli"], exclude=exclude)

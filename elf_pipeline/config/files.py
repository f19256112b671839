"""Reading a config file strictly: one line naming the file (and the line) for what YAML would let pass
or report without a place.

Snakemake reads ``--configfile`` itself before the Snakefile runs: a YAML syntax error there is one
line without file or line, a duplicate key silently keeps the last value. The Snakefile checks the
files again with :func:`check_files` (duplicate keys, an empty file); ``make run`` / ``dry-run`` /
``report`` run ``python -m elf_pipeline.config.files CONFIG`` first, which also names a missing file,
a folder and the place of a syntax error. Torch-free.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from elf_pipeline.infra.errors import ConfigError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1}; YAML would keep the last one)",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def read_config(path: str | Path) -> dict:
    """The config in ``path``; ConfigError naming the file (and line) when it is missing, a folder,
    empty, not YAML, not a mapping, or gives a key twice."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path}: a folder, not a file")
    if not path.is_file():
        raise ConfigError(f"config file {path}: not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path}: unreadable ({err.__class__.__name__}: {err})") from None
    try:
        config = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        tab = " (a tab: YAML indents with spaces only)" if "'\\t'" in str(err.problem) else ""
        raise ConfigError(f"config file {path}:{where}: {err.problem or err.context}{tab}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path}: not valid YAML ({err})") from None
    if config is None:
        raise ConfigError(f"config file {path}: empty (a study config is a mapping: datasets, distillation, ...)")
    if not isinstance(config, dict):
        raise ConfigError(f"config file {path}: holds a {type(config).__name__}, not a mapping of config keys")
    return config


def check_files(paths) -> None:
    for path in paths:
        read_config(path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        check_files(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

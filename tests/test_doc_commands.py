"""Every ``snakemake`` command the documentation and the configs show must mean what it says.

``--configfile`` takes several files, so a target written after it (``--configfile c.yaml
study_ablation``) is read as a second config file and the run fails. Each command shown in a code
span or block of the Markdown files, or in a config's header comment, is parsed with Snakemake's own
argument parser: its config files must be YAML files of the repository and its targets must not
look like config files.
"""

import re
import shlex

import pytest
from conftest import REPO
from snakemake.cli import get_argument_parser

SOURCES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "config").glob("*.md"),
                  *(REPO / "config").glob("*.yaml")])
# a command: `snakemake ...` in a code span, or a line of a code block / comment that starts with it
SPAN = re.compile(r"`(?:\.venv/bin/)?snakemake ([^`]*)`")
LINE = re.compile(r"^\s*(?:#\s*)?(?:\$ )?(?:\.venv/bin/)?snakemake ((?:[^`#]|\\\n)*)")


def _commands():
    for path in SOURCES:
        lines = path.read_text().splitlines()
        number = 0
        while number < len(lines):
            first, line = number, lines[number]
            found = [match.group(1) for match in SPAN.finditer(line)]
            if not found and (match := LINE.match(line)):
                text = match.group(1)
                while text.rstrip().endswith("\\") and number + 1 < len(lines):  # continued lines
                    number += 1
                    text = text.rstrip()[:-1] + " " + lines[number].strip().lstrip("#").strip()
                found = [text]
            for text in found:
                yield f"{path.relative_to(REPO)}:{first + 1}", text
            number += 1


def _words(text: str) -> list[str]:
    """The command's arguments without placeholders (``<targets>``, ``[--use-conda]``, ``...``)."""
    text = re.sub(r"\[[^\]]*\]|<[^>]*>|\(\*\)", " ", text.split(" # ")[0]).replace("...", "placeholder")
    words = shlex.split(text.replace("{", "").replace("}", ""))
    return [word for word in words if word not in ("|", "&&")]


COMMANDS = list(_commands())


def test_the_documentation_shows_snakemake_commands():
    assert len(COMMANDS) >= 10, COMMANDS


@pytest.mark.parametrize("where, text", COMMANDS, ids=[where for where, _ in COMMANDS])
def test_shown_snakemake_command_parses_as_meant(where, text):
    args = get_argument_parser().parse_args(_words(text))
    for path in args.configfile or []:
        assert path.suffix in (".yaml", ".yml"), f"{where}: {path} read as a config file (a target after --configfile?)"
        if str(path).startswith("config/"):
            assert (REPO / path).is_file(), f"{where}: no config file {path}"
    for target in args.targets or []:
        assert not target.endswith((".yaml", ".yml")), f"{where}: config file {target} given as a target"

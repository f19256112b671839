"""One JSON block of settings per pipeline stage: which keys each stage takes, their defaults, and
the blocks the workflow rules pass (``--settings``), built from the config.

Torch-free, and independent of the config resolvers (editing those reruns no job): the rules
build their blocks with ``config.*_settings`` while the Snakefile parses, and the CLI parses them
with these definitions. Keys that mirror a config block take their names, required keys and
defaults from the schema (``elf_pipeline.config.schema``), the one place those defaults are written; a
block with a key its stage does not take fails with one line naming the key and the stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from elf_pipeline.config.schema import defaults, subschema
from elf_pipeline.infra.errors import InputError

REQUIRED = object()  # marks a key without a default


@dataclass(frozen=True)
class StageSettings:
    """The settings of one stage: those of a schema block (``schema``, minus ``exclude``) and ``own`` keys."""

    schema: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    own: dict[str, Any] = field(default_factory=dict)

    def keys(self) -> dict[str, Any]:
        """Every key the stage takes -> its default (``REQUIRED`` for none)."""
        keys: dict[str, Any] = {}
        if self.schema:
            node = subschema(*self.schema)
            block_defaults = defaults(*self.schema)
            keys = {name: block_defaults.get(name, REQUIRED if name in node.get("required", ()) else None)
                    for name in node.get("properties", {}) if name not in self.exclude}
        return {**keys, **self.own}

    def parse(self, stage: str, block: dict) -> dict[str, Any]:
        """``block`` with the defaults filled in; an unknown or missing key fails naming it and the stage."""
        keys = self.keys()
        for key in block:
            if key not in keys:
                raise InputError(f"{stage} --settings: unknown key {key!r} (allowed: {', '.join(sorted(keys))})")
        missing = [key for key, value in keys.items() if value is REQUIRED and key not in block]
        if missing:
            raise InputError(f"{stage} --settings: missing key {missing[0]!r}")
        return {**{key: value for key, value in keys.items() if value is not REQUIRED}, **block}


STAGES: dict[str, StageSettings] = {
    "data": StageSettings(("datasets", "*"), exclude=("distillation",), own={"seed": 0}),
    "distill": StageSettings(own={"method": REQUIRED, "ipc": REQUIRED, "seed": 0, "hyperparameters": {}}),
    "experts": StageSettings(("experts",), exclude=("num_experts",), own={"index": REQUIRED}),
    "teachers": StageSettings(("teachers", "*")),
    "features": StageSettings(own={"batch_size": 256}),
    "students": StageSettings(own={"arch": REQUIRED, "evaluation": REQUIRED, "train": REQUIRED, "seeds": REQUIRED,
                                        "identity": {}, "select_keys": []}),
    "select": StageSettings(own={"candidates": REQUIRED, "seeds": REQUIRED, "evaluation": REQUIRED,
                                         "identity": {}}),
    "reference": StageSettings(own={"arch": REQUIRED, "train": REQUIRED, "seeds": REQUIRED, "train_limit": None,
                                     "subset_seed": 0, "identity": {}}),
    "expert-teacher": StageSettings(own={"epoch": None}),
}


def parse_stage_settings(stage: str, block: dict) -> dict[str, Any]:
    return STAGES[stage].parse(stage, block)

"""The names the config, the schema and the stages share: one definition each.

Torch-free: the Snakefile reads them while parsing; the stage modules import them; a test asserts
that the schema's enums are these names.
"""

from __future__ import annotations

from elf_pipeline.config.methods import METHODS as _REGISTRY
from elf_pipeline.config.schema import subschema

# distillation methods: the registry in config/methods.py (each entry names the module implementing it)
METHODS = tuple(_REGISTRY)
EXPERT_METHODS = tuple(name for name, method in _REGISTRY.items() if method.experts)  # trained by the experts stage

# loss mode -> which of the (front, rear, task) terms are on
LOSS_MODES: dict[str, tuple[bool, bool, bool]] = {
    "front_rear_task": (True, True, True),
    "front_task": (True, False, True),
    "rear_task": (False, True, True),
    "front_rear": (True, True, False),
    "task": (False, False, True),
}
# feature losses: the schema's enum (evaluations.*.feature_loss), which engine/losses.py implements one
# function each (a test keeps the two in sync): adding one is its function there and its name in the enum.
FEATURE_LOSSES = tuple(subschema("evaluations", "*", "feature_loss")["enum"])
TEACHER_TARGETS = ("cached", "online")
ADAPTER_FORMS = ("pair", "coupled")
IMPORT_NORMALIZATIONS = ("dataset", "published", "unit", "uint8")  # pixel spaces of an imported set

"""The hyperparameters of each distillation method: one dataclass per method, the one definition
of the keys its config block may set and of their defaults.

Torch-free: the Snakefile checks config blocks with these while parsing; ``run_distill`` parses the
block it is given into the same dataclass, so a key the method does not use fails in both places
with one line naming the key and the method.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from elf_pipeline.infra.errors import InputError

DSA = bool | dict | None  # the config's dsa value: true (published parameters), false/None (off), or overrides


@dataclass(frozen=True)
class RandomSettings:
    """Random real images per class: no hyperparameters."""


@dataclass(frozen=True)
class DMSettings:
    iterations: int = 20000
    lr_img: float = 1.0
    momentum: float = 0.5
    batch_real: int = 256
    init: str = "real"
    model: str = "convnet"
    dsa: DSA = None
    log_every: int = 100


@dataclass(frozen=True)
class DCSettings:
    """DC (gradient matching); ``outer_loop``/``inner_loop`` default to the published values for the IPC."""

    iterations: int = 1000
    lr_img: float = 0.1
    momentum: float = 0.5
    lr_net: float = 0.01
    batch_real: int = 256
    batch_train: int = 256
    outer_loop: int | None = None
    inner_loop: int | None = None
    distance: str = "layerwise"
    init: str = "real"
    model: str = "convnet"
    dsa: DSA = None
    log_every: int = 100


@dataclass(frozen=True)
class DSASettings(DCSettings):
    """DSA = DC with siamese augmentation (the published DSA parameters unless ``dsa`` overrides them)."""


@dataclass(frozen=True)
class MTTSettings:
    """MTT (trajectory matching); ``model`` defaults to the experts' architecture."""

    iterations: int = 5000
    syn_steps: int = 20
    expert_epochs: int = 2
    max_start_epoch: int = 20
    lr_img: float = 1000.0
    lr_lr: float = 1e-5
    lr_teacher: float = 0.01
    momentum: float = 0.5
    batch_syn: int | None = None
    init: str = "real"
    model: str | None = None
    dsa: DSA = None
    log_every: int = 100


@dataclass(frozen=True)
class ImportSettings:
    """A synthetic set distilled elsewhere: its file(s), the pixel space they are stored in, a learned
    student lr and, for sets released in ZCA space, the whitening's eps; ``space_check`` (error, warn,
    off): what a declared pixel space that the images' statistics rule out does; ``expected``: the
    accuracy per architecture the release's authors report, its source and a tolerance;
    ``label_check`` (error, warn, off) and ``label_map``: the teacher's check of the label order."""

    path: str | None = None
    labels_path: str | None = None
    normalization: str | None = None
    lr_path: str | None = None
    zca: dict | None = None
    space_check: str = "error"
    expected: dict | None = None
    label_check: str = "error"
    label_map: list | None = None


@dataclass(frozen=True)
class Method:
    """One distillation method's registration: its settings, and the function that implements it
    (``function`` in ``stages/distill/<module>.py``, imported only by the jobs that run it)."""

    settings: type
    module: str
    function: str
    experts: bool = False  # matches expert trajectories (the experts stage trains them)
    signature_of: str | None = None  # the function whose parameters it takes, where it only wraps one


# The registry: adding a method is its module in stages/distill/ and one entry here (plus docs and a
# test). The vocabulary (config.vocab.METHODS), the config checks, the distill stage and the
# workflow's per-method code inputs all read it.
METHODS: dict[str, Method] = {
    "random": Method(RandomSettings, "random_subset", "distill_random"),
    "dm": Method(DMSettings, "dm", "distill_dm"),
    "dc": Method(DCSettings, "dc", "distill_dc"),
    "dsa": Method(DSASettings, "dc", "distill_dsa", signature_of="distill_dc"),  # DC with siamese augmentation
    "mtt": Method(MTTSettings, "mtt", "distill_mtt", experts=True),
    "import": Method(ImportSettings, "imported", "import_synset"),
}
SETTINGS: dict[str, type] = {name: method.settings for name, method in METHODS.items()}
DISTILL_PACKAGE = "elf_pipeline.stages.distill"


def module_of(method: str) -> str:
    """The dotted name of the module implementing ``method``."""
    return f"{DISTILL_PACKAGE}.{METHODS[method].module}"


def other_method_modules(method: str) -> list[str]:
    """The modules of every other method (not ``method``'s own): code a distill job of ``method`` never runs."""
    own = METHODS[method].module if method in METHODS else None
    return sorted({module_of(name) for name, spec in METHODS.items() if spec.module != own})


def method_keys(method: str) -> set[str]:
    """The keys a method's config block may set."""
    return {field.name for field in dataclasses.fields(SETTINGS[method])}


def unknown_key(method: str, block: dict | None) -> str | None:
    """The first key (sorted) of ``block`` that ``method`` does not use; None when all are known."""
    unknown = sorted(set(block or {}) - method_keys(method))
    return unknown[0] if unknown else None


def parse_settings(method: str, block: dict | None) -> Any:
    """``block`` as the method's settings dataclass; a key it does not use fails naming key and method."""
    if method not in SETTINGS:
        raise InputError(f"unknown distillation method {method!r} (allowed: {', '.join(SETTINGS)})")
    key = unknown_key(method, block)
    if key is not None:
        allowed = ", ".join(sorted(method_keys(method))) or "none"
        raise InputError(f"method {method} takes no {key!r} (its hyperparameters: {allowed})")
    return SETTINGS[method](**(block or {}))

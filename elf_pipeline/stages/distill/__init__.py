"""The distill stage: ``run_distill`` runs one registered method (``config/methods.py``: its settings
and the function in this package implementing it, imported only when a job runs it) and writes the
synthetic set."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import logging
import os
from collections.abc import Callable

from elf_pipeline.artifacts.data_file import load_split
from elf_pipeline.artifacts.synset import SyntheticSet, write_synset
from elf_pipeline.config.methods import METHODS as REGISTRY
from elf_pipeline.config.methods import module_of, parse_settings
from elf_pipeline.engine.augment import dsa_config
from elf_pipeline.engine.precision import Numerics
from elf_pipeline.engine.training import resolve_device
from elf_pipeline.infra.errors import InputError
from elf_pipeline.infra.io import config_hash, sha256_file
from elf_pipeline.infra.resume import ResumeFile, resume_path

log = logging.getLogger(__name__)

CONTEXT = ("resume", "experts", "precision")  # what the stage hands a method besides its settings


def method_function(method: str, name: str | None = None) -> Callable[..., SyntheticSet]:
    """The function implementing ``method`` (or ``name`` of its module), imported on first use."""
    if method not in REGISTRY:
        raise InputError(f"unknown distillation method {method!r} (allowed: {', '.join(REGISTRY)})")
    return getattr(importlib.import_module(module_of(method)), name or REGISTRY[method].function)


@functools.cache
def context_keys(method: str) -> frozenset[str]:
    """The context arguments ``method``'s function takes (those of the function it wraps, if any)."""
    parameters = inspect.signature(method_function(method, REGISTRY[method].signature_of)).parameters
    return frozenset(set(parameters) & set(CONTEXT))


def run_distill(data: str | os.PathLike, out: str | os.PathLike, method: str, ipc: int, config: dict,
                seed: int = 0, device: str = "auto", resume_every: float = 60.0,
                experts: list[str | os.PathLike] | None = None, precision: str = "fp32") -> SyntheticSet:
    """Distil ``ipc`` images per class from ``data.h5`` with ``method`` and write ``synset.h5``.

    ``experts``: the expert trajectory files MTT matches (ignored by the other methods).
    ``precision``: the networks' precision (``elf_pipeline.engine.precision``); the images stay float32.
    """
    settings = dataclasses.asdict(parse_settings(method, config))  # refuses keys the method does not use
    if ipc < 1:
        raise InputError(f"ipc must be >= 1, got {ipc}")
    if method == "import":  # a set distilled elsewhere: no training images, no network
        synset = method_function(method)(data, ipc, **settings)
        write_synset(out, synset, method, ipc, {"seed": seed, **config}, str(data))
        log.info("wrote %s (%d imported images)", out, len(synset.labels))
        return synset
    torch_device = resolve_device(device)
    numerics = Numerics.resolve(precision, False, torch_device)
    images, labels, info = load_split(data, "train")  # stays on the host; batches move to the device
    options = {**settings, **({"dsa": dsa_config(settings["dsa"])} if "dsa" in settings else {})}
    expert_paths = [str(path) for path in experts or ()]
    fingerprint = config_hash({"method": method, "ipc": ipc, "seed": seed, "config": config, "data": sha256_file(data),
                               "experts": [sha256_file(path) for path in expert_paths], "precision": numerics.precision})
    resume = ResumeFile(resume_path(out), resume_every, fingerprint)
    context = {key: value for key, value in (("resume", resume), ("experts", expert_paths),
                                             ("precision", numerics.precision)) if key in context_keys(method)}
    synset = method_function(method)(images, labels, info.num_classes, ipc, seed=seed, device=torch_device, **context, **options)
    provenance = {"seed": seed, **config, **({"experts": expert_paths} if expert_paths else {}),
                  **({"precision": numerics.precision} if "precision" in context_keys(method) else {})}
    write_synset(out, synset, method, ipc, provenance, str(data))
    resume.clear()
    log.info("wrote %s (%d images)", out, len(synset.labels))
    return synset

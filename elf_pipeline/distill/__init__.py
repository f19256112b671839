"""Distillation methods: name -> function returning a SyntheticSet, and the stage entry point."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os

from elf_pipeline.artifacts.data import load_split
from elf_pipeline.artifacts.synset import SyntheticSet, write_synset
from elf_pipeline.augment import dsa_config
from elf_pipeline.distill.dc import distill_dc, distill_dsa
from elf_pipeline.distill.dm import distill_dm
from elf_pipeline.distill.imported import import_synset
from elf_pipeline.distill.mtt import distill_mtt
from elf_pipeline.distill.random_subset import distill_random
from elf_pipeline.distill_settings import parse_settings
from elf_pipeline.errors import InputError
from elf_pipeline.io import config_hash, sha256_file
from elf_pipeline.precision import Numerics
from elf_pipeline.resume import ResumeFile, resume_path
from elf_pipeline.training import resolve_device

log = logging.getLogger(__name__)

METHODS = {"random": distill_random, "dm": distill_dm, "dc": distill_dc, "dsa": distill_dsa, "mtt": distill_mtt}
# "import" reads a set distilled elsewhere: import_synset(data, ipc, **config), no training images needed.
METHODS["import"] = import_synset


def _signature(method: str) -> inspect.Signature:
    return inspect.signature(distill_dc if method == "dsa" else METHODS[method])  # DSA is DC with augmentation


# What the stage hands each method besides its settings.
CONTEXT_KEYS = {method: set(_signature(method).parameters) & {"resume", "experts", "precision"} for method in METHODS}


def run_distill(data: str | os.PathLike, out: str | os.PathLike, method: str, ipc: int, config: dict,
                seed: int = 0, device: str = "auto", resume_every: float = 60.0,
                experts: list[str | os.PathLike] | None = None, precision: str = "fp32") -> SyntheticSet:
    """Distil ``ipc`` images per class from ``data.h5`` with ``method`` and write ``synset.h5``.

    ``experts``: the expert trajectory files MTT matches (ignored by the other methods).
    ``precision``: the networks' precision (``elf_pipeline.precision``); the images stay float32.
    """
    settings = dataclasses.asdict(parse_settings(method, config))  # refuses keys the method does not use
    if ipc < 1:
        raise InputError(f"ipc must be >= 1, got {ipc}")
    if method == "import":
        synset = import_synset(data, ipc, **settings)
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
                                             ("precision", numerics.precision)) if key in CONTEXT_KEYS[method]}
    synset = METHODS[method](images, labels, info.num_classes, ipc, seed=seed, device=torch_device, **context, **options)
    provenance = {"seed": seed, **config, **({"experts": expert_paths} if expert_paths else {}),
                  **({"precision": numerics.precision} if "precision" in CONTEXT_KEYS[method] else {})}
    write_synset(out, synset, method, ipc, provenance, str(data))
    resume.clear()
    log.info("wrote %s (%d images)", out, len(synset.labels))
    return synset

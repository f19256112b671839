"""Distillation methods: name -> function returning a SyntheticSet, and the stage entry point."""

from __future__ import annotations

import logging
import os

from elf_pipeline.augment import dsa_config
from elf_pipeline.data import load_split
from elf_pipeline.distill.common import SyntheticSet, write_synset
from elf_pipeline.distill.dm import distill_dm
from elf_pipeline.distill.random_subset import distill_random
from elf_pipeline.io import config_hash, sha256_file
from elf_pipeline.resume import ResumeFile, resume_path
from elf_pipeline.training import resolve_device

log = logging.getLogger(__name__)

METHODS = {"random": distill_random, "dm": distill_dm}


def run_distill(data: str | os.PathLike, out: str | os.PathLike, method: str, ipc: int, config: dict,
                seed: int = 0, device: str = "auto", resume_every: float = 60.0) -> SyntheticSet:
    """Distil ``ipc`` images per class from ``data.h5`` with ``method`` and write ``synset.h5``."""
    if method not in METHODS:
        raise ValueError(f"unknown distillation method {method!r} (allowed: {', '.join(METHODS)})")
    if ipc < 1:
        raise ValueError(f"ipc must be >= 1, got {ipc}")
    torch_device = resolve_device(device)
    images, labels, info = load_split(data, "train")  # stays on the host; batches move to the device
    options = dict(config)
    options["dsa"] = dsa_config(options.get("dsa"))
    fingerprint = config_hash({"method": method, "ipc": ipc, "seed": seed, "config": config, "data": sha256_file(data)})
    resume = ResumeFile(resume_path(out), resume_every, fingerprint)
    synset = METHODS[method](images, labels, info.num_classes, ipc, seed=seed, device=torch_device, resume=resume, **options)
    write_synset(out, synset, method, ipc, {"seed": seed, **config}, str(data))
    resume.clear()
    log.info("wrote %s (%d images)", out, len(synset.labels))
    return synset

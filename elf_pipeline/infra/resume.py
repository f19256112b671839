"""Resumable training state for long stages (distillation, experts, teacher).

The state lives beside the stage's output (``<output>.resume``), is written atomically every
``every_seconds`` and removed when the stage finishes.  A job killed at any point restarts from its
last saved state; because the state includes the random generator, the resumed run produces
exactly the numbers of an uninterrupted one.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch

from elf_pipeline.infra.io import atomic_path

log = logging.getLogger(__name__)


class ResumeFile:
    def __init__(self, path: str | os.PathLike | None, every_seconds: float = 60.0, fingerprint: str = ""):
        """``fingerprint`` identifies the job (config and input hashes): a state saved by a job with
        another fingerprint (the config changed since) is discarded instead of resumed."""
        self.path = Path(path) if path else None
        self.every_seconds = every_seconds
        self.fingerprint = fingerprint
        self._last = time.monotonic()

    def load(self) -> dict | None:
        """The saved state, or None; an unreadable state file is discarded with a warning."""
        if self.path is None or not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # a torn or foreign file: start over rather than fail
            log.warning("ignoring unreadable resume state %s (%s)", self.path, type(err).__name__)
            return None
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            log.warning("discarding resume state %s: it belongs to another configuration", self.path)
            return None
        log.info("resuming from %s", self.path)
        return state

    def due(self) -> bool:
        return self.path is not None and time.monotonic() - self._last >= self.every_seconds

    def save(self, state: dict) -> None:
        if self.path is None:
            return
        with atomic_path(self.path) as tmp:
            torch.save({**state, "fingerprint": self.fingerprint}, tmp)
        self._last = time.monotonic()

    def clear(self) -> None:
        if self.path is not None and self.path.exists():
            self.path.unlink()


def resume_path(output: str | os.PathLike) -> Path:
    return Path(f"{output}.resume")

"""Pin a local GPU job to a device no other job of this user holds.

Snakemake's local executor bounds how many ``gpu=1`` jobs run at once (``--resources gpu=N``) but
tells no job which device to take, so without help every job would pick ``cuda:0``. Before torch
initialises CUDA, :func:`pin_free_device` takes an exclusive lock on one file per device
(``<lock_dir>/gpu-<id>.lock``, ``fcntl.flock``) and sets ``CUDA_VISIBLE_DEVICES`` to that device;
the process then sees it as ``cuda:0``. The lock belongs to the open file, so it is released when
the job ends, however it ends (crash and ``kill -9`` included).

Nothing happens when fewer than two devices are visible, which includes a job that SLURM (or the
user) already gave one device through ``CUDA_VISIBLE_DEVICES``. This module imports no torch: it
must run before anything asks CUDA for the device count.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from elf_pipeline.infra.errors import InputError

LOCK_DIR_ENV = "ELF_GPU_LOCK_DIR"
log = logging.getLogger(__name__)


def default_lock_dir() -> Path:
    """``$ELF_GPU_LOCK_DIR``, else a per-user folder in the system temp dir (locks are per machine)."""
    configured = os.environ.get(LOCK_DIR_ENV)
    return Path(configured) if configured else Path(tempfile.gettempdir()) / f"elf-pipeline-gpu-locks-{os.getuid()}"


def visible_devices(environ: dict[str, str] | None = None) -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries (indices or UUIDs).

    ``CUDA_VISIBLE_DEVICES`` wins when set (an empty value means none); otherwise the devices
    ``nvidia-smi -L`` lists. Never initialises CUDA.
    """
    environ = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in environ:
        return [entry.strip() for entry in environ["CUDA_VISIBLE_DEVICES"].split(",") if entry.strip()]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [match.group(1) for match in re.finditer(r"^GPU (\d+):", listing, flags=re.M)]


@dataclass
class DeviceLock:
    """An exclusive claim on one device; held until :meth:`release` or the end of the process."""

    device: str
    path: Path
    _fd: int | None = field(default=None, repr=False)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops the flock
            self._fd = None

    def __enter__(self) -> DeviceLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _lock_name(device: str) -> str:
    return "gpu-" + re.sub(r"[^A-Za-z0-9_.-]", "_", device) + ".lock"


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())  # for people looking at the lock dir; the flock is what counts
    return fd


def acquire_device(devices: Sequence[str] | int, lock_dir: str | os.PathLike | None = None, *,
                   poll_seconds: float = 0.5, timeout: float | None = None) -> DeviceLock:
    """Lock the first free device of ``devices`` (ids, or a count meaning ``0..n-1``), waiting for
    one to become free. Raises TimeoutError after ``timeout`` seconds (None: wait for ever)."""
    names = [str(index) for index in range(devices)] if isinstance(devices, int) else [str(d) for d in devices]
    if not names:
        raise InputError("acquire_device: no devices to choose from")
    folder = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"GPU lock dir {folder} ({LOCK_DIR_ENV}): cannot create it: {err.strerror}") from None
    start = time.monotonic()
    waiting_logged = False
    while True:
        for name in names:
            path = folder / _lock_name(name)
            fd = _try_lock(path)
            if fd is not None:
                return DeviceLock(name, path, fd)
        if timeout is not None and time.monotonic() - start >= timeout:
            raise TimeoutError(f"no free GPU among {','.join(names)} after {timeout:g} s (locks in {folder})")
        if not waiting_logged:
            log.info("all %d GPUs are taken by other jobs; waiting for one (locks in %s)", len(names), folder)
            waiting_logged = True
        time.sleep(poll_seconds)


def pin_free_device(requested: str, lock_dir: str | os.PathLike | None = None) -> DeviceLock | None:
    """For a job asking for ``auto`` or ``cuda`` while several GPUs are visible: lock a free one
    and make it the only visible device. Returns the lock (None when there was nothing to choose)."""
    if requested not in ("auto", "cuda"):
        return None
    devices = visible_devices()
    if len(devices) < 2:
        return None
    if "CUDA_VISIBLE_DEVICES" not in os.environ:
        os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # CUDA's indices = nvidia-smi's
    claim = acquire_device(devices, lock_dir)
    os.environ["CUDA_VISIBLE_DEVICES"] = claim.device
    log.info("pinned to GPU %s (lock %s)", claim.device, claim.path)
    return claim

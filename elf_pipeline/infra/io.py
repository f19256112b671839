"""Atomic file output, hashing and HDF5 provenance shared by every stage."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from elf_pipeline import __version__
from elf_pipeline.infra.errors import ArtifactError

_UMASK = os.umask(0)
os.umask(_UMASK)




@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    A crash or exception leaves ``path`` untouched (old content or absent) and removes
    the partial temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the final file normal permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | os.PathLike, payload: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def canonical_json(payload: Any) -> str:
    """One deterministic JSON spelling of a config block (used for hashes and attrs)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=_json_default)


def config_hash(payload: Any) -> str:
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_provenance(h5: h5py.File | h5py.Group, stage: str, config: dict, inputs: dict[str, str]) -> None:
    """Record what produced an HDF5 file: stage, config block, package version, input hashes."""
    h5.attrs["stage"] = stage
    h5.attrs["config"] = canonical_json(config)
    h5.attrs["package_version"] = __version__
    h5.attrs["inputs"] = canonical_json(inputs)


def read_provenance(h5: h5py.File | h5py.Group) -> dict:
    try:
        return {
            "stage": str(h5.attrs["stage"]),
            "config": json.loads(h5.attrs["config"]),
            "package_version": str(h5.attrs["package_version"]),
            "inputs": json.loads(h5.attrs["inputs"]),
        }
    except KeyError as err:
        raise ArtifactError(f"{h5.file.filename}: missing provenance attribute {err}") from None


# What a file's first bytes say it is, for a file that is no torch file (a zip archive or a pickle).
_SIGNATURES = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"\x89HDF", "an HDF5 file"),
               (b"\x93NUMPY", "a NumPy .npy array"), (b"\x1f\x8b", "a gzip archive"), (b"PAR1", "a Parquet table"))


def not_torch_file(path: str | os.PathLike) -> str | None:
    """What ``path`` holds instead of a torch file, by its first bytes (None where it may be one:
    ``torch.save`` writes a zip archive, older torch a pickle)."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return None
    for magic, kind in _SIGNATURES:
        if head.startswith(magic):
            return kind
    if not head:
        return "nothing (the file is empty)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "unknown binary data"
    if any(ord(char) < 32 and char not in "\t\n\r" for char in text):
        return "unknown binary data"
    return "JSON text" if text.lstrip()[:1] in ("{", "[") else "text"


def open_h5(path: str | os.PathLike) -> h5py.File:
    """Open an HDF5 file read-only, turning a missing or corrupt file into one clear error."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise ArtifactError(f"{path}: not a readable HDF5 file ({err.__class__.__name__}: {err})") from None


def read_arrays(path: str | os.PathLike, *names: str) -> list[np.ndarray]:
    """Read whole datasets; a missing dataset or unreadable (truncated, corrupt) data becomes one
    ArtifactError naming the file and the dataset."""
    with open_h5(path) as h5:
        arrays = []
        for name in names:
            if name not in h5:
                raise ArtifactError(f"{path}: dataset {name!r} missing")
            try:
                arrays.append(h5[name][()])
            except (OSError, RuntimeError) as err:
                raise ArtifactError(f"{path}: dataset {name!r} unreadable, file corrupt or truncated ({err})") from None
        return arrays


def require_finite(array: np.ndarray, what: str) -> None:
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ArtifactError(f"{what}: {bad} non-finite values (NaN/Inf)")

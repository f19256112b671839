"""Keep a study's finished outputs through a failed Snakemake run.

Every stage writes its outputs atomically, so a failing stage leaves the old files alone; Snakemake
does not: it deletes a job's existing outputs before it runs the job, deletes them again after the
job fails, and records the failed job's parameters as their metadata. ``put_aside`` runs before
any job starts (the workflow's ``onstart`` hook): it hard-links every existing output of the planned
jobs into a folder beside the results (no copy: the stages replace files by renaming, so a link
keeps the old content) and writes their metadata records to a manifest. After a failed run
(``onerror``), ``restore`` links back every output that is missing now, with its old metadata
record and no incomplete marker: the study is as it was before the failed jobs (same files, same
modification times, same recorded parameters). Rerunning the failing config therefore sees changed
parameters and runs the job again; reverting the config finds the old results done. Outputs that
jobs of the run rewrote successfully are left as they are. ``discard`` drops the links after a
successful run.

Kept torch- and Snakemake-free: the workflow passes in how to read and write a metadata record.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

MANIFEST = "manifest.json"

ReadRecord = Callable[[str], "dict | None"]
WriteRecord = Callable[[str, "dict | None"], None]


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not supported: a copy keeping the times
        shutil.copy2(source, target)


def put_aside(paths: Iterable[str], keep_dir: str | os.PathLike, read_record: ReadRecord,
              write_record: WriteRecord) -> list[dict]:
    """Link every existing file of ``paths`` into ``keep_dir`` and list it, with its metadata record,
    in ``keep_dir``/manifest.json. Entries left by an earlier run that was killed before it could
    restore them are restored first (when their file is still missing), then replaced."""
    keep_dir = Path(keep_dir)
    if (keep_dir / MANIFEST).is_file():
        restore(keep_dir, write_record)
    shutil.rmtree(keep_dir, ignore_errors=True)
    entries = []
    for path in dict.fromkeys(str(p) for p in paths):
        source = Path(path)
        if not source.is_file():
            continue
        kept = keep_dir / "files" / str(len(entries))
        _link(source, kept)
        stat = source.stat()
        entries.append({"path": path, "kept": str(kept), "inode": stat.st_ino, "mtime_ns": stat.st_mtime_ns,
                        "record": read_record(path)})
    if entries:
        keep_dir.mkdir(parents=True, exist_ok=True)
        (keep_dir / MANIFEST).write_text(json.dumps(entries, default=str))
    return entries


def restore(keep_dir: str | os.PathLike, write_record: WriteRecord) -> list[str]:
    """Link back every listed file that is missing now, with its old metadata record
    (``write_record(path, record)``; None: the file had none); drop the folder. Returns the paths restored."""
    keep_dir = Path(keep_dir)
    manifest = keep_dir / MANIFEST
    if not manifest.is_file():
        shutil.rmtree(keep_dir, ignore_errors=True)
        return []
    restored = []
    for entry in json.loads(manifest.read_text()):
        path, kept = Path(entry["path"]), Path(entry["kept"])
        if path.exists() or not kept.is_file():
            continue  # rewritten by a job that succeeded, or never touched
        _link(kept, path)
        os.utime(path, ns=(entry["mtime_ns"], entry["mtime_ns"]))
        write_record(entry["path"], entry["record"])
        restored.append(entry["path"])
    shutil.rmtree(keep_dir, ignore_errors=True)
    return restored


def discard(keep_dir: str | os.PathLike) -> None:
    shutil.rmtree(keep_dir, ignore_errors=True)


def unreadable(path: Path) -> str | None:
    """Why an artifact cannot be read, by a cheap look (None where it can): an HDF5 file that does not
    open (h5py checks the size its superblock records), a Parquet file without its closing magic."""
    if path.suffix == ".parquet":
        with open(path, "rb") as handle:
            handle.seek(max(path.stat().st_size - 4, 0))
            return None if handle.read(4) == b"PAR1" else "not a readable Parquet file (truncated?)"
    import h5py

    try:
        h5py.File(path, "r").close()
    except OSError as error:
        return f"not a readable HDF5 file ({str(error)[:120]})"
    return None


def unreadable_outputs(results: str | os.PathLike, keep_dir: str | os.PathLike,
                       is_output: Callable[[str], bool]) -> dict[str, str]:
    """path -> why, for every HDF5 and Parquet file under ``results`` (``keep_dir`` aside) that a rule
    writes (``is_output``) and that cannot be read."""
    results = Path(results)
    if not results.is_dir():
        return {}
    found = {}
    for path in sorted(p for pattern in ("*.h5", "*.parquet") for p in results.rglob(pattern)):
        if path.is_relative_to(keep_dir) or not is_output(str(path)):
            continue
        if reason := unreadable(path):
            found[str(path)] = reason
    return found

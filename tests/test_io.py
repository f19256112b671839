import hashlib
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

import elf_pipeline
from elf_pipeline.infra.io import (
    ArtifactError,
    atomic_path,
    canonical_json,
    config_hash,
    open_h5,
    read_provenance,
    require_finite,
    sha256_file,
    write_json,
    write_provenance,
)


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_path_replaces_on_success_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp != target and tmp.parent == target.parent
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing visible until the body finishes
    assert target.read_text() == "new"
    assert _entries(tmp_path) == ["out.txt"]


def test_atomic_path_keeps_old_file_when_body_raises(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old content")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half written")
        raise RuntimeError("boom")
    assert target.read_text() == "old content"
    assert _entries(tmp_path) == ["out.txt"]


def test_atomic_path_leaves_target_absent_when_body_raises(tmp_path):
    target = tmp_path / "sub" / "new.h5"
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5["x"] = np.arange(3)
        raise ValueError("fail after writing")
    assert not target.exists()
    assert _entries(target.parent) == []


def test_atomic_path_gives_normal_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    target = tmp_path / "perm.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("x")
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_hdf5_provenance_round_trip(tmp_path):
    path = tmp_path / "p.h5"
    config = {"b": [1, 2, 3], "a": {"nested": 0.5, "flag": True}, "none": None}
    inputs = {"data": "ab" * 32, "teacher": "cd" * 32}
    with h5py.File(path, "w") as h5:
        write_provenance(h5, "some_stage", config, inputs)
    with open_h5(path) as h5:
        prov = read_provenance(h5)
    assert prov == {"stage": "some_stage", "config": config, "package_version": elf_pipeline.__version__, "inputs": inputs}


def test_read_provenance_without_attrs_names_file(tmp_path):
    path = tmp_path / "bare.h5"
    with h5py.File(path, "w") as h5:
        h5["x"] = np.zeros(2)
    with open_h5(path) as h5, pytest.raises(ArtifactError, match="bare.h5.*provenance"):
        read_provenance(h5)


def test_open_h5_truncated_file_raises_artifact_error_naming_path(tmp_path):
    path = tmp_path / "truncated.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("x", data=np.arange(10000, dtype=np.float64))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ArtifactError) as info:
        with open_h5(path) as h5:
            h5["x"][:]
    assert str(path) in str(info.value)


def test_open_h5_garbage_and_missing(tmp_path):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"this is not an HDF5 file at all" * 10)
    with pytest.raises(ArtifactError, match="not a readable HDF5 file") as info:
        open_h5(garbage)
    assert str(garbage) in str(info.value)
    missing = tmp_path / "missing.h5"
    with pytest.raises(ArtifactError, match="not found") as info:
        open_h5(missing)
    assert str(missing) in str(info.value)


def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "blob.bin"
    payload = np.random.default_rng(0).bytes(5000)
    path.write_bytes(payload)
    assert sha256_file(path, chunk=1000) == hashlib.sha256(payload).hexdigest()


def test_canonical_json_and_config_hash_ignore_key_order():
    a = {"x": 1, "y": {"b": 2, "a": [1, 2]}}
    b = {"y": {"a": [1, 2], "b": 2}, "x": 1}
    assert canonical_json(a) == canonical_json(b)
    assert json.loads(canonical_json(a)) == a
    assert config_hash(a) == config_hash(b)
    assert len(config_hash(a)) == 16
    assert config_hash(a) != config_hash({**a, "x": 2})


def test_write_json_handles_numpy_and_paths(tmp_path):
    out = tmp_path / "o.json"
    write_json(out, {"i": np.int64(3), "f": np.float32(0.5), "a": np.arange(3), "p": Path("/x/y")})
    assert json.loads(out.read_text()) == {"i": 3, "f": 0.5, "a": [0, 1, 2], "p": "/x/y"}
    with pytest.raises(TypeError, match="not JSON serialisable"):
        write_json(tmp_path / "bad.json", {"s": {1, 2}})
    assert not (tmp_path / "bad.json").exists()
    assert _entries(tmp_path) == ["o.json"]


def test_require_finite_counts_bad_values():
    require_finite(np.zeros(4), "ok")
    with pytest.raises(ArtifactError, match="what: 2 non-finite"):
        require_finite(np.array([0.0, np.nan, np.inf, 1.0]), "what")

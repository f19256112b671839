"""Device pinning for local multi-GPU runs, tested without a GPU: the device count is a parameter
and the processes competing for devices are real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from elf_pipeline.infra.gpu import acquire_device, pin_free_device, visible_devices

REPO = Path(__file__).resolve().parents[1]

# Claims one of n devices, prints its id, holds the lock until stdin closes, then exits.
CLAIMANT = """
import sys
from elf_pipeline.infra.gpu import acquire_device
lock = acquire_device(int(sys.argv[1]), sys.argv[2], poll_seconds=0.05)
print(lock.device, flush=True)
sys.stdin.read()
"""


def start_claimant(n_devices: int, lock_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", CLAIMANT, str(n_devices), str(lock_dir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)


def test_concurrent_jobs_get_distinct_devices_and_a_fifth_waits_for_a_release(tmp_path: Path) -> None:
    holders = [start_claimant(4, tmp_path) for _ in range(4)]
    waiter = None
    try:
        devices = [holder.stdout.readline().strip() for holder in holders]
        assert sorted(devices) == ["0", "1", "2", "3"]

        waiter = start_claimant(4, tmp_path)
        time.sleep(1.5)
        assert waiter.poll() is None
        assert not _has_output(waiter), "a fifth job got a device while all four were held"

        released = holders[2]
        released.stdin.close()  # the job ends; its lock goes with it
        assert released.wait(timeout=30) == 0
        assert waiter.stdout.readline().strip() == devices[2]
    finally:
        for process in [*holders, *([waiter] if waiter else [])]:
            if process.poll() is None:
                process.stdin.close()
                process.wait(timeout=30)


def _has_output(process: subprocess.Popen) -> bool:
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        return bool(selector.select(timeout=0))


def test_release_frees_the_device_and_timeout_names_the_lock_dir(tmp_path: Path) -> None:
    first = acquire_device(["7"], tmp_path)
    assert (first.device, first.path.name) == ("7", "gpu-7.lock")
    with pytest.raises(TimeoutError, match=str(tmp_path)):
        acquire_device(["7"], tmp_path, poll_seconds=0.05, timeout=0.2)
    first.release()
    with acquire_device(["7"], tmp_path, timeout=0) as again:
        assert again.device == "7"


def test_visible_devices_from_environment_and_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "0, 2"}) == ["0", "2"]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": ""}) == []
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\n"
                   "echo 'GPU 0: NVIDIA H100 (UUID: GPU-aaa)'\n"
                   "echo '  MIG 1g.10gb Device 0: (UUID: MIG-bbb)'\n"
                   "echo 'GPU 1: NVIDIA H100 (UUID: GPU-ccc)'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert visible_devices({}) == ["0", "1"]
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert visible_devices({}) == []


def test_pin_free_device_numbers_gpus_like_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\necho 'GPU 0: A (UUID: GPU-a)'\necho 'GPU 1: B (UUID: GPU-b)'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(smi.parent))
    for name in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"):  # unset for the test, restored after it
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    with acquire_device(["0"], tmp_path / "locks"):
        lock = pin_free_device("cuda", tmp_path / "locks")
    assert lock is not None and lock.device == "1"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1" and os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    lock.release()


def test_pin_free_device_only_chooses_among_several(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    assert pin_free_device("cpu", tmp_path) is None
    assert pin_free_device("cuda:1", tmp_path) is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4,5"

    held = acquire_device(["4"], tmp_path)
    lock = pin_free_device("auto", tmp_path)
    assert lock is not None and lock.device == "5" and os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    # one visible device (as SLURM gives a job): nothing to choose, nothing locked
    assert pin_free_device("cuda", tmp_path) is None
    lock.release()
    held.release()


def test_cli_pins_gpu_stages_before_running_them(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "0,1"}
    stage = ["features", "--synset", str(tmp_path / "missing.h5"), "--teacher", str(tmp_path / "missing.pt"),
             "--out", str(tmp_path / "features.h5")]
    with acquire_device(["0"], tmp_path / "locks"):
        pinned = subprocess.run([sys.executable, "-m", "elf_pipeline", "--gpu-lock-dir", str(tmp_path / "locks"), *stage,
                                 "--device", "auto"], capture_output=True, text=True, env=env, timeout=300)
        on_cpu = subprocess.run([sys.executable, "-m", "elf_pipeline", "--gpu-lock-dir", str(tmp_path / "locks"), *stage,
                                 "--device", "cpu"], capture_output=True, text=True, env=env, timeout=300)
    assert "pinned to GPU 1" in pinned.stderr, pinned.stderr
    assert "missing.h5" in pinned.stderr and pinned.returncode != 0  # the stage itself still ran (and failed)
    assert "pinned" not in on_cpu.stderr
    assert not (tmp_path / "features.h5").exists()

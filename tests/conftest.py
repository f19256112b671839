"""Shared, tiny fixtures: a prepared digits data.h5 (16 px), a random synthetic set, a one-epoch
teacher and its features.  Session-scoped so the whole suite builds them once; tests must treat
them as read-only (copy into ``tmp_path`` before changing anything)."""

from __future__ import annotations

import gzip
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

# The machine is small and shared: one thread keeps the suite predictable.
torch.set_num_threads(1)

# Tests marked ``float_path`` compare results across float paths (kernels, chunkings, memory formats)
# or depend on float rounding staying small; `make test` runs them a second time on another CPU
# kernel path (ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA) so a CPU difference shows on any machine.

IMAGE_SIZE = 16
NUM_CLASSES = 10
TRAIN_LIMIT = 50  # 5 images per class
SYN_IPC = 2
TEACHER_ARCH = "convnet-w8"
TRAINED_TEACHER = {"epochs": 30, "batch_size": 25, "dsa": False}
REPO = Path(__file__).resolve().parents[1]


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` (uint8) in the IDX format of MNIST/Fashion-MNIST (gzip when ``path`` ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", dim) for dim in array.shape)
    payload = header + array.tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)
    return path


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("shared")


@pytest.fixture(scope="session")
def digits_h5(shared_dir) -> Path:
    from elf_pipeline.stages.data import prepare_data

    out = shared_dir / "data.h5"
    prepare_data(source="digits", out=out, image_size=IMAGE_SIZE, resize="interpolate", train_limit=TRAIN_LIMIT)
    return out


@pytest.fixture(scope="session")
def train_split(digits_h5):
    from elf_pipeline.artifacts.data_file import load_split

    return load_split(digits_h5, "train")


@pytest.fixture(scope="session")
def synset_h5(shared_dir, digits_h5) -> Path:
    from elf_pipeline.stages.distill import run_distill

    out = shared_dir / "synset.h5"
    run_distill(digits_h5, out, "random", SYN_IPC, {}, seed=0, device="cpu")
    return out


@pytest.fixture(scope="session")
def teacher(shared_dir, digits_h5) -> tuple[Path, dict]:
    from elf_pipeline.stages.teachers import train_teacher

    model, history = shared_dir / "teacher.pt", shared_dir / "teacher.json"
    record = train_teacher(digits_h5, model, history, TEACHER_ARCH, {"epochs": 1, "batch_size": 25, "dsa": False},
                           seed=0, device="cpu")
    return model, record


@pytest.fixture(scope="session")
def teacher_pt(teacher) -> Path:
    return teacher[0]


@pytest.fixture(scope="session")
def trained_teacher(shared_dir, digits_h5) -> tuple[Path, dict]:
    """A teacher trained well above chance, for tests of what a teacher passes on (the one-epoch
    ``teacher`` is near chance).  Measured: test accuracy 0.72 after 30 epochs (seeds 0-3: 0.70 to 0.75)."""
    from elf_pipeline.stages.teachers import train_teacher

    model, history = shared_dir / "trained_teacher.pt", shared_dir / "trained_teacher.json"
    record = train_teacher(digits_h5, model, history, TEACHER_ARCH, TRAINED_TEACHER, seed=0, device="cpu")
    return model, record


@pytest.fixture(scope="session")
def features_h5(shared_dir, synset_h5, teacher_pt) -> Path:
    from elf_pipeline.stages.features import extract_features

    out = shared_dir / "features.h5"
    extract_features(synset_h5, teacher_pt, out, device="cpu")
    return out


WORKFLOW_ITEMS = ("Snakefile", "workflow", "elf_pipeline", "config", "tests/configs")
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    run = subprocess.run([SNAKEMAKE, *args], cwd=workdir, capture_output=True, text=True)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    return run


def copy_workflow(source: Path, workdir: Path, items: tuple[str, ...] = WORKFLOW_ITEMS) -> Path:
    """The workflow's files of ``source`` (the repository) in ``workdir``, without bytecode caches
    (another process may be writing one while this copies)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for item in items:
        path = source / item
        if path.is_dir():
            shutil.copytree(path, workdir / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, workdir / item)
    return workdir


def _run_smoke_study(workdir: Path) -> None:
    copy_workflow(REPO, workdir)
    run = _snakemake(workdir, "--cores", "2", "--configfile", "tests/configs/smoke.yaml")
    assert "(100%) done" in run.stdout + run.stderr, (run.stdout + run.stderr)[-3000:]


@pytest.fixture(scope="session")
def smoke_pristine(tmp_path_factory) -> Path:
    """tests/configs/smoke.yaml run to completion through Snakemake in a private copy of the repository,
    once per test run: under pytest-xdist (`make test` runs two workers, `--dist loadfile`) the first
    worker that needs it runs it while the other waits on a lock (and fails at once if it failed).
    Never changed: the fixtures below hand out copies (``copytree(symlinks=True)`` keeps a study finished)."""
    import fcntl
    import os

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the folder every worker's basetemp lies in
    pristine = root / "smoke-study"
    with open(root / "smoke-study.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / "smoke-study.failed").is_file():
            pytest.fail(f"the smoke study failed in another worker:\n{(root / 'smoke-study.failed').read_text()}")
        if not (pristine / ".finished").is_file():
            shutil.rmtree(pristine, ignore_errors=True)
            try:
                _run_smoke_study(pristine)
            except AssertionError as error:
                (root / "smoke-study.failed").write_text(str(error))
                raise
            (pristine / ".finished").touch()
    return pristine


def study_copy(smoke_pristine: Path, tmp_path_factory, name: str) -> Path:
    """A private copy of the finished smoke study (``copytree(symlinks=True)`` keeps it finished)."""
    workdir = tmp_path_factory.mktemp(name) / "study"
    shutil.copytree(smoke_pristine, workdir, symlinks=True)
    return workdir


@pytest.fixture(scope="session")
def smoke_study(smoke_pristine, tmp_path_factory) -> Path:
    """A copy of the finished smoke study for this session; tests that change it restore what they touched."""
    return study_copy(smoke_pristine, tmp_path_factory, "study")


@pytest.fixture(scope="session")
def smoke_report(smoke_pristine, tmp_path_factory) -> Path:
    """A copy of the finished smoke study with its ``snakemake --report`` page, ``report.html``."""
    workdir = study_copy(smoke_pristine, tmp_path_factory, "report_study")
    _snakemake(workdir, "--configfile", "tests/configs/smoke.yaml", "--report", "report.html")
    return workdir


# --------------------------------------------------------------------------- test dependencies

def can_install_test_dependencies() -> bool:
    """The one place that decides whether a missing external test dependency (SLURM, Chromium) is a
    failure or a skip: running as root on a system with apt-get, `make test` installs them (targets
    slurm-deps and browser-deps), so one that is missing there is an error; elsewhere installing is
    impossible and its tests are skipped with the reason."""
    import os

    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def missing_dependency(reason: str) -> None:
    """Fail (where `make test` installs the dependency) or skip (where it cannot) with ``reason``."""
    if can_install_test_dependencies():
        pytest.fail(f"{reason}; as root with apt-get `make test` installs it (make slurm-deps browser-deps), "
                    "so its absence here is an error", pytrace=False)
    pytest.skip(f"{reason} (not root or no apt-get: it cannot be installed here)")


# --------------------------------------------------------------------------- float paths

def logits64(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The eval-mode logits of a float64 copy of ``model``: a reference free of float32 rounding."""
    import copy

    reference = copy.deepcopy(model).to(dtype=torch.float64, memory_format=torch.contiguous_format).eval()
    with torch.no_grad():
        return reference(images.to(torch.float64))


# Float32 logits of the test models differ from their float64 reference by about 5e-7 (measured: an
# untrained ConvNet on the digits test split, logits of order 1), far inside this tolerance.
LOGIT_TOL = 1e-4


def correct_bounds(logits: torch.Tensor, labels: torch.Tensor, tol: float = LOGIT_TOL) -> tuple[int, int, int]:
    """(fewest, most, ambiguous): how many of ``labels`` any float32 evaluation of ``logits`` (a
    float64 reference) can get right.  A prediction whose top two logits lie within ``tol`` (relative
    to the logits' scale) may flip with the kernels' rounding; every other one is fixed."""
    top2 = logits.topk(2, dim=1).values
    scale = logits.abs().max(dim=1).values.clamp_min(1.0)
    ambiguous = (top2[:, 0] - top2[:, 1]) < tol * scale
    correct = logits.argmax(dim=1) == labels
    fewest = int((correct & ~ambiguous).sum())
    return fewest, fewest + int(ambiguous.sum()), int(ambiguous.sum())


def assert_accuracy_of(accuracy: float, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       tol: float = LOGIT_TOL) -> None:
    """``accuracy`` is ``model``'s on (images, labels) on whatever float path computed it: a count of
    correct images, and within what the float64 reference allows (near-ties may go either way)."""
    count = accuracy * len(labels)
    assert abs(count - round(count)) < 1e-6, f"{accuracy} is not a count over {len(labels)} images"
    fewest, most, ambiguous = correct_bounds(logits64(model, images), labels, tol)
    assert ambiguous <= max(2, len(labels) // 50), f"{ambiguous} near-ties: the reference does not decide"
    assert fewest <= round(count) <= most, (round(count), fewest, most)


# --------------------------------------------------------------------------- trained students

class StudentSpy:
    """Records the students that the student stage tests (a deep copy of each model, in eval mode,
    when ``elf.evaluate`` or ``elf.evaluate_vectorized`` tests it), without changing what runs."""

    def __init__(self, monkeypatch) -> None:
        import copy

        import elf_pipeline.engine.elf as elf

        self.models: list[torch.nn.Module] = []
        original = elf.evaluate

        def recording(model, images, labels, *args, **kwargs):
            accuracy = original(model, images, labels, *args, **kwargs)
            self.models.append(copy.deepcopy(model).eval())
            return accuracy

        monkeypatch.setattr(elf, "evaluate", recording)
        vectorized = elf.evaluate_vectorized

        def recording_all(models, images, labels, *args, **kwargs):
            accuracies = vectorized(models, images, labels, *args, **kwargs)
            self.models.extend(copy.deepcopy(model).eval() for model in models)
            return accuracies

        monkeypatch.setattr(elf, "evaluate_vectorized", recording_all)

    def take(self) -> list[torch.nn.Module]:
        """The students recorded since the last call (test and validation passes both record)."""
        models, self.models = self.models, []
        return models


@pytest.fixture
def student_spy(monkeypatch) -> StudentSpy:
    return StudentSpy(monkeypatch)

"""Expert trajectories: the file format, partial reads, ZCA, and caching through Snakemake."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from conftest import assert_accuracy_of, copy_workflow

from elf_pipeline import config as elf_config
from elf_pipeline.artifacts.data_file import load_split
from elf_pipeline.artifacts.expert_file import read_epochs, read_expert_info
from elf_pipeline.config import checks as config_checks
from elf_pipeline.engine.evaluation import evaluate
from elf_pipeline.engine.training import build_seeded
from elf_pipeline.engine.zca import fit_zca
from elf_pipeline.infra.io import read_provenance
from elf_pipeline.models import build
from elf_pipeline.stages.distill.common import class_indices, initial_synset
from elf_pipeline.stages.distill.mtt import distill_mtt
from elf_pipeline.stages.experts import flat_parameters, train_expert

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
ARCH = "convnet-w8"
SMALL = {"epochs": 3, "batch_size": 25, "dsa": False}


@pytest.fixture(scope="module")
def expert(tmp_path_factory, digits_h5) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("experts") / "expert_1.h5"
    return path, train_expert(digits_h5, path, ARCH, 1, SMALL, "cpu")


def test_expert_file_holds_every_epoch(expert) -> None:
    path, summary = expert
    initial = flat_parameters(build_seeded(lambda: build(ARCH, 1, 10, 16), 1))  # seed 0 + index 1
    with h5py.File(path) as h5:
        params = h5["params"]
        assert params.shape == (4, initial.numel()) and params.dtype == np.float32 and params.chunks == (1, initial.numel())
        assert np.array_equal(params[0], initial.numpy())
        assert not np.array_equal(params[1], params[0]) and not np.array_equal(params[3], params[2])
        assert h5["history/loss"].shape == (3,)
        assert h5.attrs["storage_bytes"] == 4 * initial.numel() * 4 == summary["storage_bytes"]
        assert h5.attrs["seed"] == 1 and h5.attrs["zca_eps"] == 0 and 0 <= h5.attrs["test_acc"] <= 1
        provenance = read_provenance(h5)
    assert provenance["stage"] == "experts" and provenance["config"]["epochs"] == 3 and provenance["inputs"]["data"]
    assert summary["disk_bytes"] == path.stat().st_size >= summary["storage_bytes"]
    info = read_expert_info(path)
    assert (info.arch, info.epochs, info.num_classes, info.image_size) == (ARCH, 3, 10, 16)


def test_read_epochs_reads_the_requested_rows_in_order(expert) -> None:
    path, _ = expert
    with h5py.File(path) as h5:
        everything = torch.from_numpy(h5["params"][:])
    rows = read_epochs(path, [3, 1])
    assert rows.dtype == torch.float32 and torch.equal(rows, everything[[3, 1]])


def test_experts_are_reproducible_and_float16_halves_the_size(tmp_path, digits_h5, expert) -> None:
    path, summary = expert
    again = train_expert(digits_h5, tmp_path / "again.h5", ARCH, 1, SMALL, "cpu")
    half = train_expert(digits_h5, tmp_path / "half.h5", ARCH, 1, {**SMALL, "dtype": "float16"}, "cpu")
    other = train_expert(digits_h5, tmp_path / "other.h5", ARCH, 2, SMALL, "cpu")
    assert torch.equal(read_epochs(tmp_path / "again.h5", [3]), read_epochs(path, [3]))
    assert again["test_acc"] == summary["test_acc"]
    assert half["storage_bytes"] * 2 == summary["storage_bytes"]
    assert torch.allclose(read_epochs(tmp_path / "half.h5", [3]), read_epochs(path, [3]), atol=1e-2)
    assert other["storage_bytes"] == summary["storage_bytes"]
    assert not torch.equal(read_epochs(tmp_path / "other.h5", [0]), read_epochs(path, [0]))
    with pytest.raises(ValueError, match="dtype"):
        train_expert(digits_h5, tmp_path / "bad.h5", ARCH, 0, {**SMALL, "dtype": "int8"}, "cpu")


def test_zca_experts_make_mtt_distil_whitened_images(tmp_path, digits_h5, train_split) -> None:
    path = tmp_path / "zca.h5"
    train_expert(digits_h5, path, ARCH, 0, {**SMALL, "epochs": 2, "zca": True, "zca_eps": 0.1}, "cpu")
    assert read_expert_info(path).zca_eps == pytest.approx(0.1)
    images, labels, info = train_split
    synset = distill_mtt(images, labels, info.num_classes, 1, seed=0, device=torch.device("cpu"), experts=[path],
                         iterations=0, max_start_epoch=1, expert_epochs=1)
    real = initial_synset(images, class_indices(labels, info.num_classes), 1, "real", torch.Generator().manual_seed(0))
    assert torch.allclose(synset.images, fit_zca(images, 0.1).transform(real.images), atol=1e-5)
    assert synset.extra_attrs["zca_eps"] == pytest.approx(0.1)


def test_experts_config_resolution_and_checks() -> None:
    config = yaml.safe_load((REPO / "tests" / "configs" / "smoke.yaml").read_text())
    config["distillation"]["methods"]["mtt"] = {"syn_steps": 2}
    resolved = elf_config.experts_config(config)
    assert resolved["arch"] == "convnet" and resolved["num_experts"] == 100 and resolved["epochs"] == 50  # schema defaults
    config["experts"] = {"num_experts": 3, "epochs": 2, "arch": ARCH}
    settings = elf_config.expert_settings(config, 1)  # what an expert job's params carry
    assert settings["epochs"] == 2 and settings["index"] == 1 and settings["arch"] == ARCH and settings["lr"] == 0.01
    assert "num_experts" not in settings  # adding experts leaves the existing ones' params alone
    assert elf_config.uses_experts("mtt") and not elf_config.uses_experts("dm")
    schema = str(REPO / "workflow" / "schemas" / "config.schema.yaml")
    elf_config.validate_schema(config, schema)
    config_checks.check_config(config)
    for change, message in [({"experts": {"dtype": "int8"}}, "experts.dtype"),
                            ({"experts": {"arch": "convnet-x"}}, "experts.arch: unknown architecture"),
                            ({"distillation": {**config["distillation"], "methods": {"dc": {"dsa": True}}}}, "method dsa"),
                            ({"distillation": {**config["distillation"], "methods": {"dsa": {"dsa": False}}}}, "method dc")]:
        with pytest.raises(elf_config.ConfigError, match=message):
            broken = {**config, **change}
            elf_config.validate_schema(broken, schema)
            config_checks.check_config(broken)


# --------------------------------------------------------------------------- workflow caching

def _snakemake(workdir: Path, *args: str) -> str:
    result = subprocess.run([SNAKEMAKE, "--cores", "2", *args], cwd=workdir, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout + result.stderr


def _planned(workdir: Path, *args: str) -> list[str]:
    text = _snakemake(workdir, "-n", *args)
    return [path for line in re.findall(r"^\s+output: (.+)$", text, flags=re.M) for path in line.split(", ")]


@pytest.mark.slow
def test_experts_are_planned_once_and_extended_incrementally(tmp_path) -> None:
    copy_workflow(REPO, tmp_path)
    config = yaml.safe_load((REPO / "tests" / "configs" / "smoke.yaml").read_text())
    config["distillation"].update(ipc=[1, 2], methods={"mtt": {"iterations": 2, "syn_steps": 2, "expert_epochs": 1,
                                                               "max_start_epoch": 1}})
    config["datasets"]["digits"].update(image_size=16, train_limit=100)
    config["experts"] = {"arch": ARCH, "num_experts": 2, "epochs": 1, "batch_size": 100, "dsa": False}
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(config))
    config["experts"]["num_experts"] = 3
    (tmp_path / "three.yaml").write_text(yaml.safe_dump(config))
    synsets = [f"results/digits/distill/mtt/ipc{ipc}/synset.h5" for ipc in (1, 2)]
    experts = [f"results/digits/experts/{ARCH}/expert_{k}.h5" for k in range(3)]

    planned = _planned(tmp_path, *synsets, "--configfile", "two.yaml")
    assert sorted(p for p in planned if "/experts/" in p) == experts[:2]  # two IPCs, each expert once
    assert set(synsets) <= set(planned)

    _snakemake(tmp_path, *experts[:2], "--configfile", "two.yaml")
    with h5py.File(tmp_path / experts[1]) as h5:
        assert json.loads(h5.attrs["config"])["seed"] == 0 and h5.attrs["seed"] == 1
    planned = _planned(tmp_path, *synsets, "--configfile", "three.yaml")
    assert sorted(p for p in planned if "/experts/" in p) == experts[2:]  # only the new expert trains
    assert "results/digits/data.h5" not in planned and set(synsets) <= set(planned)


def test_expert_streams_a_training_split_larger_than_its_memory_limit(digits_h5, tmp_path):
    """Experts, like the teacher, stream data.h5 in chunks when the split exceeds max_in_memory_gb."""
    import h5py

    from elf_pipeline.stages.experts import train_expert

    config = {"epochs": 2, "batch_size": 16, "dsa": False, "seed": 0}
    streamed = train_expert(digits_h5, tmp_path / "a.h5", "convnet-w8", 0, {**config, "max_in_memory_gb": 1e-9},
                            device="cpu")
    again = train_expert(digits_h5, tmp_path / "b.h5", "convnet-w8", 0, {**config, "max_in_memory_gb": 1e-9},
                         device="cpu")
    assert 0.0 <= streamed["test_acc"] <= 1.0
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        assert a["params"].shape[0] == 3 and (a["params"][2] != a["params"][0]).any()
        assert (a["params"][:] == b["params"][:]).all()
    assert again["test_acc"] == streamed["test_acc"]
    # the streamed test pass scores the expert's final weights as an in-memory pass does
    stored = train_expert(digits_h5, tmp_path / "c.h5", "convnet-w8", 0,
                          {**config, "max_in_memory_gb": 1e-9, "dtype": "float32"}, device="cpu")
    assert stored["test_acc"] == streamed["test_acc"]  # the stored precision does not change training
    images, labels, info = load_split(digits_h5, "test")
    model = build_seeded(lambda: build("convnet-w8", info.channels, info.num_classes, info.image_size), 0)
    with h5py.File(tmp_path / "c.h5") as h5:
        torch.nn.utils.vector_to_parameters(torch.from_numpy(h5["params"][-1]).float(), model.parameters())
    assert_accuracy_of(streamed["test_acc"], model, images, labels)
    assert streamed["test_acc"] == pytest.approx(evaluate(model, images, labels), abs=2 / len(labels))

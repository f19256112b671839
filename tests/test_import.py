"""Method import: synthetic sets distilled elsewhere, in the forms they are released in, validated,
converted to the dataset's normalised space, and evaluated by the workflow like any other method."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import IMAGE_SIZE, NUM_CLASSES, REPO, copy_workflow

from elf_pipeline import cli
from elf_pipeline.artifacts.data_file import read_info
from elf_pipeline.infra.io import open_h5, sha256_file
from elf_pipeline.stages.distill import run_distill
from elf_pipeline.stages.distill.imported import ImportedSetError, import_synset

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
IPC = 2


def released(ipc: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Real digits as a released set would hold them: [0, 1] pixels, NCHW, labels interleaved
    (class 0, 1, ..., 9, 0, 1, ...) rather than class-major."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    rng = np.random.default_rng(seed)
    index = np.stack([rng.choice(np.flatnonzero(bunch.target == c), ipc, replace=False) for c in range(10)], axis=1)
    index = index.reshape(-1)
    images = torch.from_numpy(bunch.images[index] / 16.0).float()[:, None]
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return images, torch.from_numpy(bunch.target[index].astype(np.int64))


def expected(images_unit: torch.Tensor, labels: torch.Tensor, data: Path) -> tuple[np.ndarray, np.ndarray]:
    info = read_info(data)
    order = np.argsort(labels.numpy(), kind="stable")
    normalised = (images_unit.double().numpy() - info.mean.reshape(1, -1, 1, 1)) / info.std.reshape(1, -1, 1, 1)
    return normalised[order].astype(np.float32), labels.numpy()[order]


@pytest.fixture(scope="module")
def release() -> tuple[torch.Tensor, torch.Tensor]:
    return released(IPC, IMAGE_SIZE)


def _write(kind: str, folder: Path, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Write a set in one released form; returns the method config block that reads it."""
    if kind == "dict_pt":
        torch.save({"images": images, "labels": labels}, folder / "set.pt")
        return {"path": str(folder / "set.pt")}
    if kind == "tuple_pt":
        torch.save((images, labels), folder / "set.pt")
        return {"path": str(folder / "set.pt")}
    if kind == "dc_pt":  # DC/DSA/DM: {'data': [[image_syn, label_syn], ...], 'accs_all_exps': {...}}
        torch.save({"data": [[images, labels]], "accs_all_exps": {"ConvNet": [0.5]}}, folder / "res.pt")
        return {"path": str(folder / "res.pt")}
    if kind == "mtt_pt":  # MTT/DATM: images_best.pt and labels_best.pt
        torch.save(images, folder / "images_best.pt")
        torch.save(labels, folder / "labels_best.pt")
        return {"path": str(folder / "images_best.pt"), "labels_path": str(folder / "labels_best.pt")}
    if kind == "npz":
        np.savez(folder / "set.npz", images=images.numpy(), labels=labels.numpy())
        return {"path": str(folder / "set.npz")}
    if kind == "h5":
        with h5py.File(folder / "set.h5", "w") as h5:
            h5["image_syn"], h5["label_syn"] = images.numpy(), labels.numpy()
        return {"path": str(folder / "set.h5")}
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["dict_pt", "tuple_pt", "dc_pt", "mtt_pt", "npz", "h5"])
def test_released_forms_import_to_the_same_class_major_set(kind, release, digits_h5, tmp_path):
    images, labels = release
    block = _write(kind, tmp_path, images, labels)
    synset = import_synset(digits_h5, IPC, normalization="unit", **block)
    want_images, want_labels = expected(images, labels, digits_h5)
    np.testing.assert_array_equal(synset.labels.numpy(), want_labels)
    assert synset.labels.tolist() == sorted(synset.labels.tolist())
    np.testing.assert_allclose(synset.images.numpy(), want_images, rtol=1e-5, atol=1e-5)
    assert synset.images.dtype == torch.float32
    assert synset.extra_attrs["imported_sha256"] == sha256_file(block["path"])


def test_normalizations_convert_to_the_dataset_space(release, digits_h5, tmp_path):
    images, labels = release
    published = tmp_path / "data.h5"
    shutil.copy(digits_h5, published)
    with h5py.File(published, "a") as h5:  # give this dataset published statistics
        h5.attrs["published_mean"], h5.attrs["published_std"] = np.float32([0.4]), np.float32([0.3])
    info = read_info(published)
    want, _ = expected(images, labels, published)
    forms = {
        "unit": images,
        "uint8": images * 255.0,
        "dataset": (images - float(info.mean[0])) / float(info.std[0]),
        "published": (images - 0.4) / 0.3,
    }
    for normalization, stored in forms.items():
        torch.save({"images": stored, "labels": labels}, tmp_path / f"{normalization}.pt")
        synset = import_synset(published, IPC, path=tmp_path / f"{normalization}.pt", normalization=normalization)
        np.testing.assert_allclose(synset.images.numpy(), want, rtol=1e-4, atol=1e-4, err_msg=normalization)
    with pytest.raises(ImportedSetError, match=r"normalization: published, but the prepared dataset \(digits\) records no"):
        import_synset(digits_h5, IPC, path=tmp_path / "published.pt", normalization="published")


def _bad(kind: str, images: torch.Tensor, labels: torch.Tensor) -> tuple[object, str]:
    """A broken variant of the release and (part of) the message it must produce."""
    if kind == "nan":
        broken = images.clone()
        broken[3, 0, 5, 5] = float("nan")
        return {"images": broken, "labels": labels}, "images hold 1 non-finite values (NaN/Inf)"
    if kind == "channels":
        return {"images": images.repeat(1, 3, 1, 1), "labels": labels}, "images have 3 channels but the dataset (digits) has 1"
    if kind == "labels":
        return {"images": images, "labels": labels + 5}, "labels span 5..14 but the dataset has 10 classes (0..9)"
    if kind == "nhwc":
        return {"images": images.permute(0, 2, 3, 1), "labels": labels}, "which looks N x H x W x C"
    if kind == "ipc":
        return {"images": images[:-1], "labels": labels[:-1]}, "expected 2 images per class (ipc 2) for 10 classes"
    if kind == "size":
        return {"images": F.interpolate(images, size=8), "labels": labels}, "images are 8x8 but the dataset is prepared at 16x16"
    if kind == "soft":
        return {"images": images, "labels": torch.rand(len(labels), 10) + 0.5}, "soft label rows must sum to 1"
    if kind == "objects":
        return {"images": images, "labels": labels, "args": argparse.Namespace(lr=0.1)}, "refused: the file holds Python objects"
    if kind == "range":
        return {"images": images * 255.0, "labels": labels}, "far outside [0, 1] for normalization: unit"
    raise AssertionError(kind)


BAD = ["nan", "channels", "labels", "nhwc", "ipc", "size", "soft", "objects", "range"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_sets_fail_with_a_clear_message(kind, release, digits_h5, tmp_path):
    payload, message = _bad(kind, *release)
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(ImportedSetError) as info:
        import_synset(digits_h5, IPC, path=tmp_path / "bad.pt", normalization="unit")
    assert str(info.value).startswith(f"{tmp_path / 'bad.pt'}: ")
    assert message in str(info.value), str(info.value)


def test_missing_or_unsupported_files_and_config(release, digits_h5, tmp_path):
    images, labels = release
    with pytest.raises(ImportedSetError, match="absent.pt: imported synthetic set file not found"):
        import_synset(digits_h5, IPC, path=tmp_path / "absent.pt", normalization="unit")
    (tmp_path / "set.pkl").write_bytes(b"x")
    with pytest.raises(ImportedSetError, match=r"unsupported file type '.pkl'"):
        import_synset(digits_h5, IPC, path=tmp_path / "set.pkl", normalization="unit")
    torch.save(images, tmp_path / "images_best.pt")
    with pytest.raises(ImportedSetError, match="holds images only; give the labels file as labels_path"):
        import_synset(digits_h5, IPC, path=tmp_path / "images_best.pt", normalization="unit")
    with pytest.raises(ImportedSetError, match="normalization must be one of dataset, published, unit, uint8"):
        import_synset(digits_h5, IPC, path=tmp_path / "images_best.pt")
    np.savez(tmp_path / "objects.npz", images=np.array([object()], dtype=object), labels=labels.numpy())
    with pytest.raises(ImportedSetError, match="objects.npz: refused or unreadable .npz"):
        import_synset(digits_h5, IPC, path=tmp_path / "objects.npz", normalization="unit")


def test_run_distill_writes_the_imported_set(release, digits_h5, tmp_path):
    images, labels = release
    torch.save({"images": images, "labels": labels}, tmp_path / "set.pt")
    out = tmp_path / "synset.h5"
    run_distill(digits_h5, out, "import", IPC, {"path": str(tmp_path / "set.pt"), "normalization": "unit"}, device="cpu")
    with open_h5(out) as h5:
        assert h5["images"].shape == (IPC * NUM_CLASSES, 1, IMAGE_SIZE, IMAGE_SIZE)
        assert h5.attrs["method"] == "import" and h5.attrs["imported_normalization"] == "unit"
        np.testing.assert_allclose(h5["images"][:], expected(images, labels, digits_h5)[0], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- through the workflow

def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([SNAKEMAKE, "--cores", "2", *args], cwd=workdir, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def _planned(workdir: Path, *args: str) -> set[str]:
    """Outputs a dry run would (re)create."""
    text = _snakemake(workdir, "-n", *args).stdout
    return {path for line in re.findall(r"^\s+output: (.+)$", text, flags=re.M) for path in line.split(", ")}


@pytest.fixture(scope="module")
def imported_study(tmp_path_factory) -> Path:
    """tests/configs/smoke-import.yaml with its .pt files, run to completion for method import alone, in a
    private copy of the workflow (so later edits of the checkout cannot invalidate its results)."""
    workdir = tmp_path_factory.mktemp("import_study")
    copy_workflow(REPO, workdir)
    (workdir / "imported").mkdir()
    for ipc in (1, 2):
        images, labels = released(ipc, 32, seed=ipc)
        torch.save({"images": images, "labels": labels}, workdir / "imported" / f"digits_ipc{ipc}.pt")
    config = yaml.safe_load((REPO / "tests" / "configs" / "smoke-import.yaml").read_text())
    # The machine running the suite is small: only method import, evaluated with ELF (teacher,
    # features, students), one student architecture and seed, short training, no full-data
    # reference; the report is the target (no figures).
    config["distillation"]["methods"] = {"import": config["distillation"]["methods"]["import"]}
    config["evaluations"] = {"elf": config["evaluations"]["elf"]}
    config["students"].update(archs=["convnet"], seeds=[0])
    config["students"]["train"]["epochs"] = 2
    config["teachers"]["convnet"].update(arch="convnet-w16", train={**config["teachers"]["convnet"]["train"], "epochs": 1})
    config["reference"] = {"enabled": False}
    (workdir / "import-only.yaml").write_text(yaml.safe_dump(config))
    run = _snakemake(workdir, "report", "--configfile", "import-only.yaml")
    assert "(100%) done" in run.stdout + run.stderr
    return workdir


@pytest.mark.slow
def test_imported_sets_flow_through_features_students_and_report(imported_study):
    smoke = yaml.safe_load((imported_study / "import-only.yaml").read_text())
    runs = pd.read_parquet(imported_study / "results/report/runs.parquet")
    imported = runs[runs["method"] == "import"]
    assert len(imported) == (len(smoke["distillation"]["ipc"]) * len(smoke["students"]["archs"])
                             * len(smoke["evaluations"]) * len(smoke["students"]["seeds"]))
    assert set(imported["evaluation"]) == {"elf"} and imported["test_acc"].between(0, 1).all()
    assert imported["teacher"].eq("convnet").all() and imported["teacher_test_acc"].notna().all()
    assert "import" in (imported_study / "results/report/summary.md").read_text()
    with open_h5(imported_study / "results/digits/distill/import/ipc2/synset.h5") as h5:
        assert h5.attrs["imported_sha256"] == sha256_file(imported_study / "imported/digits_ipc2.pt")
    assert (imported_study / "results/digits/features/import/ipc1/convnet.h5").is_file()
    # the shipped smoke-import config (all methods) is valid and plans the import jobs too
    planned = _planned(imported_study, "--configfile", "tests/configs/smoke-import.yaml")
    assert "results/digits/distill/dm/ipc1/synset.h5" in planned
    assert not any("/distill/import/" in path for path in planned)  # same block: the imported sets are current


@pytest.mark.slow
def test_replacing_the_imported_file_reruns_its_set_and_what_follows(imported_study):
    images, labels = released(1, 32, seed=11)  # another release of the IPC-1 set
    torch.save({"images": images, "labels": labels}, imported_study / "imported/digits_ipc1.pt")
    planned = _planned(imported_study, "report", "--configfile", "import-only.yaml")
    assert planned == {
        "results/digits/distill/import/ipc1/synset.h5",
        "results/digits/features/import/ipc1/convnet.h5",
        "results/digits/students/import/ipc1/convnet/elf.parquet",
        *(path for path in planned if path.startswith("results/report/")),
    }


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["nan", "channels", "labels"])
def test_bad_file_through_the_cli_leaves_the_finished_set_intact(kind, imported_study, capsys):
    synset = imported_study / "results/digits/distill/import/ipc1/synset.h5"
    before = sha256_file(synset)
    images, labels = released(1, 32, seed=1)
    payload, message = _bad(kind, images, labels)
    bad = imported_study / f"bad_{kind}.pt"
    torch.save(payload, bad)
    settings = {"method": "import", "ipc": 1, "hyperparameters": {"path": str(bad), "normalization": "unit"}}
    code = cli.main(["distill", "--data", str(imported_study / "results/digits/data.h5"), "--settings", json.dumps(settings),
                     "--device", "cpu", "--out", str(synset)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"elf-pipeline distill: error: {bad}: ")
    assert message in err[0]
    assert sha256_file(synset) == before
    assert sorted(p.name for p in synset.parent.iterdir()) == ["synset.h5"]  # no partial file left behind


# --------------------------------------------------------------------------- the releasing code's constants

# The non-ZCA CIFAR-100 normalisation of each releasing code, as their utils.py (get_dataset) has it:
# MTT and ELF reuse CIFAR-10's constants, DC/DSA/DM use CIFAR-100's own.
MTT_CIFAR100 = ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])
DC_CIFAR100 = ([0.5071, 0.4866, 0.4409], [0.2673, 0.2564, 0.2762])


def _cifar100_info(path: Path, size: int = 4) -> Path:
    """A data.h5 holding just the attributes an import reads: a CIFAR-100 source, its own mean/std."""
    with h5py.File(path, "w") as h5:
        h5.attrs.update({"mean": np.float32([0.45, 0.44, 0.43]), "std": np.float32([0.25, 0.26, 0.27]),
                         "classes": np.array([f"c{i}" for i in range(100)], dtype=h5py.string_dtype()),
                         "image_size": size, "source": "cifar100"})
    return path


def test_a_cifar100_release_decodes_with_the_constants_of_the_code_that_wrote_it(tmp_path):
    data = _cifar100_info(tmp_path / "data.h5")
    info = read_info(data)
    pixels = torch.rand(100, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = torch.arange(100)
    want = ((pixels.numpy() - info.mean.reshape(1, -1, 1, 1)) / info.std.reshape(1, -1, 1, 1))
    mean, std = (torch.tensor(v, dtype=torch.float64).reshape(1, -1, 1, 1) for v in MTT_CIFAR100)
    torch.save({"images": ((pixels - mean) / std).float(), "labels": labels}, tmp_path / "mtt.pt")
    for normalization in ({"published": "mtt"}, {"published": "elf"}, {"mean": MTT_CIFAR100[0], "std": MTT_CIFAR100[1]}):
        synset = import_synset(data, 1, path=tmp_path / "mtt.pt", normalization=normalization)
        np.testing.assert_allclose(synset.images.numpy(), want, rtol=1e-4, atol=1e-4, err_msg=str(normalization))
    assert synset.extra_attrs["imported_normalization"].startswith("mean=[0.4914")
    as_dc = import_synset(data, 1, path=tmp_path / "mtt.pt", normalization={"published": "dc"})
    assert as_dc.extra_attrs["imported_normalization"] == "published:dc"
    assert np.abs(as_dc.images.numpy() - want).max() > 0.1  # the other code's constants decode it wrongly
    with pytest.raises(ImportedSetError) as error:
        import_synset(data, 1, path=tmp_path / "mtt.pt", normalization="published")
    message = str(error.value)
    assert "{published: dc}" in message and "{published: mtt}" in message and "\n" not in message
    assert f"{DC_CIFAR100[0][0]:g}" in message and f"{MTT_CIFAR100[0][0]:g}" in message
    with pytest.raises(ImportedSetError, match="has 1 mean/std values but the images have 3 channels|1 mean/std values"):
        import_synset(data, 1, path=tmp_path / "mtt.pt", normalization={"mean": [0.5], "std": [0.2]})

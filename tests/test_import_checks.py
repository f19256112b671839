"""Checks of an imported set beyond its shape: the declared pixel space against the images'
statistics (``distill/pixel_space.py``), on small files written in each real release layout."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from test_import import released

from elf_pipeline.artifacts.data_file import read_info
from elf_pipeline.engine.zca import fit_zca_to_data
from elf_pipeline.infra.io import open_h5
from elf_pipeline.stages.distill import pixel_space, run_distill
from elf_pipeline.stages.distill.imported import ImportedSetError, import_synset

IPC, SIZE = 2, 16
MNIST_DC = (0.1307, 0.3081)  # DC/DSA/DM's MNIST constants (datasets.catalog.RELEASE_STATS)
NUMBER = r"-?[0-9.]+(?:e[-+]?[0-9]+)?"


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """Every training image of scikit-learn's digits at 16 px (the whitening check compares with the
    training split's principal components)."""
    from elf_pipeline.stages.data import prepare_data

    out = tmp_path_factory.mktemp("checks") / "data.h5"
    prepare_data(source="digits", out=out, image_size=SIZE, resize="interpolate")
    return out


@pytest.fixture(scope="module")
def release() -> tuple[torch.Tensor, torch.Tensor]:
    return released(IPC, SIZE, seed=3)


def _normalised(images: torch.Tensor, data: Path, mean=None, std=None) -> torch.Tensor:
    info = read_info(data)
    mean = info.mean[0] if mean is None else mean
    std = info.std[0] if std is None else std
    return ((images.double() - float(mean)) / float(std)).float()


def _mtt_layout(folder: Path, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """MTT/DATM: images_best.pt and labels_best.pt, bare tensors."""
    torch.save(images, folder / "images_best.pt")
    torch.save(labels, folder / "labels_best.pt")
    return {"path": str(folder / "images_best.pt"), "labels_path": str(folder / "labels_best.pt")}


def _error(data: Path, **block) -> str:
    with pytest.raises(ImportedSetError) as error:
        import_synset(data, IPC, **block)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_uint8_set_declared_unit_names_uint8(digits, release, tmp_path):
    images, labels = release
    stored = (images * 255).round().to(torch.uint8)  # a set saved as 8-bit pixels
    torch.save({"images": stored, "labels": labels}, tmp_path / "set.pt")
    info = read_info(digits)
    as_uint8 = stored.double() / 255
    message = _error(digits, path=tmp_path / "set.pt", normalization="unit")
    assert message == (
        f"{tmp_path / 'set.pt'}: declared normalization: unit, ruled out by the images' statistics (values span [0, 255], "
        f"far outside [0, 1] for normalization: unit); likely uint8 (as uint8: mean {float(as_uint8.mean()):.3g}, "
        f"std {float(as_uint8.std(unbiased=False)):.3g}): declare normalization: uint8 (or set space_check: warn)")
    assert float(info.mean[0]) == pytest.approx(float(as_uint8.mean()), abs=0.05)  # the likely space decodes to real pixels
    synset = import_synset(digits, IPC, path=tmp_path / "set.pt", normalization="uint8")  # the right declaration passes
    assert synset.extra_attrs["import_space_check"] == "ok"


def test_a_unit_set_declared_uint8_is_no_longer_an_all_black_set(digits, release, tmp_path):
    images, labels = release
    torch.save({"images": images, "labels": labels}, tmp_path / "set.pt")
    message = _error(digits, path=tmp_path / "set.pt", normalization="uint8")
    pattern = (re.escape(f"{tmp_path / 'set.pt'}: declared normalization: uint8, ruled out by the images' statistics "
                         "(as uint8: mean ") + f"{NUMBER}, std {NUMBER}; real images: {NUMBER}, {NUMBER}"
               + re.escape("); likely unit (as unit: mean ") + f"{NUMBER}, std {NUMBER}"
               + re.escape("): declare normalization: unit (or set space_check: warn)"))
    assert re.fullmatch(pattern, message), message


def test_a_zca_set_declared_without_zca_names_zca(digits, release, tmp_path):
    images, labels = release
    whitened = fit_zca_to_data(digits, 0.1).transform(_normalised(images, digits))  # MTT's CIFAR sets: ZCA after normalising
    block = _mtt_layout(tmp_path, whitened, labels)
    message = _error(digits, normalization="dataset", **block)
    pattern = (re.escape(f"{tmp_path / 'images_best.pt'}: declared normalization: dataset without zca, but the images "
                         "look ZCA-whitened (whitening slope ") + NUMBER + f"(?:, eps about {NUMBER})?"
               + re.escape("; unwhitened images give about 1); likely dataset+zca: declare normalization: dataset and "
                           "zca: {eps: <its eps, MTT's 0.1>} (or set space_check: warn)"))
    assert re.fullmatch(pattern, message), message
    slope = float(re.search(r"whitening slope (" + NUMBER + ")", message).group(1))
    assert slope < pixel_space.WHITENED_SLOPE
    synset = import_synset(digits, IPC, normalization="dataset", zca={"eps": 0.1}, **block)  # declared right: accepted
    assert synset.extra_attrs["import_space_check"] == "ok" and synset.extra_attrs["zca_eps"] == 0.1


def test_a_set_declared_zca_that_is_not_whitened_is_refused(digits, release, tmp_path):
    images, labels = release
    block = _mtt_layout(tmp_path, _normalised(images, digits), labels)
    message = _error(digits, normalization="dataset", zca={"eps": 0.1}, **block)
    pattern = (re.escape(f"{tmp_path / 'images_best.pt'}: declared ZCA-whitened (zca) but the images are not whitened "
                         "(whitening slope ") + NUMBER
               + re.escape(", whitened sets give about 0); likely dataset without zca: drop zca (or set space_check: warn)"))
    assert re.fullmatch(pattern, message), message


@pytest.fixture(scope="module")
def mnist_like(digits, tmp_path_factory) -> Path:
    """The digits data.h5 recorded as source mnist, so DC's published MNIST constants apply."""
    out = tmp_path_factory.mktemp("mnist") / "data.h5"
    shutil.copy(digits, out)
    with h5py.File(out, "a") as h5:
        h5.attrs["source"] = "mnist"
    return out


@pytest.mark.parametrize("method", ["random", "dm"])
def test_a_dc_release_declared_right_raises_no_alarm(method, mnist_like, tmp_path):
    """DC/DSA/DM's res.pt ({'data': [[image_syn, label_syn]], 'accs_all_exps': ...}) in DC's own
    normalisation, from sets this pipeline distils, declared {published: dc}: accepted silently."""
    synset = tmp_path / "synset.h5"
    run_distill(mnist_like, synset, method, IPC, {"iterations": 5, "batch_real": 16} if method == "dm" else {},
                seed=0, device="cpu")
    info = read_info(mnist_like)
    with open_h5(synset) as h5:
        images, labels = torch.from_numpy(h5["images"][:]), torch.from_numpy(h5["labels"][:])
    pixels = images.double() * float(info.std[0]) + float(info.mean[0])
    stored = _normalised(pixels, mnist_like, *MNIST_DC)
    torch.save({"data": [[stored, labels]], "accs_all_exps": {"ConvNet": [0.5]}}, tmp_path / "res.pt")
    imported = import_synset(mnist_like, IPC, path=tmp_path / "res.pt", normalization={"published": "dc"})
    assert imported.extra_attrs["import_space_check"] == "ok", imported.extra_attrs["import_space_note"]
    assert "published:dc" in imported.extra_attrs["import_consistent_spaces"]
    np.testing.assert_allclose(imported.images.numpy(), images.numpy(), atol=1e-4)


def test_space_check_warn_records_and_off_skips(digits, release, tmp_path, caplog):
    images, labels = release
    torch.save({"images": images, "labels": labels}, tmp_path / "set.pt")
    with caplog.at_level("WARNING"):
        synset = import_synset(digits, IPC, path=tmp_path / "set.pt", normalization="uint8", space_check="warn")
    assert synset.extra_attrs["import_space_check"] == "warning"
    assert "declared normalization: uint8, ruled out" in synset.extra_attrs["import_space_note"]
    assert any("likely unit" in record.getMessage() for record in caplog.records)
    off = import_synset(digits, IPC, path=tmp_path / "set.pt", normalization="uint8", space_check="off")
    assert off.extra_attrs == {**off.extra_attrs, "import_space_check": "off"}
    with pytest.raises(ImportedSetError, match="space_check must be one of error, warn, off"):
        import_synset(digits, IPC, path=tmp_path / "set.pt", normalization="unit", space_check="maybe")


def test_detection_names_every_space_the_statistics_allow():
    """The pure function on synthetic statistics: a CIFAR-100 set in MTT's space is consistent with
    both codes' constants (they differ by less than the statistics resolve), never with unit or uint8."""
    from elf_pipeline.datasets.catalog import RELEASE_STATS

    rng = np.random.default_rng(0)
    real_mean, real_std = np.array([0.507, 0.487, 0.441]), np.array([0.267, 0.256, 0.276])
    pixels = np.clip(rng.normal(real_mean.reshape(1, 3, 1, 1), real_std.reshape(1, 3, 1, 1), (100, 3, 8, 8)), 0, 1)
    mtt_mean, mtt_std = (np.array(v).reshape(1, 3, 1, 1) for v in RELEASE_STATS["cifar100"]["mtt"])
    spaces = pixel_space.candidate_spaces(real_mean, real_std, RELEASE_STATS["cifar100"])
    detection = pixel_space.detect((pixels - mtt_mean) / mtt_std, real_mean, real_std, spaces)
    consistent = detection.consistent()
    assert {"published:mtt", "published:dc", "dataset"} <= set(consistent)
    assert "unit" not in consistent and "uint8" not in consistent
    assert detection.slope is None and detection.whitening is None  # no spectrum given: not measured


# --------------------------------------------------------------------------- side information per image

def test_side_information_counts_features_soft_labels_and_a_running_teacher():
    from elf_pipeline.artifacts.side_info import human_bytes, side_information

    cifar = (3, 32, 32)
    elf = side_information(cifar, 100, 10, soft_labels=False, feature_shape=(512, 4, 4), teacher_param_bytes=None)
    assert elf == {"image_bytes": 3072, "side_info_bytes_per_image": 32768.0, "teacher_param_bytes": 0,
                   "side_info": "features 512x4x4 float32"}
    assert human_bytes(elf["image_bytes"]) == "3 KiB" and human_bytes(elf["side_info_bytes_per_image"]) == "32 KiB"
    soft = side_information(cifar, 100, 10, soft_labels=True, feature_shape=None, teacher_param_bytes=None)
    assert soft["side_info_bytes_per_image"] == 40.0 and soft["side_info"] == "soft labels 10 float32"
    kd = side_information(cifar, 100, 10, soft_labels=False, feature_shape=None, teacher_param_bytes=4_000_000)
    assert kd["side_info_bytes_per_image"] == 40_000.0 and kd["teacher_param_bytes"] == 4_000_000
    plain = side_information(cifar, 100, 10, soft_labels=False, feature_shape=None, teacher_param_bytes=None)
    assert plain["side_info_bytes_per_image"] == 0.0 and plain["side_info"] == "none"


@pytest.mark.parametrize("evaluation, kind", [
    ({"loss_mode": "task"}, "none"),
    ({"loss_mode": "front_rear_task", "feature_loss": "ce"}, "features"),
    ({"loss_mode": "task", "lambda_kd": 0.5, "kd_temperature": 2.0}, "teacher"),
])
def test_student_rows_give_side_information_and_training_time(evaluation, kind, digits_h5, synset_h5, features_h5,
                                                               teacher_pt, tmp_path):
    from elf_pipeline.stages.students import train_students

    identity = {"dataset": "digits", "method": "random", "ipc": 2, "teacher": "tiny", "evaluation": "e"}
    frame = train_students(digits_h5, synset_h5, features_h5 if kind == "features" else None, "convnet-w4",
                           {**evaluation, "teacher": "tiny"} if kind != "none" else evaluation,
                           {"epochs": 1, "batch_size": 8, "eval_batch_size": 128, "dsa": False}, [0],
                           tmp_path / "rows.parquet", identity, device="cpu",
                           teacher_model=teacher_pt if kind == "teacher" else None)
    row = frame.iloc[0]
    assert row["image_bytes"] == 16 * 16 and row["train_seconds"] > 0
    if kind == "none":
        assert row["side_info_bytes_per_image"] == 0 and row["side_info"] == "none"
    elif kind == "features":
        shape = tuple(int(v) for v in row["teacher_feature_shape"].split("x"))
        assert row["side_info_bytes_per_image"] == 4 * np.prod(shape) and row["side_info"].startswith("features ")
    else:
        assert row["teacher_param_bytes"] > 0
        assert row["side_info_bytes_per_image"] == pytest.approx(row["teacher_param_bytes"] / row["num_synthetic"])


def test_report_tables_show_side_information_and_the_import_check():
    from elf_pipeline.stages.report.imports import cost_tables, import_tables

    base = {"dataset": "cifar10", "ipc": 10, "image_bytes": 3072, "train_seconds": 12.0, "seed": 0}
    runs = pd.DataFrame([
        {**base, "method": "import", "evaluation": "baseline", "arch": "convnet", "side_info_bytes_per_image": 0.0,
         "side_info": "none", "import_space_check": "warning", "import_space_note": "x.pt: fits poorly"},
        {**base, "method": "import", "evaluation": "elf", "arch": "resnet18", "side_info_bytes_per_image": 32768.0,
         "side_info": "features 512x4x4 float32", "import_space_check": "warning", "import_space_note": "x.pt: fits poorly"},
        {**base, "method": "import", "evaluation": "elf", "arch": "convnet", "side_info_bytes_per_image": 8192.0,
         "side_info": "features 128x4x4 float32", "import_space_check": "warning", "import_space_note": "x.pt: fits poorly"},
        {**base, "method": "dm", "evaluation": "elf", "arch": "convnet", "side_info_bytes_per_image": 8192.0,
         "side_info": "features 128x4x4 float32", "import_space_check": None, "import_space_note": None},
    ])
    (cost,) = cost_tables(runs)
    elf = cost.frame[(cost.frame["method"] == "import") & (cost.frame["evaluation"] == "elf")].iloc[0]
    assert elf["side info / image"] == "8 KiB–32 KiB" and elf["image"] == "3 KiB" and elf["train s / student"] == "12.0"
    (imported,) = import_tables(runs)
    assert imported.frame.to_dict("records") == [{"dataset": "cifar10", "method": "import", "IPC": "10",
                                                  "pixel space": "warning", "note": "x.pt: fits poorly"}]
    assert cost_tables(runs.drop(columns=["side_info_bytes_per_image"])) == []


# --------------------------------------------------------------------------- published accuracy as a check

EXPECTED = {"accuracy": {"convnet": 0.60, "resnet18": 0.50}, "source": "the release's paper, Table 1"}


def test_an_expected_block_is_validated_and_recorded(digits, release, tmp_path):
    images, labels = release
    torch.save({"images": images, "labels": labels}, tmp_path / "set.pt")
    synset = import_synset(digits, IPC, path=tmp_path / "set.pt", normalization="unit", expected=EXPECTED)
    assert json.loads(synset.extra_attrs["imported_expected"]) == {**EXPECTED, "tolerance": 0.03}
    for bad, message in [({"accuracy": {"convnet": 65.1}, "source": "x"}, r"expected.accuracy.convnet must be a fraction"),
                         ({"accuracy": {"convnet": 0.6}}, "expected.source must say where the numbers come from"),
                         ({"accuracy": {}, "source": "x"}, "expected.accuracy must map architectures"),
                         ({**EXPECTED, "tolerance": 2}, r"expected.tolerance must be a fraction in \[0, 1\)")]:
        with pytest.raises(ImportedSetError, match=message):
            import_synset(digits, IPC, path=tmp_path / "set.pt", normalization="unit", expected=bad)


def test_the_report_flags_a_baseline_below_the_published_accuracy():
    from elf_pipeline.stages.report.imports import expected_tables

    recorded = json.dumps({**EXPECTED, "tolerance": 0.03})
    rows = [{"dataset": "cifar10", "method": "import", "ipc": 10, "arch": arch, "evaluation": evaluation, "seed": seed,
             "test_acc": acc + 0.01 * seed, "imported_expected": recorded, "import_space_check": "ok"}
            for arch, evaluation, acc in [("convnet", "baseline", 0.59), ("resnet18", "baseline", 0.40),
                                          ("resnet18", "elf", 0.52)] for seed in (0, 1)]
    (table,) = expected_tables(pd.DataFrame(rows))
    records = {r["arch"]: r for r in table.frame.to_dict("records")}
    assert records["convnet"]["check"] == "ok" and records["convnet"]["baseline (%)"] == "59.5 ± 0.7"
    assert records["resnet18"]["check"] == "⚠ 9.5 points below" and records["resnet18"]["published (%)"] == "50.0"
    assert records["resnet18"]["checks passed"] == "shape, finite values, labels, IPC; pixel space"
    assert records["resnet18"]["source"] == "the release's paper, Table 1"


# --------------------------------------------------------------------------- label order checked with the teacher

@pytest.fixture(scope="module")
def digits_teacher(digits, tmp_path_factory) -> Path:
    """A small teacher trained on every digits training image (test accuracy above 0.9)."""
    from elf_pipeline.stages.teachers import train_teacher

    folder = tmp_path_factory.mktemp("teacher")
    train_teacher(digits, folder / "model.pt", folder / "history.json", "convnet-w8",
                  {"epochs": 8, "batch_size": 64, "dsa": False}, seed=0, device="cpu")
    return folder / "model.pt"


SWAP = [1, 0, 2, 3, 4, 5, 6, 7, 8, 9]


def _imported_features(digits, teacher, folder: Path, labels_of, **block) -> tuple[Path, Path]:
    """A released set (IPC 10) in the DC layout with its labels passed through ``labels_of``,
    imported, then its teacher features extracted."""
    from elf_pipeline.stages.features import extract_features

    images, labels = released(10, SIZE, seed=5)
    torch.save({"data": [[images, labels_of(labels)]]}, folder / "res.pt")
    synset = folder / "synset.h5"
    run_distill(digits, synset, "import", 10, {"path": str(folder / "res.pt"), "normalization": "unit", **block},
                device="cpu")
    out = folder / "features.h5"
    extract_features(synset, teacher, out, device="cpu")
    return synset, out


def test_two_swapped_classes_fail_naming_the_permutation(digits, digits_teacher, tmp_path):
    from elf_pipeline.infra.io import ArtifactError

    swap = torch.tensor(SWAP)
    with pytest.raises(ArtifactError) as error:
        _imported_features(digits, digits_teacher, tmp_path, lambda labels: swap[labels])
    pattern = (re.escape(f"{tmp_path / 'res.pt'}: the teacher ({digits_teacher}) agrees with a permutation of the labels "
                         "on ") + r"\d+%" + re.escape(" of the images against ") + r"\d+%"
               + re.escape(" in the file's order (label 0 -> class 1, label 1 -> class 0); if the file's classes are in "
                           f"another order, accept it with label_map: {SWAP} in the import block (or label_check: warn)"))
    assert re.fullmatch(pattern, str(error.value)), str(error.value)
    assert not (tmp_path / "features.h5").exists()


def test_the_label_check_accepts_a_label_map_or_warns(digits, digits_teacher, tmp_path):
    from elf_pipeline.artifacts.feature_file import features_label_order

    swap = torch.tensor(SWAP)
    (tmp_path / "map").mkdir()
    _, mapped = _imported_features(digits, digits_teacher, tmp_path / "map", lambda labels: swap[labels], label_map=SWAP)
    recorded = features_label_order(mapped)
    assert recorded["label_check"] == "identity"
    order = json.loads(recorded["label_order"])
    assert order["permutation"] == list(range(10)) and len(order["per_class"]) == 10 and order["agreement"] > 0.8
    (tmp_path / "warn").mkdir()
    _, warned = _imported_features(digits, digits_teacher, tmp_path / "warn", lambda labels: swap[labels],
                                   label_check="warn")
    assert features_label_order(warned)["label_check"] == "likely"
    assert json.loads(features_label_order(warned)["label_order"])["permutation"] == SWAP


def test_a_correctly_labelled_release_passes_the_label_check(digits, digits_teacher, tmp_path):
    from elf_pipeline.artifacts.feature_file import features_label_order

    _, features = _imported_features(digits, digits_teacher, tmp_path, lambda labels: labels)
    assert features_label_order(features)["label_check"] == "identity"


def test_label_order_on_small_sets_is_at_most_a_warning():
    from elf_pipeline.engine.label_order import check_label_order

    labels = np.arange(10)
    swapped = np.array(SWAP)[labels]  # IPC 1: a single swap moves two images, too few to be sure
    assert check_label_order(swapped, labels, 10).verdict == "possible"
    assert check_label_order(labels, labels, 10).verdict == "identity"
    ten = np.repeat(np.arange(10), 10)
    assert check_label_order(np.array(SWAP)[ten], ten, 10).verdict == "likely"


def test_a_label_map_must_be_a_permutation(digits, release, tmp_path):
    images, labels = release
    torch.save({"images": images, "labels": labels}, tmp_path / "set.pt")
    with pytest.raises(ImportedSetError, match=r"label_map must list each class 0..9 once"):
        import_synset(digits, IPC, path=tmp_path / "set.pt", normalization="unit", label_map=[0] * 10)
    with pytest.raises(ImportedSetError, match="label_check must be one of error, warn, off"):
        import_synset(digits, IPC, path=tmp_path / "set.pt", normalization="unit", label_check="never")
    mapped = import_synset(digits, IPC, path=tmp_path / "set.pt", normalization="unit", label_map=SWAP)
    assert json.loads(mapped.extra_attrs["imported_label_map"]) == SWAP

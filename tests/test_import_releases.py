"""Releases of modern methods, in their real file layouts (tensors written with ``torch.save``):
DATM/MTT's ``images_best.pt`` with soft ``labels_best.pt`` and ``lr_best.pt``, and sets released in
ZCA space; the whitening itself against kornia's ``ZCAWhitening``."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from elf_pipeline.artifacts.data_file import load_split
from elf_pipeline.artifacts.synset import read_synset, synset_learned_lr, synset_zca_eps
from elf_pipeline.engine.zca import fit_zca, fit_zca_to_data
from elf_pipeline.stages.distill import run_distill
from elf_pipeline.stages.distill.imported import ImportedSetError
from elf_pipeline.stages.students import student_test_split

IPC, CLASSES = 2, 10


def _release(tmp_path, soft=None, lr=0.0125):
    """A DATM-style release: images (N, C, H, W) float in the normalised space, soft labels, the lr."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(IPC * CLASSES, 1, 16, 16, generator=generator)
    if soft is None:
        logits = torch.randn(IPC * CLASSES, CLASSES, generator=generator)
        logits[torch.arange(IPC * CLASSES), torch.arange(IPC * CLASSES) // IPC] += 4.0  # class-major, as released
        soft = torch.softmax(logits, dim=1)
    torch.save(images, tmp_path / "images_best.pt")
    torch.save(soft, tmp_path / "labels_best.pt")
    torch.save(torch.tensor(lr), tmp_path / "lr_best.pt")
    return images, soft


def _import(digits_h5, tmp_path, **extra):
    block = {"path": str(tmp_path / "images_best.pt"), "labels_path": str(tmp_path / "labels_best.pt"),
             "lr_path": str(tmp_path / "lr_best.pt"), "normalization": "dataset",
             "space_check": "warn", **extra}  # white-noise images look whitened to the pixel-space check
    out = tmp_path / "synset.h5"
    run_distill(digits_h5, out, "import", IPC, block, device="cpu")
    return out


def test_datm_release_round_trips_with_soft_labels_and_learned_lr(digits_h5, tmp_path):
    images, soft = _release(tmp_path)
    out = _import(digits_h5, tmp_path)
    stored_images, stored_labels = read_synset(out)
    assert stored_labels.dtype == torch.float32 and stored_labels.shape == (IPC * CLASSES, CLASSES)
    order = torch.argsort(soft.argmax(dim=1), stable=True)
    torch.testing.assert_close(stored_images, images[order])
    torch.testing.assert_close(stored_labels, soft[order])
    assert synset_learned_lr(out) == pytest.approx(0.0125)
    with h5py.File(out) as h5:
        assert h5.attrs["label_kind"] == "soft" and h5.attrs["imported_lr_from"].endswith("lr_best.pt")


@pytest.mark.parametrize("labels, message", [
    (torch.full((IPC * CLASSES, CLASSES), 0.2), r"labels_best.pt: soft label rows must sum to 1 \(row 0 sums to 2"),
    (torch.full((IPC * CLASSES, 5), 0.2), r"labels_best.pt: soft labels have shape \(20, 5\), expected N x 10"),
    (torch.cat([torch.full((IPC * CLASSES, 1), -0.5), torch.full((IPC * CLASSES, 1), 1.5),
                torch.zeros(IPC * CLASSES, 8)], dim=1), "labels_best.pt: soft labels hold negative entries"),
])
def test_bad_soft_labels_are_one_line_naming_the_file(digits_h5, tmp_path, labels, message):
    _release(tmp_path, soft=labels)
    with pytest.raises(ImportedSetError, match=message) as error:
        _import(digits_h5, tmp_path)
    assert "\n" not in str(error.value) and not (tmp_path / "synset.h5").exists()


@pytest.mark.parametrize("lr", [-0.01, 0.0, [0.01, 0.02], float("nan")])
def test_a_learned_lr_that_is_not_a_positive_scalar_names_the_file(digits_h5, tmp_path, lr):
    _release(tmp_path, lr=lr)
    with pytest.raises(ImportedSetError, match=r"lr_best.pt: the learned lr must be one positive, finite number"):
        _import(digits_h5, tmp_path)


def test_zca_release_keeps_whitened_values_and_students_test_whitened(digits_h5, tmp_path):
    _release(tmp_path)
    whitening = fit_zca_to_data(digits_h5, 0.1)
    train_images = load_split(digits_h5, "train")[0][: IPC * CLASSES]
    whitened = whitening.transform(train_images)
    torch.save(whitened, tmp_path / "images_best.pt")
    out = _import(digits_h5, tmp_path, zca={"eps": 0.1})
    assert synset_zca_eps(out) == pytest.approx(0.1)
    order = torch.argsort(torch.load(tmp_path / "labels_best.pt").argmax(dim=1), stable=True)
    torch.testing.assert_close(read_synset(out)[0], whitened[order])  # no pixel-space conversion
    test_images, _, _, used = student_test_split(digits_h5, out)
    torch.testing.assert_close(test_images, whitening.transform(load_split(digits_h5, "test")[0]))
    assert used is not None and used.eps == pytest.approx(0.1)
    with pytest.raises(ImportedSetError, match="declare normalization: dataset"):
        _import(digits_h5, tmp_path, zca={"eps": 0.1}, normalization="unit")


def test_zca_matches_kornia_zca_whitening():
    import kornia  # a test dependency (the dev extra)

    generator = torch.Generator().manual_seed(1)
    images = torch.rand(64, 3, 4, 4, generator=generator) + torch.linspace(0, 1, 48).reshape(1, 3, 4, 4)
    reference = kornia.enhance.ZCAWhitening(eps=0.1).fit(images)
    ours = fit_zca(images, eps=0.1)
    torch.testing.assert_close(ours.transform(images), reference(images), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.inverse(ours.transform(images)), images, atol=1e-4, rtol=1e-4)
    assert np.isfinite(ours.matrix.numpy()).all()

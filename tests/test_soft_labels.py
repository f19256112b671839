"""Soft-label synthetic sets: stored as N x C probabilities, trained with soft cross-entropy, with a
learned student lr (``train.lr: learned``) and static teacher relabelling (``relabel: teacher``)."""

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from elf_pipeline.artifacts.checkpoint import load_model
from elf_pipeline.artifacts.data_file import load_split
from elf_pipeline.artifacts.synset import SyntheticSet, read_synset, synset_label_kind, write_synset
from elf_pipeline.infra.errors import ArtifactError, InputError
from elf_pipeline.stages.students import train_students

TRAIN = {"epochs": 3, "batch_size": 10, "dsa": False}
EPOCHS = 30  # where the training itself is compared: long enough for the labels to tell


def _write(path, digits_h5, images, labels, **attrs):
    write_synset(path, SyntheticSet(images, labels, extra_attrs=attrs), "import", 2, {}, str(digits_h5))
    return path


def _train(digits_h5, synset, tmp_path, name, evaluation=None, teacher_model=None, **train):
    return train_students(digits_h5, synset, None, "convnet-w8", evaluation or {"loss_mode": "task"}, {**TRAIN, **train},
                          [0], tmp_path / f"{name}.parquet", {"evaluation": name}, device="cpu",
                          teacher_model=teacher_model).iloc[0]


def _probabilities(model, digits_h5) -> torch.Tensor:
    """The student's softmax on the digits test split."""
    images, _, _ = load_split(digits_h5, "test")
    with torch.no_grad():
        return torch.softmax(model.eval()(images), dim=1)


def _student(spy, digits_h5) -> torch.Tensor:
    """The test-split probabilities of the one student the last ``_train`` call trained."""
    models = spy.take()
    assert models, "the student stage tested no student"
    return _probabilities(models[0], digits_h5)


@pytest.mark.float_path
def test_one_hot_soft_labels_train_like_hard_labels(digits_h5, synset_h5, tmp_path, student_spy):
    images, labels = read_synset(synset_h5)
    soft = _write(tmp_path / "soft.h5", digits_h5, images, F.one_hot(labels, 10).float())
    assert synset_label_kind(soft) == "soft" and synset_label_kind(synset_h5) == "hard"
    stored, _ = read_synset(soft)[1], None
    assert stored.dtype == torch.float32 and stored.shape == (len(labels), 10)
    hard_row = _train(digits_h5, synset_h5, tmp_path, "hard", epochs=EPOCHS)
    hard = _student(student_spy, digits_h5)
    soft_row = _train(digits_h5, soft, tmp_path, "soft", epochs=EPOCHS)
    one_hot = _student(student_spy, digits_h5)
    assert hard_row["label_kind"] == "hard" and soft_row["label_kind"] == "soft"
    # soft cross-entropy on one-hot rows is the hard loss: the same seed trains the same student, up
    # to float rounding (measured: identical probabilities)
    assert torch.allclose(one_hot, hard, atol=1e-4)
    # a genuinely soft target trains a different, less confident student (measured, 30 epochs: mean
    # top probability 0.146 against the hard student's 0.191, probabilities apart by up to 0.147)
    smooth = _write(tmp_path / "smooth.h5", digits_h5, images, 0.5 * F.one_hot(labels, 10).float() + 0.05)
    assert read_synset(smooth)[1].sum(dim=1).allclose(torch.ones(len(labels)))
    assert _train(digits_h5, smooth, tmp_path, "smooth", epochs=EPOCHS)["label_kind"] == "soft"
    smoothed = _student(student_spy, digits_h5)
    assert (smoothed - hard).abs().max() > 0.05
    assert smoothed.max(dim=1).values.mean() < hard.max(dim=1).values.mean() - 0.02


@pytest.mark.parametrize("labels, message", [
    (np.full((20, 10), 0.2, dtype=np.float32), "rows must sum to 1 \\(row 0 sums to 2"),
    (np.eye(10, dtype=np.float32)[np.arange(20) % 10] * 2 - np.eye(10, dtype=np.float32)[np.arange(20) % 10],
     None),
    (np.c_[np.full((20, 1), -0.1), np.full((20, 1), 1.1), np.zeros((20, 8))].astype(np.float32), "negative entries"),
])
def test_bad_soft_labels_name_the_file(digits_h5, synset_h5, tmp_path, labels, message):
    images, _ = read_synset(synset_h5)
    path = tmp_path / "bad.h5"
    _write(path, digits_h5, images, torch.from_numpy(labels))
    if message is None:  # a valid one-hot table
        assert read_synset(path)[1].shape == (20, 10)
        return
    with pytest.raises(ArtifactError, match=message) as error:
        read_synset(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_wrong_class_count_is_refused(digits_h5, synset_h5, tmp_path):
    images, labels = read_synset(synset_h5)
    path = _write(tmp_path / "five.h5", digits_h5, images, torch.full((len(labels), 5), 0.2))
    with pytest.raises(InputError, match="soft labels over 5 classes, but the dataset has 10"):
        _train(digits_h5, path, tmp_path, "five")


def test_learned_lr_is_used_and_recorded(digits_h5, synset_h5, tmp_path):
    images, labels = read_synset(synset_h5)
    with_lr = _write(tmp_path / "lr.h5", digits_h5, images, labels, syn_lr=0.0123)
    row = _train(digits_h5, with_lr, tmp_path, "learned", lr="learned")
    assert row["lr_source"] == "learned" and row["train_lr"] == pytest.approx(0.0123)
    assert _train(digits_h5, with_lr, tmp_path, "plain")["lr_source"] == "config"
    with pytest.raises(InputError, match="carries no learned lr"):
        _train(digits_h5, synset_h5, tmp_path, "missing", lr="learned")


def test_relabel_teacher_trains_on_the_teachers_softmax(digits_h5, synset_h5, teacher_pt, tmp_path, student_spy):
    row = _train(digits_h5, synset_h5, tmp_path, "relabel", {"loss_mode": "task", "relabel": "teacher", "teacher": "t"},
                 teacher_model=teacher_pt)
    relabelled = _student(student_spy, digits_h5)
    assert row["label_kind"] == "teacher" and row["relabel"] == "teacher"
    # the same training on a set whose stored labels are the teacher's softmax trains the same student
    images, labels = read_synset(synset_h5)
    teacher, _ = load_model(teacher_pt, "cpu")
    with torch.no_grad():
        softmax = torch.softmax(teacher.eval()(images), dim=1)
    assert (softmax.argmax(dim=1) != labels).any() or (softmax.max(dim=1).values < 0.9).any()  # not the hard labels
    _train(digits_h5, _write(tmp_path / "teacher_soft.h5", digits_h5, images, softmax), tmp_path, "stored")
    stored = _student(student_spy, digits_h5)
    _train(digits_h5, synset_h5, tmp_path, "hard")
    hard = _student(student_spy, digits_h5)
    # measured: the two students' test probabilities agree exactly; the hard-label student's lie up to 0.046 away
    assert torch.allclose(relabelled, stored, atol=1e-4)
    assert (relabelled - hard).abs().max() > 0.01  # and not the student of the hard labels
    with pytest.raises(InputError, match="no teacher checkpoint"):
        _train(digits_h5, synset_h5, tmp_path, "x", {"loss_mode": "task", "relabel": "teacher"})
    with h5py.File(synset_h5) as h5:  # the set itself is untouched
        assert h5["labels"].dtype == np.int64

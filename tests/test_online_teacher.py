"""``teacher_targets: online``: the teacher runs on the augmented batch the student sees instead of
the cached features of the un-augmented images."""

import pandas as pd
import pytest
import torch
from conftest import TEACHER_ARCH

from elf_pipeline.artifacts.checkpoint import load_model
from elf_pipeline.artifacts.data_file import load_split
from elf_pipeline.artifacts.feature_file import load_features
from elf_pipeline.artifacts.synset import read_synset
from elf_pipeline.config import ConfigError
from elf_pipeline.config.checks import check_config
from elf_pipeline.engine.augment import DSAConfig, dsa
from elf_pipeline.engine.elf import ElfLoss, Evaluation, OnlineTeacher
from elf_pipeline.infra.io import sha256_file
from elf_pipeline.models import build
from elf_pipeline.stages.students import train_students

ELF = {"loss_mode": "front_rear_task", "teacher": "t"}


@pytest.fixture(scope="module")
def synthetic(synset_h5):
    return read_synset(synset_h5)


def _online(teacher_pt, images, layer=None) -> OnlineTeacher:
    model, _ = load_model(teacher_pt)
    return OnlineTeacher(model, layer, images[:1])


@pytest.mark.parametrize("layer", [None, "block2"])
def test_online_targets_equal_cached_features_without_augmentation(teacher_pt, features_h5, synset_h5, synthetic, layer):
    images, _ = synthetic
    cached = load_features(features_h5, layer, synset_h5, len(images))
    online = _online(teacher_pt, images, layer)
    assert online.layer == cached.layer and online.feature_shape == tuple(cached.values.shape[1:])
    assert torch.allclose(online(images), cached.values, atol=1e-5)
    # and in a shuffled batch, row by row
    index = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:7]
    assert torch.allclose(online(images[index]), cached.values[index], atol=1e-5)


def test_online_targets_follow_the_augmentation(teacher_pt, features_h5, synset_h5, synthetic):
    images, _ = synthetic
    cached = load_features(features_h5, None, synset_h5, len(images)).values
    online = _online(teacher_pt, images)
    augmented = dsa(images, DSAConfig(strategy="crop"), torch.Generator().manual_seed(3))
    assert not torch.equal(augmented, images)
    targets = online(augmented)
    assert not torch.allclose(targets, cached, atol=1e-3)
    assert torch.allclose(targets, online.model.front(augmented), atol=1e-6)
    assert not targets.requires_grad and not any(p.requires_grad for p in online.model.parameters())


def test_elf_loss_uses_online_targets_and_hides_the_teacher_from_the_optimiser(teacher_pt, features_h5, synset_h5, synthetic):
    images, labels = synthetic
    cached = load_features(features_h5, None, synset_h5, len(images)).values
    online = _online(teacher_pt, images)
    student = build("convnet", 1, 10, images.shape[-1])
    shape = tuple(student.front(images[:1]).shape[1:])
    spec = Evaluation(**ELF, teacher_targets="online")
    with_online = ElfLoss(spec, None, shape, online)
    with_cache = ElfLoss(Evaluation(**ELF), cached, shape)
    assert with_online.adapted and with_cache.adapted  # convnet (128 ch) vs the convnet-w8 teacher
    with_cache.load_state_dict(with_online.state_dict())  # same adapters: only the targets differ
    teacher_ids = {id(p) for p in online.model.parameters()}
    assert not teacher_ids & {id(p) for p in with_online.parameters()}
    index = torch.arange(len(images))
    plain = (with_online(student, images, labels, index), with_cache(student, images, labels, index))
    assert torch.allclose(*plain, atol=1e-5)
    augmented = dsa(images, DSAConfig(strategy="crop"), torch.Generator().manual_seed(3))
    shifted = (with_online(student, augmented, labels, index), with_cache(student, augmented, labels, index))
    assert not torch.allclose(*shifted, atol=1e-4)


def _train(digits_h5, synset_h5, out, evaluation, dsa_block, features=None, teacher_model=None, seeds=(0,), **train):
    return train_students(digits_h5, synset_h5, features, "convnet-w8", evaluation,
                          {"epochs": 2, "batch_size": 10, "dsa": dsa_block, **train}, list(seeds), out,
                          {"evaluation": "elf"}, device="cpu", teacher_model=teacher_model)


def _probabilities(models, digits_h5) -> torch.Tensor:
    images, _, _ = load_split(digits_h5, "test")
    with torch.no_grad():
        return torch.stack([torch.softmax(model.eval()(images), dim=1) for model in models])


def test_students_with_online_targets_record_the_protocol(digits_h5, synset_h5, features_h5, teacher_pt, tmp_path,
                                                          student_spy):
    online = _train(digits_h5, synset_h5, tmp_path / "online.parquet", {**ELF, "teacher_targets": "online"}, False,
                    teacher_model=teacher_pt)
    cached = _train(digits_h5, synset_h5, tmp_path / "cached.parquet", ELF, False, features=features_h5)
    online_student, cached_student = _probabilities(student_spy.take(), digits_h5)
    row, reference = online.iloc[0], cached.iloc[0]
    assert row["teacher_targets"] == "online" and reference["teacher_targets"] == "cached"
    assert row["teacher_arch"] == TEACHER_ARCH and row["teacher_layer"] == "block3"
    assert row["teacher_feature_shape"] == reference["teacher_feature_shape"] == "8x2x2"
    assert pd.isna(row["features_sha256"]) and row["teacher_sha256"] == sha256_file(teacher_pt)
    assert row["teacher_test_acc"] == pytest.approx(reference["teacher_test_acc"])
    # without augmentation the targets agree, so the two runs train alike
    # (measured: identical test probabilities)
    assert torch.allclose(online_student, cached_student, atol=1e-3)
    assert pd.read_parquet(tmp_path / "online.parquet")["teacher_targets"].tolist() == ["online"]


@pytest.mark.float_path
def test_online_targets_under_augmentation_and_vectorised_seeds(digits_h5, synset_h5, teacher_pt, tmp_path,
                                                               student_spy):
    loop = _train(digits_h5, synset_h5, tmp_path / "loop.parquet", {**ELF, "teacher_targets": "online"}, True,
                  teacher_model=teacher_pt, seeds=(0, 1), vectorize_seeds=False)
    vectorised = _train(digits_h5, synset_h5, tmp_path / "vmap.parquet", {**ELF, "teacher_targets": "online"}, True,
                        teacher_model=teacher_pt, seeds=(0, 1), vectorize_seeds=True)
    assert set(vectorised["trainer"]) == {"vectorized"} and set(loop["trainer"]) == {"loop"}
    # the test split has 359 images: every accuracy is a count of correct images over it
    assert all(abs(acc * 359 - round(acc * 359)) < 1e-6 for acc in vectorised["test_acc"])
    loop_students, vectorised_students = _probabilities(student_spy.take(), digits_h5).split(2)
    # the same students from either trainer, up to float rounding (measured: probabilities within 5e-8)
    assert torch.allclose(vectorised_students, loop_students, atol=1e-3)


def test_online_without_a_checkpoint_or_with_a_bad_setting_fails_clearly(digits_h5, synset_h5, tmp_path):
    with pytest.raises(ValueError, match=r"teacher_targets: online or lambda_kd > 0\) but no teacher checkpoint"):
        _train(digits_h5, synset_h5, tmp_path / "x.parquet", {**ELF, "teacher_targets": "online"}, False)
    with pytest.raises(ValueError, match="unknown teacher_targets 'live'"):
        Evaluation(**ELF, teacher_targets="live")


def test_config_check_rejects_online_targets_without_a_teacher():
    config = {"datasets": {"d": {"source": "digits", "image_size": 16}},
              "distillation": {"ipc": [1], "methods": {"random": {}}}, "teachers": {},
              "students": {"archs": ["convnet"], "seeds": [0], "train": {"epochs": 1}},
              "evaluations": {"baseline": {"loss_mode": "task", "teacher_targets": "online"}}}
    with pytest.raises(ConfigError, match="config key evaluations.baseline.teacher_targets: online teacher targets need a teacher"):
        check_config(config)

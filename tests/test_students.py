import h5py
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from conftest import NUM_CLASSES, SYN_IPC, TEACHER_ARCH

from elf_pipeline.artifacts.synset import read_synset
from elf_pipeline.engine.elf import ElfLoss, Evaluation
from elf_pipeline.engine.losses import feature_loss
from elf_pipeline.models import build
from elf_pipeline.models.adapter import FeatureAdapter
from elf_pipeline.stages.students import train_students

TRAIN = {"epochs": 2, "batch_size": 8, "eval_batch_size": 128, "dsa": True}
ELF = {"loss_mode": "front_rear_task", "feature_loss": "ce", "lambda_front": 0.5, "lambda_rear": 2.0}
IDENTITY = {"dataset": "digits", "method": "random", "ipc": SYN_IPC, "teacher": "tiny", "evaluation": "elf"}
REQUIRED_COLUMNS = ["dataset", "method", "ipc", "teacher", "arch", "evaluation", "seed", "test_acc", "train_seconds",
                    "adapter", "loss_mode", "feature_loss", "lambda_front", "lambda_rear", "train_epochs", "train_lr"]
N = NUM_CLASSES * SYN_IPC


def _student(arch="convnet-w8-d2", split=None):
    return build(arch, 1, NUM_CLASSES, 16, split=split)


def _batch(n=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 16, 16, generator=gen), torch.arange(n) % NUM_CLASSES, torch.arange(n)


# --------------------------------------------------------------------------- ElfLoss

def test_mismatched_shapes_create_adapters_that_learn():
    model = _student()  # front: 8 x 4 x 4
    features = torch.randn(6, 16, 2, 2)
    objective = ElfLoss(Evaluation(**ELF, adapter="pair"), features, (8, 4, 4))
    assert isinstance(objective.to_teacher, FeatureAdapter) and isinstance(objective.from_teacher, FeatureAdapter)
    assert objective.to_teacher.out_shape == (16, 2, 2) and objective.from_teacher.out_shape == (8, 4, 4)
    assert objective.adapted
    x, y, index = _batch()
    objective(model, x, y, index).backward()
    adapter_params = list(objective.parameters())
    assert len(adapter_params) == 4  # weight and bias of both 1x1 convs
    for p in adapter_params:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("mode, to_teacher, from_teacher", [
    ("front_rear_task", True, True), ("front_task", True, False), ("rear_task", False, True),
    ("front_rear", True, True), ("task", False, False),
])
def test_adapters_only_for_the_terms_in_use(mode, to_teacher, from_teacher):
    objective = ElfLoss(Evaluation(loss_mode=mode, adapter="pair"), torch.randn(4, 32), (8, 4, 4))
    assert (objective.to_teacher is not None) == to_teacher
    assert (objective.from_teacher is not None) == from_teacher
    assert objective.adapted == (to_teacher or from_teacher)


def test_coupled_adapter_one_map_trained_by_the_rear_term_imitated_by_the_front():
    model = _student()  # front: 8 x 4 x 4, post-ReLU
    features = torch.relu(torch.randn(6, 16, 2, 2, generator=torch.Generator().manual_seed(4)))
    objective = ElfLoss(Evaluation(**ELF, adapter="coupled"), features, (8, 4, 4), student_nonnegative=True)
    assert objective.to_teacher is None and isinstance(objective.from_teacher, FeatureAdapter)
    assert objective.from_teacher.out_shape == (8, 4, 4) and objective.from_teacher.nonnegative and objective.adapted
    x, y, index = _batch()
    mapped = objective.from_teacher(features[index])
    assert (mapped >= 0).all()  # a valid ce target in the student's own (post-ReLU) space
    expected = (F.cross_entropy(model(x), y) + 0.5 * feature_loss("ce", model.front(x), mapped.detach())
                + 2.0 * F.cross_entropy(model.rear(mapped), y))
    got = objective(model, x, y, index)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    # the front term does not train the adapter: with only the front term on, it gets no gradient
    front_only = ElfLoss(Evaluation(**{**ELF, "loss_mode": "front_task"}, adapter="coupled"), features, (8, 4, 4))
    front_only(model, x, y, index).backward()
    assert all(p.grad is None for p in front_only.parameters())
    # with the rear term on, it does
    model.zero_grad()
    got.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in objective.parameters())


def test_unknown_adapter_form_is_refused():
    with pytest.raises(ValueError, match="unknown adapter 'tied'.*pair, coupled"):
        Evaluation(**ELF, adapter="tied")


def test_matching_shapes_need_no_adapter_and_loss_is_the_sum_of_terms():
    model = _student().eval()
    x, y, index = _batch()
    with torch.no_grad():
        features = torch.randn(6, 8, 4, 4, generator=torch.Generator().manual_seed(5))
        objective = ElfLoss(Evaluation(**ELF), features, (8, 4, 4))
        assert objective.to_teacher is None and objective.from_teacher is None and not objective.adapted
        assert list(objective.parameters()) == []
        got = objective(model, x, y, index)
        expected = (F.cross_entropy(model(x), y)
                    + 0.5 * feature_loss("ce", model.front(x), features[index])
                    + 2.0 * F.cross_entropy(model.rear(features[index]), y))
        assert got.item() == pytest.approx(expected.item(), rel=1e-5)
        task_only = ElfLoss(Evaluation(), None, (8, 4, 4))(model, x, y, index)
        assert task_only.item() == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-6)
        no_task = ElfLoss(Evaluation(**{**ELF, "loss_mode": "front_rear"}), features, (8, 4, 4))(model, x, y, index)
        assert no_task.item() == pytest.approx((expected - F.cross_entropy(model(x), y)).item(), rel=1e-5)


def test_features_are_looked_up_by_sample_index():
    model = _student().eval()
    x, y, _ = _batch(n=3)
    features = torch.randn(10, 8, 4, 4)
    objective = ElfLoss(Evaluation(loss_mode="front_task", feature_loss="l2"), features, (8, 4, 4))
    index = torch.tensor([7, 2, 9])
    with torch.no_grad():
        expected = F.cross_entropy(model(x), y) + F.mse_loss(model.front(x), features[index])
        assert objective(model, x, y, index).item() == pytest.approx(expected.item(), rel=1e-6)


def test_evaluation_rejects_unknown_loss_mode():
    with pytest.raises(ValueError, match="unknown loss_mode 'front_only'"):
        Evaluation(loss_mode="front_only")
    assert not Evaluation().uses_teacher and Evaluation(loss_mode="rear_task").uses_teacher


# --------------------------------------------------------------------------- train_students

@pytest.fixture(scope="module")
def elf_rows(digits_h5, synset_h5, features_h5, tmp_path_factory):
    out = tmp_path_factory.mktemp("students") / "elf.parquet"
    frame = train_students(digits_h5, synset_h5, features_h5, "convnet-w4", ELF, TRAIN, [0, 1], out, IDENTITY,
                           device="cpu")
    return out, frame


def test_train_students_writes_one_row_per_seed(elf_rows):
    out, frame = elf_rows
    table = pq.read_table(out).to_pandas()
    assert list(table["seed"]) == [0, 1]
    for column in REQUIRED_COLUMNS:
        assert column in table.columns, column
    row = table.iloc[0]
    for key, value in IDENTITY.items():
        assert row[key] == value
    assert row["arch"] == "convnet-w4" and row["loss_mode"] == "front_rear_task" and row["feature_loss"] == "ce"
    assert row["lambda_front"] == 0.5 and row["lambda_rear"] == 2.0
    assert row["train_epochs"] == TRAIN["epochs"] and row["train_lr"] == 0.01
    assert ((table["test_acc"] >= 0) & (table["test_acc"] <= 1)).all()
    assert (table["train_seconds"] > 0).all()
    # the teacher has 8 channels at its split, the convnet-w4 student 4: adapters bridge them
    assert bool(row["adapter"])
    assert row["student_feature_shape"] == "4x2x2" and row["teacher_feature_shape"] == "8x2x2"
    assert row["teacher_arch"] == TEACHER_ARCH and row["teacher_layer"] == "block3"
    assert row["num_synthetic"] == N
    pd.testing.assert_frame_equal(table, frame, check_dtype=False)


def test_same_seed_gives_identical_accuracy(elf_rows, digits_h5, synset_h5, features_h5, tmp_path):
    _, frame = elf_rows
    again = train_students(digits_h5, synset_h5, features_h5, "convnet-w4", ELF, TRAIN, [1], tmp_path / "r.parquet",
                           IDENTITY, device="cpu")
    assert again["test_acc"].iloc[0] == frame["test_acc"].iloc[1]


def test_baseline_needs_no_features(digits_h5, synset_h5, tmp_path):
    identity = {**IDENTITY, "evaluation": "baseline", "teacher": None}
    frame = train_students(digits_h5, synset_h5, None, "convnet-w8", {"loss_mode": "task"}, TRAIN, [0],
                           tmp_path / "b.parquet", identity, device="cpu")
    row = pq.read_table(tmp_path / "b.parquet").to_pandas().iloc[0]
    assert len(frame) == 1
    assert row["loss_mode"] == "task" and not bool(row["adapter"])
    assert row["features_sha256"] is None and row["teacher_arch"] is None and row["teacher_feature_shape"] is None
    assert 0.0 <= row["test_acc"] <= 1.0


def test_student_layer_changes_the_split(digits_h5, synset_h5, features_h5, tmp_path):
    evaluation = {**ELF, "student_layer": "block2", "teacher_layer": "block1"}
    frame = train_students(digits_h5, synset_h5, features_h5, "convnet-w8", evaluation, {**TRAIN, "epochs": 1}, [0],
                           tmp_path / "s.parquet", IDENTITY, device="cpu")
    row = frame.iloc[0]
    assert row["student_layer"] == "block2" and row["teacher_layer"] == "block1"
    assert row["student_feature_shape"] == "8x4x4" and row["teacher_feature_shape"] == "8x8x8"
    assert bool(row["adapter"])


def test_teacher_evaluation_without_features_is_an_error(digits_h5, synset_h5, tmp_path):
    with pytest.raises(ValueError, match="uses a teacher but no features file"):
        train_students(digits_h5, synset_h5, None, "convnet-w8", ELF, TRAIN, [0], tmp_path / "x.parquet", IDENTITY,
                       device="cpu")
    assert not (tmp_path / "x.parquet").exists()


def test_synset_of_another_image_size_is_rejected(digits_h5, tmp_path):
    synset = tmp_path / "s8.h5"
    with h5py.File(synset, "w") as h5:
        h5["images"] = np.zeros((2, 1, 8, 8), dtype=np.float32)
        h5["labels"] = np.array([0, 1])
    with pytest.raises(ValueError, match="do not match dataset"):
        train_students(digits_h5, synset, None, "convnet-w8", {}, TRAIN, [0], tmp_path / "x.parquet", IDENTITY,
                       device="cpu")


def test_synset_fixture_matches_what_students_read(synset_h5):
    images, labels = read_synset(synset_h5)
    assert images.shape == (N, 1, 16, 16) and labels.tolist() == sorted(labels.tolist())

import math

import pytest
import torch
import torch.nn.functional as F

from elf_pipeline.engine.losses import (
    FEATURE_LOSSES,
    LOSS_MODES,
    feature_ce,
    feature_ce_softmax,
    feature_cos,
    feature_cos_batch,
    feature_l1,
    feature_l2,
    feature_loss,
)
from elf_pipeline.infra.errors import InputError


def _softmax(values):
    exps = [math.exp(v) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def _log_softmax(values):
    log_total = math.log(sum(math.exp(v) for v in values))
    return [v - log_total for v in values]


def _hand_ce(student_rows, teacher_rows):
    """Mean over rows of -sum_c softmax(teacher)_c * log_softmax(student)_c."""
    losses = []
    for s, t in zip(student_rows, teacher_rows, strict=True):
        target, log_probs = _softmax(t), _log_softmax(s)
        losses.append(-sum(p * lp for p, lp in zip(target, log_probs, strict=True)))
    return sum(losses) / len(losses)


def test_ce_softmax_flat_matches_hand_computation():
    student = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    teacher = [[0.3, 0.1, 2.0], [1.0, 1.0, 1.0]]
    got = feature_loss("ce_softmax", torch.tensor(student), torch.tensor(teacher))
    assert got.item() == pytest.approx(_hand_ce(student, teacher), rel=1e-6)


def test_ce_softmax_spatial_over_channels_mean_over_samples_and_positions():
    # 2 samples, 3 channels, 1x2 positions
    student = torch.tensor([[[[1.0, 0.0]], [[2.0, 0.5]], [[0.5, -1.0]]],
                            [[[0.0, 0.2]], [[-1.0, 0.0]], [[3.0, 0.1]]]])
    teacher = torch.tensor([[[[0.3, 1.0]], [[0.1, 1.0]], [[2.0, 1.0]]],
                            [[[1.0, -2.0]], [[1.0, 0.0]], [[1.0, 2.0]]]])
    rows_s, rows_t = [], []
    for n in range(2):
        for w in range(2):
            rows_s.append([student[n, c, 0, w].item() for c in range(3)])
            rows_t.append([teacher[n, c, 0, w].item() for c in range(3)])
    got = feature_ce_softmax(student, teacher)
    assert got.item() == pytest.approx(_hand_ce(rows_s, rows_t), rel=1e-6)


def test_ce_softmax_of_identical_inputs_is_the_entropy():
    logits = [[0.0, 1.0, 2.0]]
    probs = _softmax(logits[0])
    entropy = -sum(p * math.log(p) for p in probs)
    assert feature_ce_softmax(torch.tensor(logits), torch.tensor(logits)).item() == pytest.approx(entropy, rel=1e-6)


def test_identical_inputs_give_zero_distance():
    x = torch.randn(4, 8, 3, 3, generator=torch.Generator().manual_seed(0))
    assert feature_loss("l2", x, x.clone()).item() == 0.0
    assert feature_loss("l1", x, x.clone()).item() == 0.0
    assert feature_loss("cos", x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert feature_loss("cos_batch", x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_l2_l1_hand_values():
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    b = torch.tensor([[0.0, 4.0], [3.0, 1.0]])
    diffs = [1.0, -2.0, 0.0, 3.0]
    assert feature_l2(a, b).item() == pytest.approx(sum(d * d for d in diffs) / 4)
    assert feature_l1(a, b).item() == pytest.approx(sum(abs(d) for d in diffs) / 4)


def test_cos_per_sample_versus_whole_batch():
    student = torch.tensor([[10.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[10.0, 0.0], [1.0, 0.0]])
    # per sample: cos = 1 and 0 -> mean(1 - cos) = 0.5
    assert feature_cos(student, teacher).item() == pytest.approx(0.5, abs=1e-6)
    # whole batch: <(10,0,0,1),(10,0,1,0)> / (sqrt(101) * sqrt(101)) = 100/101
    assert feature_cos_batch(student, teacher).item() == pytest.approx(1 - 100 / 101, abs=1e-6)
    assert feature_cos(student, -student).item() == pytest.approx(2.0, abs=1e-6)


@pytest.mark.parametrize("name", list(FEATURE_LOSSES))
def test_shape_mismatch_raises(name):
    with pytest.raises(ValueError, match=r"student \(2, 4, 2, 2\) vs teacher \(2, 4, 1, 1\)"):
        feature_loss(name, torch.zeros(2, 4, 2, 2), torch.zeros(2, 4, 1, 1))


@pytest.mark.parametrize("name", list(FEATURE_LOSSES))
def test_dispatch_and_gradient(name):
    student = torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(1), requires_grad=True)
    teacher = torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(2))
    value = feature_loss(name, student, teacher)
    assert value.dim() == 0
    assert torch.equal(value, FEATURE_LOSSES[name](student, teacher))
    value.backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


def test_unknown_feature_loss_lists_allowed():
    with pytest.raises(ValueError, match="unknown feature loss 'kl'.*ce, ce_softmax, l2, l1, cos, cos_batch"):
        feature_loss("kl", torch.zeros(1, 2), torch.zeros(1, 2))


def test_loss_modes_flags():
    assert LOSS_MODES["task"] == (False, False, True)
    assert LOSS_MODES["front_rear_task"] == (True, True, True)
    for name, (front, rear, task) in LOSS_MODES.items():
        assert ("front" in name) == front and ("rear" in name) == rear and ("task" in name) == task


@pytest.mark.parametrize("shape", [(5, 7), (4, 6, 3, 3), (2, 512, 4, 4)])
def test_ce_equals_pytorch_cross_entropy_with_an_unnormalised_probability_target(shape):
    generator = torch.Generator().manual_seed(3)
    student = torch.randn(shape, generator=generator)
    teacher = torch.relu(torch.randn(shape, generator=generator)) * 3.0  # post-ReLU maps, rows not summing to 1
    expected = torch.nn.CrossEntropyLoss()(student, teacher)
    assert feature_ce(student, teacher).item() == pytest.approx(expected.item(), rel=1e-5)
    # the softmax-normalised variant is a different loss on the same tensors
    assert abs(feature_ce_softmax(student, teacher).item() - expected.item()) > 1e-3


def test_ce_hand_value_weights_by_raw_teacher_features():
    student = [[1.0, 2.0, 0.5]]
    teacher = [[0.0, 2.0, 1.0]]  # sums to 3: the target is not normalised
    log_probs = _log_softmax(student[0])
    expected = -(2.0 * log_probs[1] + 1.0 * log_probs[2])
    assert feature_ce(torch.tensor(student), torch.tensor(teacher)).item() == pytest.approx(expected, rel=1e-6)


def test_kd_divergence_on_known_logits():
    from elf_pipeline.engine.losses import kd_divergence

    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])  # softmax (0.75, 0.25)
    # tau = 1: KL((0.75, 0.25) || (0.5, 0.5)) = 0.75 ln 1.5 + 0.25 ln 0.5
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert kd_divergence(student, teacher, 1.0).item() == pytest.approx(expected, rel=1e-6)
    # tau = 2: softmax(t / 2) = (sqrt3, 1) / (sqrt3 + 1), times tau^2 = 4
    p = math.sqrt(3.0) / (math.sqrt(3.0) + 1.0)
    expected = 4.0 * (p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p)))
    assert kd_divergence(student, teacher, 2.0).item() == pytest.approx(expected, rel=1e-6)
    assert kd_divergence(teacher, teacher, 4.0).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(InputError, match="kd_temperature 0"):
        kd_divergence(student, teacher, 0.0)


def test_soft_cross_entropy_equals_hard_ce_on_one_hot_labels():
    from elf_pipeline.engine.losses import soft_cross_entropy, task_loss

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 10, generator=generator)
    labels = torch.randint(0, 10, (16,), generator=generator)
    one_hot = F.one_hot(labels, 10).float()
    assert soft_cross_entropy(logits, one_hot).item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    assert task_loss(logits, one_hot).item() == pytest.approx(task_loss(logits, labels).item(), rel=1e-6)
    # a soft target is not its argmax: the loss differs from hard CE on the argmax labels
    soft = 0.7 * one_hot + 0.3 / 10
    assert abs(task_loss(logits, soft).item() - task_loss(logits, labels).item()) > 1e-3

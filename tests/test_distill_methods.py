"""DC, DSA and MTT: their losses, one optimisation step, outputs and reproducibility."""

from __future__ import annotations

import h5py
import pytest
import torch
import torch.nn.functional as F

from elf_pipeline import config as elf_config
from elf_pipeline.config.methods import METHODS
from elf_pipeline.engine.augment import DSAConfig
from elf_pipeline.engine.training import build_seeded
from elf_pipeline.infra.resume import ResumeFile
from elf_pipeline.models import build
from elf_pipeline.stages.distill import run_distill
from elf_pipeline.stages.distill.common import class_indices, initial_synset
from elf_pipeline.stages.distill.dc import class_match_loss, distill_dc, distill_dsa, gradient_distance, published_loops
from elf_pipeline.stages.distill.mtt import FlatStudent, distill_mtt, trajectory_loss
from elf_pipeline.stages.experts import flat_parameters, train_expert

CPU = torch.device("cpu")
ARCH = "convnet-w8"  # small enough that every test here runs in about a second
CLASSES, SIZE = 3, 16


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(CLASSES * 12, 1, SIZE, SIZE, generator=generator)
    return images, torch.arange(CLASSES).repeat(12)


def _net(seed: int = 0):
    return build_seeded(lambda: build(ARCH, 1, CLASSES, SIZE), seed)


DC_SMALL = dict(iterations=2, model=ARCH, batch_real=6, outer_loop=2, inner_loop=1, batch_train=8)


def test_registry_matches_config() -> None:
    assert set(METHODS) == set(elf_config.METHODS) >= {"random", "dm", "dc", "dsa", "mtt"}


# --------------------------------------------------------------------------- DC / DSA

def test_published_loops() -> None:
    assert published_loops(1) == (1, 1) and published_loops(10) == (10, 50) and published_loops(50) == (50, 10)
    assert published_loops(2) == (1, 1)  # nearest smaller published IPC


@pytest.mark.parametrize("distance", ["layerwise", "mse", "cos"])
def test_gradient_distance_is_zero_for_equal_gradients(distance: str) -> None:
    grads = [torch.randn(4, 3, 3, 3), torch.randn(4), torch.randn(5, 8)]
    assert float(gradient_distance(grads, [g.clone() for g in grads], distance)) == pytest.approx(0, abs=1e-5)
    assert float(gradient_distance(grads, [-g for g in grads], distance)) > 0.5


def test_layerwise_distance_ignores_biases_and_scale() -> None:
    weights, bias = torch.randn(4, 3, 3, 3), torch.randn(4)
    # published: per output unit 1 - cosine, so a positive rescaling is free and 1-D parameters do not count
    assert float(gradient_distance([weights, bias], [3 * weights, -bias])) == pytest.approx(0, abs=1e-5)
    assert float(gradient_distance([weights, bias], [3 * weights, -bias], "mse")) > 1


def _total_match_loss(net, real_batches, syn, ipc, dsa, seed):
    generator = torch.Generator().manual_seed(seed)
    return sum(class_match_loss(net, real, syn[c * ipc:(c + 1) * ipc], c, "layerwise", dsa, generator)
               for c, real in enumerate(real_batches))


def _slope_ratio(loss, point: list[torch.Tensor], grads: list[torch.Tensor], step: float) -> tuple[float, float]:
    """The loss's change per unit step along the unit direction -g/|g|, over the slope the gradient
    predicts (-|g|), for a step of length ``step``; and that change.  1 means the gradient is the
    loss's derivative there and a step along it lowers the loss as fast as the gradient says."""
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    before = float(loss(*point).detach())
    after = float(loss(*[(x - step * g / norm).detach() for x, g in zip(point, grads, strict=True)]).detach())
    return (after - before) / step / -float(norm), after - before


@pytest.mark.float_path
@pytest.mark.parametrize("dsa", [None, DSAConfig()], ids=["dc", "dsa"])
def test_image_gradient_is_the_matching_losss_slope(tiny, dsa) -> None:
    """What a DC/DSA image update relies on: the autograd gradient of the matching loss (through the
    network's parameter gradients) is its derivative, so a small step along it lowers the loss as the
    gradient predicts.  The network runs in float64 (its cross-entropies in float32: class_match_loss
    casts the logits), over steps small next to where the loss stops being smooth, yet large enough for
    its change to dwarf float32 rounding.  A fixed step of 1e-3 x gradient (length 4.3e-3 here) lies
    past a kink of the DSA loss (a step of length 2e-3 along the gradient raises it; one of 4.3e-3
    lowers it here by a sixth of what the gradient predicts, and raises it on CPUs with other kernels),
    so a fixed step tests the kernels' rounding, not the gradient."""
    images, labels = tiny
    images = images.double()
    ipc, net = 2, _net().double()
    by_class = class_indices(labels, CLASSES)
    real_batches = [images[index[:6]] for index in by_class]
    syn = initial_synset(images, by_class, ipc, "real", torch.Generator().manual_seed(1)).images.requires_grad_(True)
    assert syn.dtype == torch.float64

    def loss(images_):
        return _total_match_loss(net, real_batches, images_, ipc, dsa, seed=5)

    (grad,) = torch.autograd.grad(loss(syn), syn)
    assert grad.abs().sum() > 0
    # Measured (|syn| is about 55): the ratio is 1 within 2e-3 for steps from 1e-4 to 1e-3, for DC and
    # DSA, on the default and SSE4.1 kernel paths; DSA's is -0.25 over 2e-3 (DC's still 0.9998 at 5e-3).
    for step in (2e-4, 5e-4):
        ratio, change = _slope_ratio(loss, [syn], [grad], step)
        assert change < 0 and ratio == pytest.approx(1, abs=2e-2), (step, ratio)


@pytest.mark.parametrize("method", [distill_dc, distill_dsa], ids=["dc", "dsa"])
def test_dc_dsa_outputs_and_reproducibility(tiny, method) -> None:
    images, labels = tiny
    ipc = 2
    first = method(images, labels, CLASSES, ipc, seed=0, device=CPU, **DC_SMALL)
    again = method(images, labels, CLASSES, ipc, seed=0, device=CPU, **DC_SMALL)
    init = initial_synset(images, class_indices(labels, CLASSES), ipc, "real", torch.Generator().manual_seed(0)).images
    assert first.images.shape == (CLASSES * ipc, 1, SIZE, SIZE) and first.images.dtype == torch.float32
    assert first.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert not torch.equal(first.images, init)  # the images moved
    assert torch.equal(first.images, again.images)  # same seed, same bytes
    assert len(first.history["loss"]) == DC_SMALL["iterations"]
    assert first.extra_attrs == {"outer_loop": 2, "inner_loop": 1}


def test_dsa_differs_from_dc_and_batchnorm_models_work(tiny) -> None:
    images, labels = tiny
    dc = distill_dc(images, labels, CLASSES, 1, seed=0, device=CPU, **DC_SMALL)
    dsa = distill_dsa(images, labels, CLASSES, 1, seed=0, device=CPU, **DC_SMALL)
    assert not torch.equal(dc.images, dsa.images)
    bn = distill_dc(images, labels, CLASSES, 1, seed=0, device=CPU, **{**DC_SMALL, "model": "convnet-w8-bn"})
    assert torch.isfinite(bn.images).all()


# --------------------------------------------------------------------------- MTT

def _unrolled_sgd(student: FlatStudent, start: torch.Tensor, images, labels, lr: float, steps: int) -> torch.Tensor:
    """An 'expert' that trains exactly as the MTT student does: full-batch SGD from ``start``."""
    params = start.clone()
    for _ in range(steps):
        params.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(student(params, images), labels), params)
        params = (params - lr * grad).detach()
    return params


def test_trajectory_loss_vanishes_on_the_expert_trajectory(tiny) -> None:
    images, labels = tiny
    student = FlatStudent(_net())
    start = flat_parameters(student.net)
    target = _unrolled_sgd(student, start, images, labels, lr=0.05, steps=4)

    def loss(lr: float) -> float:
        return float(trajectory_loss(student, images, labels, torch.tensor(lr), start, target, syn_steps=4).detach())

    assert loss(0.05) < 1e-6
    # a student that does not move is exactly one normalised distance away; a wrong lr is in between
    assert loss(0.0) == pytest.approx(1.0)
    assert 0.05 < loss(0.025) < 1


@pytest.mark.float_path
def test_image_and_lr_gradients_are_the_trajectory_losss_slope(tiny) -> None:
    """What MTT's updates rely on: the gradients of the trajectory loss in the images and in the
    learned lr (through the unrolled, augmented student steps) are its derivatives, each a descent
    direction.  Over small steps: the unrolled student crosses ReLU kinks, so the loss is smooth only
    piecewise (a step of 1e-3 along the image gradient even raises it).  The network runs in float64;
    the cross-entropy of each unrolled step is taken in float32 (trajectory_loss casts the logits), so
    the steps are large enough for the loss's change to dwarf float32 rounding (about 1e-6 here)."""
    images, labels = tiny
    images = images.double()
    student = FlatStudent(_net().double())
    start = flat_parameters(student.net)
    target = _unrolled_sgd(student, start, images, labels, lr=0.05, steps=3)
    noise = torch.randn(6, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(3)).double()
    syn, syn_labels = (images[:6] + 0.5 * noise).requires_grad_(True), labels[:6]
    lr = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)

    def loss(images_, lr_):
        return trajectory_loss(student, images_, syn_labels, lr_, start, target, 3, 4, DSAConfig(),
                               torch.Generator().manual_seed(7))

    image_grad, lr_grad = torch.autograd.grad(loss(syn, lr), [syn, lr])
    assert image_grad.abs().sum() > 0 and lr_grad != 0
    # Measured: the image ratio is 1 within 2e-3 for steps from 5e-5 to 5e-4 (a kink lies between 5e-4
    # and 1e-3); the lr ratio within 4e-4 for steps from 2e-6 to 2e-5 (a kink before 5e-5: 0.60 there).
    for step in (5e-5, 1e-4):
        ratio, change = _slope_ratio(lambda x: loss(x, lr.detach()), [syn], [image_grad], step)
        assert change < 0 and ratio == pytest.approx(1, abs=2e-2), ("images", step, ratio)
    for step in (2e-6, 5e-6):
        ratio, change = _slope_ratio(lambda r: loss(syn.detach(), r), [lr], [lr_grad], step)
        assert change < 0 and ratio == pytest.approx(1, abs=2e-2), ("lr", step, ratio)


@pytest.fixture(scope="module")
def expert_files(tmp_path_factory, digits_h5) -> list[str]:
    folder = tmp_path_factory.mktemp("experts")
    config = {"epochs": 3, "batch_size": 25, "dsa": False}
    paths = [str(folder / f"expert_{k}.h5") for k in range(2)]
    for index, path in enumerate(paths):
        train_expert(digits_h5, path, ARCH, index, config, "cpu")
    return paths


MTT_SMALL = {"iterations": 3, "syn_steps": 3, "expert_epochs": 1, "max_start_epoch": 2, "lr_img": 10.0, "dsa": True}


def test_mtt_stage_writes_learned_lr_and_is_reproducible(tmp_path, digits_h5, expert_files) -> None:
    synsets = []
    for name in ("a", "b"):
        out = tmp_path / name / "synset.h5"
        synsets.append(run_distill(digits_h5, out, "mtt", 2, MTT_SMALL, seed=0, device="cpu", experts=expert_files))
    first, again = synsets
    assert first.images.shape == (20, 1, 16, 16) and first.labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert torch.equal(first.images, again.images)
    assert len(first.history["loss"]) == 3 and len(first.history["syn_lr"]) == 3
    with h5py.File(tmp_path / "a" / "synset.h5") as h5:
        assert h5.attrs["syn_lr"] == pytest.approx(first.history["syn_lr"][-1])
        assert h5.attrs["syn_lr"] != 0.01  # learned
        assert "experts" in h5.attrs["config"] and "zca_eps" not in h5.attrs


def test_mtt_rejects_windows_beyond_the_experts(expert_files, train_split) -> None:
    images, labels, info = train_split
    settings = {**MTT_SMALL, "dsa": None}
    with pytest.raises(ValueError, match="max_start_epoch"):
        distill_mtt(images, labels, info.num_classes, 1, seed=0, device=CPU, experts=expert_files,
                    **{**settings, "max_start_epoch": 3, "expert_epochs": 2})
    with pytest.raises(ValueError, match="expert trajectories"):
        distill_mtt(images, labels, info.num_classes, 1, seed=0, device=CPU, experts=[], **settings)
    with pytest.raises(ValueError, match="architecture"):
        distill_mtt(images, labels, info.num_classes, 1, seed=0, device=CPU, experts=expert_files,
                    **{**settings, "model": "convnet"})


def test_dc_and_mtt_resume_bit_identically(tmp_path, tiny, expert_files, train_split) -> None:
    """A run stopped after one iteration (state saved) and continued equals an uninterrupted one."""
    images, labels = tiny
    runs = {
        "dc": lambda n, resume: distill_dc(images, labels, CLASSES, 1, seed=0, device=CPU, resume=resume,
                                           **{**DC_SMALL, "iterations": n}),
        "mtt": lambda n, resume: distill_mtt(*train_split[:2], train_split[2].num_classes, 1, seed=0, device=CPU,
                                             experts=expert_files, resume=resume, **{**MTT_SMALL, "dsa": DSAConfig(),
                                                                                      "iterations": n}),
    }
    for name, run in runs.items():
        resume = ResumeFile(tmp_path / f"{name}.resume", every_seconds=0, fingerprint=name)
        run(2, resume)  # saves its state after iteration 1 of 2
        assert (tmp_path / f"{name}.resume").is_file()
        resumed, straight = run(3, resume), run(3, None)
        assert torch.equal(resumed.images, straight.images), name
        assert resumed.history == straight.history, name

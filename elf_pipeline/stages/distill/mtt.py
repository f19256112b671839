"""Matching Training Trajectories (Cazenavette et al., CVPR 2022).

Each iteration picks an expert and a start epoch t < ``max_start_epoch``, starts a student at the
expert's parameters after epoch t, takes ``syn_steps`` differentiable SGD steps on (augmented)
synthetic mini-batches with a learnable learning rate, and minimises

    ||θ_student - θ*_{t+M}||² / ||θ*_t - θ*_{t+M}||²          (M = expert_epochs)

with respect to the synthetic images and the learning rate (each with its own SGD optimiser,
momentum 0.5).  The student is the expert's architecture evaluated functionally on one flat
parameter vector (``torch.func.functional_call``), so the unrolled steps are plain tensor algebra.
No real images are needed after initialisation; only two rows of one expert file are read per
iteration.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from elf_pipeline.artifacts.expert_file import ExpertInfo, parameter_layout, read_epochs, read_expert_info
from elf_pipeline.artifacts.synset import SyntheticSet
from elf_pipeline.engine.augment import DSAConfig
from elf_pipeline.engine.augment import dsa as augment
from elf_pipeline.engine.precision import autocast, full_precision
from elf_pipeline.engine.training import progress
from elf_pipeline.engine.zca import fit_zca
from elf_pipeline.infra.errors import InputError
from elf_pipeline.models import build
from elf_pipeline.stages.distill.common import class_indices, initial_synset

if TYPE_CHECKING:
    from elf_pipeline.infra.resume import ResumeFile

log = logging.getLogger(__name__)


class FlatStudent:
    """``net`` evaluated with its parameters taken from one flat vector (in ``named_parameters`` order)."""

    def __init__(self, net: nn.Module):
        self.net = net
        layout = parameter_layout(net)
        self.names = [name for name, _ in layout]
        self.shapes = [shape for _, shape in layout]
        self.sizes = [p.numel() for p in net.parameters()]

    @property
    def num_params(self) -> int:
        return sum(self.sizes)

    def __call__(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        chunks = flat.split(self.sizes)
        params = {name: chunk.view(shape) for name, chunk, shape in zip(self.names, chunks, self.shapes, strict=True)}
        return functional_call(self.net, params, (x,))


def trajectory_loss(student: FlatStudent, syn_images: torch.Tensor, syn_labels: torch.Tensor, syn_lr: torch.Tensor,
                    start: torch.Tensor, target: torch.Tensor, syn_steps: int, batch_syn: int | None = None,
                    dsa: DSAConfig | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Normalised parameter distance after ``syn_steps`` unrolled SGD steps from ``start``;
    differentiable in ``syn_images`` and ``syn_lr``.  Mini-batches of ``batch_syn`` images (default:
    all) are drawn without replacement, reshuffled when used up, as published."""
    batch_syn = batch_syn or len(syn_labels)
    params = start.detach().clone().requires_grad_(True)
    chunks: list[torch.Tensor] = []
    for _ in range(syn_steps):
        if not chunks:
            chunks = list(torch.randperm(len(syn_labels), generator=generator).split(batch_syn))
        index = chunks.pop().to(syn_images.device)
        x = syn_images[index]
        if dsa is not None:
            x = augment(x, dsa, generator)
        loss = F.cross_entropy(full_precision(student(params, x)), syn_labels[index])
        (grad,) = torch.autograd.grad(loss, params, create_graph=True)
        params = params - syn_lr * grad
    return ((params - target) ** 2).sum() / ((start - target) ** 2).sum()


def _check_experts(experts: list[ExpertInfo], channels: int, num_classes: int, image_size: int,
                   expert_epochs: int, max_start_epoch: int, model: str | None) -> ExpertInfo:
    if not experts:
        raise InputError("mtt needs expert trajectories (train_experts); none were given")
    first = experts[0]
    for info in experts:
        if (info.arch, info.layout, info.zca_eps) != (first.arch, first.layout, first.zca_eps):
            raise InputError(f"{info.path}: expert differs from {first.path} in architecture or ZCA")
        if (info.channels, info.num_classes, info.image_size) != (channels, num_classes, image_size):
            raise InputError(f"{info.path}: expert was trained on {info.channels}x{info.image_size}px images with "
                             f"{info.num_classes} classes, the data has {channels}x{image_size}px and {num_classes}")
        if max_start_epoch - 1 + expert_epochs > info.epochs:
            raise InputError(f"{info.path}: max_start_epoch ({max_start_epoch}) - 1 + expert_epochs ({expert_epochs}) "
                             f"exceeds the expert's {info.epochs} epochs")
    if model is not None and model != first.arch:
        raise InputError(f"mtt model {model!r} differs from the experts' architecture {first.arch!r} "
                         "(MTT distils with the experts' architecture; drop model or retrain the experts)")
    return first


def distill_mtt(images: torch.Tensor, labels: torch.Tensor, num_classes: int, ipc: int, seed: int,
                device: torch.device, experts: list[str | os.PathLike] = (), iterations: int = 5000,
                syn_steps: int = 20, expert_epochs: int = 2, max_start_epoch: int = 20, lr_img: float = 1000.0,
                lr_lr: float = 1e-5, lr_teacher: float = 0.01, momentum: float = 0.5, batch_syn: int | None = None,
                init: str = "real", model: str | None = None, dsa: DSAConfig | None = None, log_every: int = 100,
                resume: ResumeFile | None = None, precision: str = "fp32") -> SyntheticSet:
    if syn_steps < 1 or expert_epochs < 1 or max_start_epoch < 1:
        raise InputError("mtt syn_steps, expert_epochs and max_start_epoch must all be >= 1")
    channels, image_size = images.shape[1], images.shape[2]
    infos = [read_expert_info(path) for path in experts]
    reference = _check_experts(infos, channels, num_classes, image_size, expert_epochs, max_start_epoch, model)
    generator = torch.Generator().manual_seed(seed)
    synset = initial_synset(images, class_indices(labels, num_classes), ipc, init, generator)
    extra_attrs: dict[str, float] = {}
    if reference.zca_eps and init == "real":  # the experts saw whitened images: so must the student
        synset.images = fit_zca(images, reference.zca_eps).transform(synset.images)
    if reference.zca_eps:
        extra_attrs["zca_eps"] = reference.zca_eps
    net = build(reference.arch, channels, num_classes, image_size).to(device)
    net.train()
    student = FlatStudent(net)
    if parameter_layout(net) != reference.layout:
        raise InputError(f"{reference.path}: parameter layout differs from a freshly built {reference.arch}")
    syn = synset.images.to(device).requires_grad_(True)
    syn_labels = synset.labels.to(device)
    syn_lr = torch.tensor(float(lr_teacher), device=device, requires_grad=True)
    optimizer_img = torch.optim.SGD([syn], lr=lr_img, momentum=momentum)
    optimizer_lr = torch.optim.SGD([syn_lr], lr=lr_lr, momentum=momentum)
    history: dict[str, list[float]] = {"loss": [], "syn_lr": []}
    start_iteration = 0
    state = resume.load() if resume is not None else None
    if state is not None:
        with torch.no_grad():
            syn.copy_(state["images"].to(device))
            syn_lr.copy_(state["syn_lr"].to(device))
        optimizer_img.load_state_dict(state["optimizer_img"])
        optimizer_lr.load_state_dict(state["optimizer_lr"])
        generator.set_state(state["generator"])
        history, start_iteration = {k: list(v) for k, v in state["history"].items()}, int(state["iteration"])
    for iteration in progress(range(start_iteration, iterations), iterations - start_iteration, "mtt"):
        expert = infos[int(torch.randint(len(infos), (1,), generator=generator))]
        start_epoch = int(torch.randint(max_start_epoch, (1,), generator=generator))
        start, target = read_epochs(expert.path, [start_epoch, start_epoch + expert_epochs]).to(device).unbind(0)
        with autocast(syn.device, precision):
            loss = trajectory_loss(student, syn, syn_labels, syn_lr, start, target, syn_steps, batch_syn, dsa, generator)
        optimizer_img.zero_grad(set_to_none=True)
        optimizer_lr.zero_grad(set_to_none=True)
        loss.backward()
        optimizer_img.step()
        optimizer_lr.step()
        history["loss"].append(float(loss.detach()))
        history["syn_lr"].append(float(syn_lr.detach()))
        if log_every and (iteration + 1) % log_every == 0:
            log.info("mtt iteration %d/%d loss %.4f lr %.5f", iteration + 1, iterations, history["loss"][-1],
                     history["syn_lr"][-1])
        if resume is not None and resume.due() and iteration + 1 < iterations:
            resume.save({"images": syn.detach().cpu(), "syn_lr": syn_lr.detach().cpu(), "history": history,
                         "optimizer_img": optimizer_img.state_dict(), "optimizer_lr": optimizer_lr.state_dict(),
                         "generator": generator.get_state(), "iteration": iteration + 1})
    extra_attrs["syn_lr"] = float(syn_lr.detach())
    return SyntheticSet(syn.detach().cpu(), synset.labels, history=history, extra_attrs=extra_attrs)

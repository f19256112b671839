"""Gradient matching: DC (Zhao et al., ICLR 2021) and DSA (Zhao & Bilen, ICML 2021).

Each iteration draws a freshly initialised network.  For ``outer_loop`` rounds, the gradient of
the classification loss on a real batch of each class is matched by the gradient on that class's
synthetic images, and the images take one SGD step on the summed distance; between rounds the
network trains ``inner_loop`` epochs on the current synthetic set.  DSA is the same with one
siamese augmentation (parameters shared by the real and the synthetic batch) before every match,
and per-sample augmentation in the inner loop.

Each class's distance is back-propagated on its own (gradients accumulate on the images), so only
one class batch of real images and one class's double-backward graph live on the device at once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from elf_pipeline.artifacts.synset import SyntheticSet
from elf_pipeline.engine.augment import DSAConfig, apply, sample_params
from elf_pipeline.engine.precision import autocast, full_precision
from elf_pipeline.engine.training import TrainConfig, build_seeded, progress, train
from elf_pipeline.infra.errors import InputError
from elf_pipeline.models import build
from elf_pipeline.stages.distill.common import class_indices, initial_synset, restore_images, save_images_state

if TYPE_CHECKING:
    from elf_pipeline.infra.resume import ResumeFile

log = logging.getLogger(__name__)

# (outer_loop, inner_loop) of the published code, by IPC.
PUBLISHED_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
DISTANCES = ("layerwise", "mse", "cos")
BN_IMAGES_PER_CLASS = 16  # real images per class that set frozen BatchNorm statistics (published value)


def published_loops(ipc: int) -> tuple[int, int]:
    """The published (outer_loop, inner_loop) for ``ipc``; other IPCs take the nearest smaller entry."""
    if ipc in PUBLISHED_LOOPS:
        return PUBLISHED_LOOPS[ipc]
    nearest = max(key for key in PUBLISHED_LOOPS if key <= ipc)
    log.warning("no published outer/inner loops for ipc %d; using those of ipc %d %s (set outer_loop/inner_loop)",
                ipc, nearest, PUBLISHED_LOOPS[nearest])
    return PUBLISHED_LOOPS[nearest]


def _layerwise(real: torch.Tensor, syn: torch.Tensor) -> torch.Tensor:
    """Sum over output units of (1 - cosine) between the per-unit gradient rows; the published
    distance ignores 1-D parameters (biases, normalisation scales)."""
    if real.dim() == 1:
        return syn.new_zeros(())
    real, syn = real.flatten(1), syn.flatten(1)
    cosine = (real * syn).sum(dim=1) / (real.norm(dim=1) * syn.norm(dim=1) + 1e-6)
    return (1 - cosine).sum()


def gradient_distance(real_grads: list[torch.Tensor], syn_grads: list[torch.Tensor], distance: str = "layerwise") -> torch.Tensor:
    """Distance between two per-parameter gradient lists: ``layerwise`` (published), ``mse``
    (squared L2 of the concatenated gradients) or ``cos`` (1 - cosine of the concatenations)."""
    if distance == "layerwise":
        return torch.stack([_layerwise(r, s) for r, s in zip(real_grads, syn_grads, strict=True)]).sum()
    real = torch.cat([g.reshape(-1) for g in real_grads])
    syn = torch.cat([g.reshape(-1) for g in syn_grads])
    if distance == "mse":
        return ((syn - real) ** 2).sum()
    if distance == "cos":
        return 1 - (real * syn).sum() / (real.norm() * syn.norm() + 1e-6)
    raise InputError(f"unknown gradient distance {distance!r} (allowed: {', '.join(DISTANCES)})")


def class_match_loss(net: nn.Module, real: torch.Tensor, syn: torch.Tensor, label: int, distance: str = "layerwise",
                     dsa: DSAConfig | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gradient-matching loss of one class; differentiable in ``syn`` (not in the network).

    With ``dsa``, one augmentation is drawn from ``generator`` and applied to both batches.
    """
    if dsa is not None:
        params = sample_params(dsa, 1, real.shape[2], real.shape[3], generator, shared=True)
        real, syn = apply(real, params), apply(syn, params)
    weights = [p for p in net.parameters() if p.requires_grad]
    target = torch.full((len(real),), label, dtype=torch.long, device=real.device)
    real_grads = torch.autograd.grad(F.cross_entropy(full_precision(net(real)), target), weights)
    syn_grads = torch.autograd.grad(F.cross_entropy(full_precision(net(syn)), target[:1].expand(len(syn))), weights,
                                    create_graph=True)
    return gradient_distance([g.detach() for g in real_grads], syn_grads, distance)


def _freeze_batchnorm(net: nn.Module, images: torch.Tensor, by_class: list[torch.Tensor],
                      generator: torch.Generator, device: torch.device) -> None:
    """As published: set BatchNorm statistics on a mixed real batch, then fix them (eval mode), so
    the single-class matching batches do not each see their own statistics."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    pick = torch.cat([index[torch.randperm(len(index), generator=generator)[:BN_IMAGES_PER_CLASS]] for index in by_class])
    net.train()
    with torch.no_grad():
        net(images[pick].to(device))
    for module in norms:
        module.eval()


def distill_dc(images: torch.Tensor, labels: torch.Tensor, num_classes: int, ipc: int, seed: int,
               device: torch.device, iterations: int = 1000, lr_img: float = 0.1, momentum: float = 0.5,
               lr_net: float = 0.01, batch_real: int = 256, batch_train: int = 256, outer_loop: int | None = None,
               inner_loop: int | None = None, distance: str = "layerwise", init: str = "real", model: str = "convnet",
               dsa: DSAConfig | None = None, log_every: int = 100, resume: ResumeFile | None = None,
               precision: str = "fp32") -> SyntheticSet:
    """DC, or DSA when ``dsa`` is given.  ``outer_loop``/``inner_loop`` default to the published
    values for ``ipc``; the networks run at ``precision``, the gradients they match are float32."""
    if distance not in DISTANCES:
        raise InputError(f"unknown gradient distance {distance!r} (allowed: {', '.join(DISTANCES)})")
    if outer_loop is None or inner_loop is None:
        published_outer, published_inner = published_loops(ipc)
        outer_loop = published_outer if outer_loop is None else outer_loop
        inner_loop = published_inner if inner_loop is None else inner_loop
    generator = torch.Generator().manual_seed(seed)
    by_class = class_indices(labels, num_classes)
    synset = initial_synset(images, by_class, ipc, init, generator)
    syn = synset.images.to(device).requires_grad_(True)
    syn_labels = synset.labels.to(device)
    optimizer = torch.optim.SGD([syn], lr=lr_img, momentum=momentum)
    # The network between matching rounds: plain SGD on the synthetic set (published: no momentum, no decay).
    inner = TrainConfig(epochs=inner_loop, lr=lr_net, momentum=0.0, weight_decay=0.0, batch_size=batch_train,
                        lr_decay_at=0.0, dsa=dsa)
    channels, image_size = images.shape[1], images.shape[2]
    losses, start = restore_images(resume, syn, optimizer, generator)
    name = "dsa" if dsa is not None else "dc"
    for iteration in progress(range(start, iterations), iterations - start, name):
        net_seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        net = build_seeded(lambda: build(model, channels, num_classes, image_size), net_seed).to(device)
        total = torch.zeros((), device=device)
        for round_index in range(outer_loop):
            _freeze_batchnorm(net, images, by_class, generator, device)
            optimizer.zero_grad(set_to_none=True)
            for label, index in enumerate(by_class):
                pick = index[torch.randperm(len(index), generator=generator)[:batch_real]]
                real = images[pick].to(device, non_blocking=True)
                with autocast(syn.device, precision):
                    loss = class_match_loss(net, real, syn[label * ipc:(label + 1) * ipc], label, distance, dsa,
                                            generator)
                loss.backward(inputs=[syn])  # frees this class's graph; the network gets no gradient
                total += loss.detach()
            optimizer.step()
            if round_index < outer_loop - 1 and inner_loop > 0:
                train(net, syn.detach(), syn_labels, inner, generator, desc=f"{name} inner", precision=precision)
        losses.append(float(total) / (num_classes * outer_loop))
        if log_every and (iteration + 1) % log_every == 0:
            log.info("%s iteration %d/%d loss %.4f", name, iteration + 1, iterations, losses[-1])
        save_images_state(resume, syn, optimizer, generator, losses, iteration + 1, iterations)
    return SyntheticSet(syn.detach().cpu(), synset.labels, history={"loss": losses},
                        extra_attrs={"outer_loop": outer_loop, "inner_loop": inner_loop})


def distill_dsa(*args: object, dsa: DSAConfig | None = None, **kwargs: object) -> SyntheticSet:
    """DSA = DC with siamese augmentation; the published DSA parameters unless configured."""
    return distill_dc(*args, dsa=dsa or DSAConfig(), **kwargs)

"""Distribution Matching (Zhao & Bilen, WACV 2023).

Each iteration samples a freshly initialised ConvNet, embeds a real batch and the synthetic
images of every class (with one siamese DSA transformation shared by both), and minimises the
squared distance between their class-mean embeddings.  Only one class batch of real images is on
the device at a time.
"""

from __future__ import annotations

import logging

import torch

from elf_pipeline.artifacts.synset import SyntheticSet
from elf_pipeline.engine.augment import DSAConfig, apply, sample_params
from elf_pipeline.engine.precision import autocast, full_precision
from elf_pipeline.engine.training import progress
from elf_pipeline.infra.errors import InputError
from elf_pipeline.infra.resume import ResumeFile
from elf_pipeline.models import build
from elf_pipeline.stages.distill.common import class_indices, restore_images, sample_real, save_images_state

log = logging.getLogger(__name__)


def dm_loss(embed, real_batches: list[torch.Tensor], syn_batches: list[torch.Tensor],
            dsa: DSAConfig | None, generator: torch.Generator) -> torch.Tensor:
    """Sum over classes of ||mean embed(real_c) - mean embed(syn_c)||^2."""
    loss = torch.zeros((), device=syn_batches[0].device)
    for real, syn in zip(real_batches, syn_batches, strict=True):
        if dsa is not None:
            params = sample_params(dsa, 1, real.shape[2], real.shape[3], generator, shared=True)
            real, syn = apply(real, params), apply(syn, params)
        with torch.no_grad():
            real_mean = full_precision(embed(real)).flatten(1).mean(dim=0)
        loss = loss + ((real_mean - full_precision(embed(syn)).flatten(1).mean(dim=0)) ** 2).sum()
    return loss


def distill_dm(images: torch.Tensor, labels: torch.Tensor, num_classes: int, ipc: int, seed: int,
               device: torch.device, iterations: int = 20000, lr_img: float = 1.0, momentum: float = 0.5,
               batch_real: int = 256, init: str = "real", model: str = "convnet",
               dsa: DSAConfig | None = None, log_every: int = 100, resume: ResumeFile | None = None,
               precision: str = "fp32") -> SyntheticSet:
    generator = torch.Generator().manual_seed(seed)
    by_class = class_indices(labels, num_classes)
    synset = sample_real(images, by_class, ipc, generator)
    syn = synset.images.to(device)
    if init == "noise":
        syn = torch.randn(syn.shape, generator=generator).to(device)
    elif init != "real":
        raise InputError(f"unknown DM init {init!r} (allowed: real, noise)")
    syn.requires_grad_(True)
    optimizer = torch.optim.SGD([syn], lr=lr_img, momentum=momentum)
    channels, image_size = images.shape[1], images.shape[2]
    losses, start = restore_images(resume, syn, optimizer, generator)
    for iteration in progress(range(start, iterations), iterations - start, "dm"):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
            net = build(model, channels, num_classes, image_size).to(device)
        net.train()
        for parameter in net.parameters():
            parameter.requires_grad_(False)
        real_batches = []
        for index in by_class:
            pick = index[torch.randperm(len(index), generator=generator)[:batch_real]]
            real_batches.append(images[pick].to(device, non_blocking=True))
        syn_batches = list(syn.view(num_classes, ipc, *syn.shape[1:]).unbind(0))
        with autocast(syn.device, precision):
            loss = dm_loss(net.front, real_batches, syn_batches, dsa, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if log_every and (iteration + 1) % log_every == 0:
            log.info("dm iteration %d/%d loss %.4f", iteration + 1, iterations, losses[-1])
        save_images_state(resume, syn, optimizer, generator, losses, iteration + 1, iterations)
    return SyntheticSet(syn.detach().cpu(), synset.labels, history={"loss": losses})

"""Helpers every distillation method shares: class indexing, real initialisation, resume state."""

from __future__ import annotations

import torch

from elf_pipeline.artifacts.synset import SyntheticSet
from elf_pipeline.infra.errors import InputError


def class_indices(labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    return [torch.nonzero(labels == c).flatten() for c in range(num_classes)]


def sample_real(images: torch.Tensor, by_class: list[torch.Tensor], ipc: int, generator: torch.Generator) -> SyntheticSet:
    """``ipc`` distinct real images per class, chosen with ``generator`` (class-major order)."""
    chosen, labels = [], []
    for label, index in enumerate(by_class):
        if len(index) < ipc:
            raise InputError(f"class {label} has only {len(index)} training images, fewer than ipc={ipc}")
        chosen.append(index[torch.randperm(len(index), generator=generator)[:ipc]])
        labels.append(torch.full((ipc,), label, dtype=torch.long))
    picked = torch.cat(chosen)
    return SyntheticSet(images[picked].clone(), torch.cat(labels))


def initial_synset(images: torch.Tensor, by_class: list[torch.Tensor], ipc: int, init: str,
                   generator: torch.Generator) -> SyntheticSet:
    """The starting point of an optimised synthetic set: ``real`` images or standard-normal ``noise``
    (the real images are drawn either way, so both settings consume the generator alike)."""
    synset = sample_real(images, by_class, ipc, generator)
    if init == "noise":
        synset.images = torch.randn(synset.images.shape, generator=generator)
    elif init != "real":
        raise InputError(f"unknown init {init!r} (allowed: real, noise)")
    return synset


def restore_images(resume, syn: torch.Tensor, optimizer: torch.optim.Optimizer,
                   generator: torch.Generator) -> tuple[list[float], int]:
    """Continue an image-optimising method from its resume state: (losses so far, next iteration)."""
    state = resume.load() if resume is not None else None
    if state is None:
        return [], 0
    with torch.no_grad():
        syn.copy_(state["images"].to(syn.device))
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    return list(state["losses"]), int(state["iteration"])


def save_images_state(resume, syn: torch.Tensor, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                      losses: list[float], done: int, iterations: int) -> None:
    """Save the resume state after ``done`` iterations when it is due (never after the last)."""
    if resume is not None and resume.due() and done < iterations:
        resume.save({"images": syn.detach().cpu(), "optimizer": optimizer.state_dict(),
                     "generator": generator.get_state(), "losses": losses, "iteration": done})

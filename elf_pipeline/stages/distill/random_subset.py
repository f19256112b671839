"""The baseline every DD paper needs: ``ipc`` random real training images per class."""

from __future__ import annotations

import torch

from elf_pipeline.artifacts.synset import SyntheticSet
from elf_pipeline.stages.distill.common import class_indices, sample_real


def distill_random(images: torch.Tensor, labels: torch.Tensor, num_classes: int, ipc: int, seed: int,
                   device: torch.device) -> SyntheticSet:
    generator = torch.Generator().manual_seed(seed)
    return sample_real(images, class_indices(labels, num_classes), ipc, generator)

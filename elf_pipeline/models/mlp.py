"""The DD reference MLP: flatten, two hidden layers of 128 units with ReLU, linear classifier.

Its stages ``fc1`` and ``fc2`` are flat (N, width); the default split is ``fc2`` (the rear is the
classifier). Against a spatial teacher feature the ELF adapters are linear maps between the
flattened shapes (see ``models.adapter.FeatureAdapter``).
"""

from __future__ import annotations

from torch import nn

from elf_pipeline.models.base import StagedNet


def mlp(channels: int, num_classes: int, image_size: int, width: int = 128, split: str | None = None) -> StagedNet:
    stages: list[tuple[str, nn.Module]] = [
        ("fc1", nn.Sequential(nn.Flatten(), nn.Linear(channels * image_size * image_size, width), nn.ReLU())),
        ("fc2", nn.Sequential(nn.Linear(width, width), nn.ReLU())),
        ("head", nn.Linear(width, num_classes)),
    ]
    return StagedNet(stages, split or "fc2")

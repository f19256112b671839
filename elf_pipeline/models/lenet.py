"""LeNet-5 as in the DD reference code: two 5x5 convs with max-pooling, then a 120-84 MLP.

Stages ``conv1``, ``conv2`` (spatial) and ``fc1``, ``fc2`` (flat); the default split is after
``conv2``, the last spatial stage (as for ConvNet, the rear is the classifier MLP). The reference
pads the first conv by 2 for 1-channel data (so 28 px MNIST reaches 5x5 like 32 px CIFAR); the
classifier input is sized by a dry pass, so any image size of at least 12 px works.
"""

from __future__ import annotations

from torch import nn

from elf_pipeline.models.base import StagedNet, flat_head


def lenet(channels: int, num_classes: int, image_size: int, split: str | None = None) -> StagedNet:
    stages: list[tuple[str, nn.Module]] = [
        ("conv1", nn.Sequential(nn.Conv2d(channels, 6, 5, padding=2 if channels == 1 else 0), nn.ReLU(), nn.MaxPool2d(2, 2))),
        ("conv2", nn.Sequential(nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2, 2))),
    ]
    flatten_to_120 = flat_head(stages, channels, image_size, 120)  # Flatten + Linear(16*h*w, 120)
    stages += [
        ("fc1", nn.Sequential(*flatten_to_120, nn.ReLU())),
        ("fc2", nn.Sequential(nn.Linear(120, 84), nn.ReLU())),
        ("head", nn.Linear(84, num_classes)),
    ]
    return StagedNet(stages, split or "conv2")

"""VGG11 as in the DD reference code (CIFAR variant: 5 max-pools, linear classifier on 512 features).

Each conv (with its norm, ReLU and following max-pool) is one stage ``conv1``..``conv8``; the
official ELF split is after the 5th conv (512x4x4 at 32 px).
"""

from __future__ import annotations

from torch import nn

from elf_pipeline.models.base import ReLU, StagedNet, flat_head, make_norm

VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


def vgg11(channels: int, num_classes: int, image_size: int, norm: str = "instance", split: str | None = None) -> StagedNet:
    stages: list[tuple[str, nn.Module]] = []
    in_channels = channels
    for item in VGG11:
        if item == "M":
            name, block = stages[-1]
            stages[-1] = (name, nn.Sequential(*block, nn.MaxPool2d(2, 2)))
            continue
        stages.append((f"conv{len(stages) + 1}", nn.Sequential(
            nn.Conv2d(in_channels, item, 3, padding=1), make_norm(norm, item), ReLU())))
        in_channels = item
    stages.append(("head", flat_head(stages, channels, image_size, num_classes)))
    return StagedNet(stages, split or "conv5")

"""AlexNet as in the DD reference code (5 convs, 3 max-pools, linear classifier)."""

from __future__ import annotations

from torch import nn

from elf_pipeline.models.base import ReLU, StagedNet, flat_head, make_norm

# (out channels, kernel, padding, max-pool after)
ALEXNET = [(128, 5, 2, True), (192, 5, 2, True), (256, 3, 1, False), (192, 3, 1, False), (192, 3, 1, True)]


def alexnet(channels: int, num_classes: int, image_size: int, norm: str = "none", split: str | None = None) -> StagedNet:
    stages: list[tuple[str, nn.Module]] = []
    in_channels = channels
    for index, (out_channels, kernel, padding, pool) in enumerate(ALEXNET, start=1):
        layers = [nn.Conv2d(in_channels, out_channels, kernel, padding=padding), make_norm(norm, out_channels), ReLU()]
        if pool:
            layers.append(nn.MaxPool2d(2, 2))
        stages.append((f"conv{index}", nn.Sequential(*layers)))
        in_channels = out_channels
    stages.append(("head", flat_head(stages, channels, image_size, num_classes)))
    return StagedNet(stages, split or "conv5")

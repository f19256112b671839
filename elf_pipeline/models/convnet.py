"""ConvNet, the standard distillation model: ``depth`` x [conv3x3 -> norm -> act -> pool] + linear."""

from __future__ import annotations

from torch import nn

from elf_pipeline.models.base import StagedNet, flat_head, make_activation, make_norm, make_pool


def convnet(channels: int, num_classes: int, image_size: int, width: int = 128, depth: int = 3,
            norm: str = "instance", act: str = "relu", pool: str = "avg", split: str | None = None) -> StagedNet:
    stages: list[tuple[str, nn.Module]] = []
    in_channels = channels
    for index in range(1, depth + 1):
        stages.append((f"block{index}", nn.Sequential(
            nn.Conv2d(in_channels, width, kernel_size=3, padding=1),
            make_norm(norm, width), make_activation(act), make_pool(pool),
        )))
        in_channels = width
    stages.append(("head", flat_head(stages, channels, image_size, num_classes)))
    # Official split: after all conv blocks, the rear is the classifier.
    return StagedNet(stages, split or f"block{depth}")

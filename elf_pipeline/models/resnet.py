"""ResNet18 with the CIFAR stem (3x3 conv, no max-pool), as in the DD reference code, or the
ImageNet stem (7x7 stride-2 conv and a 3x3 stride-2 max-pool).

Every BasicBlock is its own stage (``layer{s}_{b}``) so any block can be a split point. The
official ELF split of the CIFAR model is after the first block of stage 4 (``layer4_0``, 512x4x4
at 32 px); that of the ImageNet-stem model on 64 px Tiny ImageNet is after stage 3 (``layer3_1``,
256x4x4), the rear being stage 4 and the classifier (the registry's ``resnet18-imagenet-l4``).
"""

from __future__ import annotations

import torch
from torch import nn

from elf_pipeline.infra.errors import InputError
from elf_pipeline.models.base import ReLU, StagedNet, make_norm, relu


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.norm1 = make_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.norm2 = make_norm(norm, planes)
        self.shortcut = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), make_norm(norm, planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return relu(out + self.shortcut(x))


def resnet18(channels: int, num_classes: int, image_size: int, norm: str = "instance",
             stem: str = "cifar", split: str | None = None, official_split: str = "layer4_0") -> StagedNet:
    if stem == "cifar":
        stem_module = nn.Sequential(nn.Conv2d(channels, 64, 3, stride=1, padding=1, bias=False), make_norm(norm, 64), ReLU())
    elif stem == "imagenet":
        stem_module = nn.Sequential(nn.Conv2d(channels, 64, 7, stride=2, padding=3, bias=False), make_norm(norm, 64), ReLU(),
                                    nn.MaxPool2d(3, stride=2, padding=1))
    else:
        raise InputError(f"unknown resnet stem {stem!r} (allowed: cifar, imagenet)")
    stages: list[tuple[str, nn.Module]] = [("stem", stem_module)]
    in_planes = 64
    for stage, planes in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            stride = 2 if stage > 1 and block == 0 else 1
            stages.append((f"layer{stage}_{block}", BasicBlock(in_planes, planes, stride, norm)))
            in_planes = planes
    stages.append(("head", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))))
    return StagedNet(stages, split or official_split)

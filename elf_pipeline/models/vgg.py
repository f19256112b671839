"""VGG11 as in the DD reference code: the CIFAR variant (5 max-pools, a linear classifier on the
512 features) and the ImageNet variant (the same convs, a 4096-4096 MLP classifier with dropout
on the flattened map).

Each conv (with its norm, ReLU and following max-pool) is one stage ``conv1``..``conv8``. The
official ELF split of the CIFAR variant is after the 5th conv (512x4x4 at 32 px); that of the
ImageNet variant on 64 px Tiny ImageNet after the 6th conv and its max-pool (``conv6``, 512x4x4),
the rear being conv7, conv8 (and its pool) and the MLP. The MLP's input is sized by a dry pass
(512x2x2 at 64 px, the reference's fixed 2048).
"""

from __future__ import annotations

from torch import nn

from elf_pipeline.infra.errors import InputError
from elf_pipeline.models.base import ReLU, StagedNet, flat_head, make_norm

VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
MLP_WIDTH = 4096  # the ImageNet variant's hidden width


def _mlp_head(linear: nn.Sequential, num_classes: int) -> nn.Module:
    """Flatten -> Linear(d, 4096) -> ReLU -> Dropout -> Linear(4096, 4096) -> ReLU -> Dropout -> Linear(4096, classes)."""
    flatten, first = linear[0], linear[1]
    return nn.Sequential(flatten, nn.Linear(first.in_features, MLP_WIDTH), nn.ReLU(), nn.Dropout(),
                         nn.Linear(MLP_WIDTH, MLP_WIDTH), nn.ReLU(), nn.Dropout(), nn.Linear(MLP_WIDTH, num_classes))


def vgg11(channels: int, num_classes: int, image_size: int, norm: str = "instance", head: str = "linear",
          split: str | None = None, official_split: str = "conv5") -> StagedNet:
    if head not in ("linear", "mlp"):
        raise InputError(f"unknown vgg head {head!r} (allowed: linear, mlp)")
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
    linear = flat_head(stages, channels, image_size, num_classes)
    stages.append(("head", linear if head == "linear" else _mlp_head(linear, num_classes)))
    return StagedNet(stages, split or official_split)

"""The shape every model in the registry shares: an ordered list of named stages.

A model is ``stages[0] -> stages[1] -> ... -> head``.  The split layer divides it into
``front`` (stages up to and including the split) and ``rear`` (the stages after it), so
``rear(front(x)) == forward(x)`` holds by construction, and ``layers(x)`` returns the output of
every stage before the head (what feature extraction stores).
"""

from __future__ import annotations

import torch
from torch import nn

from elf_pipeline.infra.errors import InputError

HEAD = "head"


class StagedNet(nn.Module):
    def __init__(self, stages: list[tuple[str, nn.Module]], split: str):
        super().__init__()
        names = [name for name, _ in stages]
        if names[-1] != HEAD:
            raise InputError(f"the last stage must be named {HEAD!r}, got {names[-1]!r}")
        self.stages = nn.ModuleDict(stages)
        self.split = split
        self.set_split(split)

    @property
    def layer_names(self) -> list[str]:
        """Names of the feature stages (everything but the head), in order."""
        return [name for name in self.stages if name != HEAD]

    def set_split(self, split: str) -> None:
        if split not in self.layer_names:
            raise InputError(f"split layer {split!r} does not exist (layers: {', '.join(self.layer_names)})")
        self.split = split
        self._split_index = list(self.stages).index(split)

    def front(self, x: torch.Tensor) -> torch.Tensor:
        for module in list(self.stages.values())[: self._split_index + 1]:
            x = module(x)
        return x

    def rear(self, features: torch.Tensor) -> torch.Tensor:
        for module in list(self.stages.values())[self._split_index + 1:]:
            features = module(features)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rear(self.front(x))

    def layers(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = {}
        for name, module in self.stages.items():
            x = module(x)
            if name != HEAD:
                outputs[name] = x
        return outputs


def make_norm(kind: str, channels: int) -> nn.Module:
    """Normalisation layers by the names the DD literature uses.

    ``instance`` is GroupNorm(C, C) (instance norm with affine parameters, as the published
    ConvNet), ``layer`` is GroupNorm(1, C) (layer norm over C,H,W with per-channel affine),
    ``group`` is GroupNorm(4, C).
    """
    if kind == "instance":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(4, channels), channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise InputError(f"unknown norm {kind!r} (allowed: instance, batch, layer, group, none)")


def relu(x: torch.Tensor) -> torch.Tensor:
    """ReLU that overwrites its input when no gradient is recorded (inference): the same values,
    one memory-bound pass and one feature-map allocation fewer. Only for inputs nothing else holds
    (the output of the preceding conv or norm)."""
    return torch.relu(x) if torch.is_grad_enabled() else torch.relu_(x)


class ReLU(nn.ReLU):
    """``nn.ReLU`` with the in-place inference of ``relu`` (same state dict and repr)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu(x)


def make_activation(kind: str) -> nn.Module:
    activations = {"relu": ReLU, "sigmoid": nn.Sigmoid, "leakyrelu": lambda: nn.LeakyReLU(0.01)}
    if kind not in activations:
        raise InputError(f"unknown activation {kind!r} (allowed: {', '.join(activations)})")
    return activations[kind]()


def make_pool(kind: str) -> nn.Module:
    pools = {"avg": lambda: nn.AvgPool2d(2, 2), "max": lambda: nn.MaxPool2d(2, 2), "none": nn.Identity}
    if kind not in pools:
        raise InputError(f"unknown pooling {kind!r} (allowed: {', '.join(pools)})")
    return pools[kind]()


def flat_head(stages: list[tuple[str, nn.Module]], channels: int, image_size: int, num_classes: int) -> nn.Module:
    """A linear classifier over the flattened output of ``stages`` (size found by a dry pass)."""
    with torch.no_grad():
        x = torch.zeros(1, channels, image_size, image_size)
        for _, module in stages:
            module.eval()
            try:
                x = module(x)
            except (RuntimeError, ValueError) as err:  # e.g. a pool or norm over a 1x1 map
                first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise InputError(f"image_size {image_size} is too small for this architecture ({first_line})") from None
            module.train()
    if x.numel() == 0:
        raise InputError(f"image_size {image_size} is too small for this architecture (features vanish)")
    return nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), num_classes))

"""Adapters that bridge feature shapes between a student's split output and a teacher layer."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class FeatureAdapter(nn.Module):
    """Map features of ``in_shape`` (C,H,W or D) to ``out_shape``: a 1x1 conv for channels and an
    average-pool (shrink) or bilinear resize (grow) for the spatial size; a linear map when either
    side is flat."""

    def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...], nonnegative: bool = False):
        super().__init__()
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self.nonnegative = nonnegative  # a ReLU last: outputs live where post-ReLU features do
        self.spatial = len(self.in_shape) == 3 and len(self.out_shape) == 3
        if self.spatial:
            self.project = nn.Conv2d(self.in_shape[0], self.out_shape[0], kernel_size=1)
        else:
            self.project = nn.Linear(math.prod(self.in_shape), math.prod(self.out_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._map(x)
        return torch.relu(x) if self.nonnegative else x

    def _map(self, x: torch.Tensor) -> torch.Tensor:
        if not self.spatial:
            return self.project(x.flatten(1)).view(-1, *self.out_shape)
        x = self.project(x)
        size = self.out_shape[1:]
        if tuple(x.shape[2:]) == size:
            return x
        if x.shape[2] >= size[0] and x.shape[3] >= size[1]:
            return F.adaptive_avg_pool2d(x, size)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"{self.in_shape} -> {self.out_shape}" + (", relu" if self.nonnegative else "")


def make_adapter(in_shape: tuple[int, ...], out_shape: tuple[int, ...], nonnegative: bool = False) -> nn.Module | None:
    """An adapter, or ``None`` when the shapes already agree."""
    return None if tuple(in_shape) == tuple(out_shape) else FeatureAdapter(in_shape, out_shape, nonnegative)

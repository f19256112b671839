"""Differentiable Siamese Augmentation (DSA, Zhao & Bilen 2021) as pure functions.

One augmentation family is drawn per batch from the strategy string; its parameters are drawn per
sample.  For distillation the real and synthetic batches must see the *same* transformation
(siamese): draw ``sample_params(..., shared=True)`` once and ``apply`` it to both batches (one
parameter set broadcast to every sample, as the published code does).  All randomness comes from
an explicit ``torch.Generator`` so runs are reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from elf_pipeline.infra.errors import InputError

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"


@dataclass(frozen=True)
class DSAConfig:
    strategy: str = DEFAULT_STRATEGY
    flip_prob: float = 0.5
    scale: float = 1.2
    rotate: float = 15.0
    crop_pad: float = 0.125
    cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5

    @property
    def families(self) -> list[str]:
        return [name for name in self.strategy.split("_") if name]


FAMILIES = ("color", "crop", "cutout", "flip", "scale", "rotate")


@dataclass
class DSAParams:
    """One batch's drawn augmentation: the family and its per-sample (or shared) parameters."""

    family: str
    values: dict[str, torch.Tensor] = field(default_factory=dict)


def _uniform(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator)


def sample_params(config: DSAConfig, n: int, height: int, width: int, generator: torch.Generator,
                  shared: bool = False) -> DSAParams:
    """Draw one family and its parameters for ``n`` samples (``shared``: one value for all)."""
    families = config.families
    family = families[int(torch.randint(len(families), (1,), generator=generator))]
    count = 1 if shared else n
    values: dict[str, torch.Tensor] = {}
    if family == "color":
        values = {"brightness": (_uniform(count, generator) - 0.5) * config.brightness,
                  "saturation": _uniform(count, generator) * config.saturation,
                  "contrast": _uniform(count, generator) + config.contrast}
    elif family == "crop":
        shift_y, shift_x = int(height * config.crop_pad + 0.5), int(width * config.crop_pad + 0.5)
        values = {"dy": torch.randint(-shift_y, shift_y + 1, (count,), generator=generator),
                  "dx": torch.randint(-shift_x, shift_x + 1, (count,), generator=generator)}
    elif family == "cutout":
        size_y, size_x = int(height * config.cutout + 0.5), int(width * config.cutout + 0.5)
        values = {"cy": torch.randint(0, height + (1 - size_y % 2), (count,), generator=generator),
                  "cx": torch.randint(0, width + (1 - size_x % 2), (count,), generator=generator),
                  "size": torch.tensor([size_y, size_x])}
    elif family == "flip":
        values = {"flip": _uniform(count, generator) < config.flip_prob}
    elif family == "scale":
        low, high = 1.0 / config.scale, config.scale
        values = {"sx": _uniform(count, generator) * (high - low) + low,
                  "sy": _uniform(count, generator) * (high - low) + low}
    elif family == "rotate":
        values = {"theta": (_uniform(count, generator) - 0.5) * 2 * config.rotate / 180 * math.pi}
    else:
        raise InputError(f"unknown DSA family {family!r} in strategy {config.strategy!r} (allowed: {', '.join(FAMILIES)})")
    return DSAParams(family, values)


def _per_sample(value: torch.Tensor, n: int, x: torch.Tensor) -> torch.Tensor:
    # non_blocking: a blocking host-to-device copy waits for every kernel queued before it, which
    # would stall the GPU once per parameter per batch (the host tensor is staged before returning)
    value = value.to(device=x.device, non_blocking=True)
    return value.expand(n) if value.numel() == 1 else value


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)


def apply(x: torch.Tensor, params: DSAParams) -> torch.Tensor:
    """Apply drawn parameters to a batch (differentiable with respect to ``x``)."""
    n, _, height, width = x.shape
    v = {k: (t if k == "size" else _per_sample(t, n, x)) for k, t in params.values.items()}
    if params.family == "color":
        x = x + v["brightness"].view(-1, 1, 1, 1).to(x.dtype)
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * v["saturation"].view(-1, 1, 1, 1).to(x.dtype) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * v["contrast"].view(-1, 1, 1, 1).to(x.dtype) + mean
    if params.family == "crop":
        # shift bounds from the host copy of the parameters: no device sync
        pad_y, pad_x = int(params.values["dy"].abs().max()), int(params.values["dx"].abs().max())
        padded = F.pad(x, (pad_x, pad_x, pad_y, pad_y))
        rows = (torch.arange(height, device=x.device).view(1, -1, 1) + v["dy"].view(-1, 1, 1) + pad_y)
        cols = (torch.arange(width, device=x.device).view(1, 1, -1) + v["dx"].view(-1, 1, 1) + pad_x)
        batch = torch.arange(n, device=x.device).view(-1, 1, 1)
        return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    if params.family == "cutout":
        size_y, size_x = (int(s) for s in params.values["size"])
        rows = torch.arange(height, device=x.device).view(1, -1, 1)
        cols = torch.arange(width, device=x.device).view(1, 1, -1)
        top = v["cy"].view(-1, 1, 1) - size_y // 2
        left = v["cx"].view(-1, 1, 1) - size_x // 2
        inside = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)
        return x * (~inside).unsqueeze(1).to(x.dtype)
    if params.family == "flip":
        return torch.where(v["flip"].view(-1, 1, 1, 1), x.flip(3), x)
    if params.family == "scale":
        theta = torch.zeros(n, 2, 3, device=x.device)
        theta[:, 0, 0], theta[:, 1, 1] = v["sx"], v["sy"]
        return _affine(x, theta)
    if params.family == "rotate":
        angle = v["theta"]
        theta = torch.zeros(n, 2, 3, device=x.device)
        theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle), torch.sin(-angle)
        theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle), torch.cos(angle)
        return _affine(x, theta)
    raise InputError(f"unknown DSA family {params.family!r}")


def dsa(x: torch.Tensor, config: DSAConfig, generator: torch.Generator) -> torch.Tensor:
    """Augment one batch with per-sample parameters (the evaluation-time use)."""
    return apply(x, sample_params(config, x.shape[0], x.shape[2], x.shape[3], generator))


def dsa_config(block: dict | None) -> DSAConfig | None:
    """Build a DSAConfig from a config block (``None``/``False`` disables augmentation)."""
    if not block:
        return None
    if block is True:
        return DSAConfig()
    return DSAConfig(**block)

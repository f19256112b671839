"""Kernel-level figures for the benchmark: the device's conv/matmul peak per dtype, and the small ops
between the convolutions (instance norm, ReLU, pooling) in each formulation, layout and precision."""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from elf_pipeline.bench.official_loop import synchronize
from elf_pipeline.engine.precision import autocast


def best_seconds(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up: kernel selection, allocation
    synchronize(device)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


@torch.inference_mode()
def measure_peak(device: torch.device, dtype: torch.dtype = torch.float32, repeats: int = 3) -> dict[str, float]:
    """GFLOP/s of a large 3x3 convolution (NCHW and channels-last) and a large matmul; ``peak`` is the best.
    On a CPU, reduced precision runs without native kernels on most machines (a hundred times slower
    than float32), so its problem is sized down to keep the measurement to seconds."""
    if device.type == "cuda":
        batch, size, n = 256, 32, 8192
    else:
        batch, size, n = (32, 32, 1024) if dtype == torch.float32 else (4, 16, 512)
    x = torch.randn(batch, 128, size, size, device=device, dtype=dtype)
    w = torch.randn(128, 128, 3, 3, device=device, dtype=dtype)
    conv_flops = 2 * batch * 128 * 128 * 9 * size * size
    x_cl, w_cl = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
    a = torch.randn(n, n, device=device, dtype=dtype)
    result = {
        "conv": conv_flops / best_seconds(lambda: F.conv2d(x, w, padding=1), device, repeats) / 1e9,
        "conv_channels_last": conv_flops / best_seconds(lambda: F.conv2d(x_cl, w_cl, padding=1), device, repeats) / 1e9,
        "matmul": 2 * n**3 / best_seconds(lambda: a @ a, device, repeats) / 1e9,
    }
    result["peak"] = max(result.values())
    return result


class FusedInstanceNorm(nn.Module):
    """Instance norm with affine parameters as one ``var_mean`` reduction per map: the same maths as
    ``GroupNorm(C, C)`` (biased variance, eps inside the root), a candidate kernel path for the
    benchmark of the small ops."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight[:, None, None] + self.bias[:, None, None]


NORM_OPTIONS = {
    "GroupNorm(C, C)": lambda c: nn.GroupNorm(c, c),
    "InstanceNorm2d(affine)": lambda c: nn.InstanceNorm2d(c, affine=True),
    "var_mean formulation": FusedInstanceNorm,
}


def measure_norms(device: torch.device, precisions: list[str], batch: int = 100, channels: int = 128, size: int = 32,
                  repeats: int = 3, modes: tuple[bool, ...] = (False, True)) -> list[dict]:
    """Milliseconds of one ConvNet block's small ops (instance norm, ReLU, 2x2 average pooling; forward
    and backward) at its first block's shape, for every norm option, memory format and precision,
    eager and through ``torch.compile`` (``modes``: compiled or not). The options compute the same maths
    (``max_abs_difference`` against GroupNorm, in float32)."""
    rows = []
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(batch, channels, size, size, generator=generator).to(device)
    for name, make in NORM_OPTIONS.items():
        for layout in (torch.contiguous_format, torch.channels_last):
            for numerics in precisions:
                for compiled in modes:
                    norm = make(channels).to(device)
                    with torch.no_grad():  # affine parameters away from (1, 0), so a wrong affine shows
                        norm.weight.copy_(torch.empty(channels).uniform_(0.5, 1.5, generator=generator))
                        norm.bias.copy_(torch.empty(channels).uniform_(-0.5, 0.5, generator=generator))
                    block = nn.Sequential(norm, nn.ReLU(), nn.AvgPool2d(2))
                    run = torch.compile(block) if compiled else block
                    x = x0.contiguous(memory_format=layout).requires_grad_(True)

                    def step(run=run, x=x, numerics=numerics):
                        with autocast(device, numerics):
                            out = run(x)
                        out.float().sum().backward()
                        return out

                    with torch.enable_grad():
                        seconds = best_seconds(step, device, repeats)
                        with torch.no_grad():
                            reference = nn.GroupNorm(channels, channels).to(device)
                            reference.load_state_dict(norm.state_dict())
                            difference = float((norm(x0) - reference(x0)).abs().max())
                    rows.append({"norm": name, "layout": "channels_last" if layout == torch.channels_last else "contiguous",
                                 "precision": numerics, "compiled": compiled, "ms": 1e3 * seconds,
                                 "max_abs_difference": difference})
    return rows

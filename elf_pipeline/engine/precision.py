"""Numeric precision of the networks, and the CPU facts every result row records.

``precision`` (a top-level config key, ``--precision`` on every stage that runs a network):

- ``fp32``: everything in float32;
- ``bf16``: the networks' forward (and so backward) passes under bfloat16 autocast — convolutions
  and matrix products in bfloat16 with float32 accumulation; losses, softmax, optimiser state and
  stored features stay float32 (the losses cast their inputs to float32, ``losses.py``);
- ``auto``: ``bf16`` where the device computes it natively — CUDA with bfloat16 support, or a CPU
  with AMX or AVX512-BF16 (read from the CPU's flags at run time) — else ``fp32``. Elsewhere
  bfloat16 runs through emulation, many times slower than float32.

The CLI and the workflow default to ``auto`` (``compile: auto``); the stage functions, called from
Python, default to ``fp32`` without compiling, so library calls and tests compute the same way on
every CPU unless they ask otherwise. The same seed on the same CPU gives the same numbers; a
different CPU (or precision) may round differently, so each row carries ``precision`` and the
CPU's model and flags (``cpu_protocol``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from elf_pipeline.infra.errors import InputError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16")
RESOLVED = ("fp32", "bf16")
# CPU flags that decide bfloat16 speed (AMX tiles, AVX512-BF16) or float32 speed (AVX512, AVX2, FMA)
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
RECORDED_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2", "fma")
# ONEDNN_MAX_CPU_ISA values that still let oneDNN use AVX512-BF16 or AMX
BF16_ISA_LIMITS = ("ALL", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512", "AVX512_CORE_AMX", "AVX10_1_512_AMX",
                   "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX_FP16")
# environment variables that restrict the kernels ATen and oneDNN pick (and so the rounding)
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")


def check_precision(setting: str) -> str:
    if setting not in PRECISIONS:
        raise InputError(f"precision {setting!r}: must be one of {', '.join(PRECISIONS)}")
    return setting


@functools.cache
def cpu_info(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first CPU in ``cpuinfo`` (Linux); elsewhere the platform's name, no flags."""
    path = Path(cpuinfo)
    fields: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())  # the first CPU's
    model = fields.get("model name") or platform.processor() or platform.machine()
    return model, frozenset((fields.get("flags") or fields.get("Features") or "").split())


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU computes bfloat16 products in hardware (AMX or AVX512-BF16), and no
    environment variable keeps oneDNN below the instruction sets that use them."""
    flags = cpu_info()[1] if flags is None else flags
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if limit and limit not in BF16_ISA_LIMITS:
        return False
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (see the module docstring)."""
    import torch

    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def resolve_precision(setting: str, device: torch.device) -> str:
    """``fp32`` or ``bf16`` for a ``precision`` setting on ``device``."""
    check_precision(setting)
    if setting == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return setting


def autocast(device: torch.device, precision: str, cache: bool = True):
    """The context the networks run in: bfloat16 autocast under ``bf16``, nothing under ``fp32``."""
    import torch

    if precision not in RESOLVED:
        raise InputError(f"precision {precision!r} is not resolved (expected fp32 or bf16; resolve 'auto' first)")
    if precision == "fp32":
        return contextlib.nullcontext()
    # CUDA graphs need the cast-weight cache off: a cached cast would be baked into the graph
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=cache)


def cpu_protocol(precision: str, setting: str | None = None) -> dict[str, str]:
    """The fields every result row and artifact records about how its numbers were computed."""
    import torch

    model, flags = cpu_info()
    env = " ".join(f"{name}={os.environ[name]}" for name in KERNEL_ENV if os.environ.get(name))
    return {"precision": precision, "precision_setting": setting or precision, "cpu_model": model,
            "cpu_flags": " ".join(flag for flag in RECORDED_FLAGS if flag in flags) or "none",
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_kernel_env": env}


COMPILE_SETTINGS = ("auto", "true", "false")


def resolve_compile(setting: str | bool, device: torch.device, precision: str) -> bool:
    """Whether the training step runs through ``torch.compile`` for a ``compile`` setting.

    ``auto`` compiles under bfloat16 on a CPU, where the memory-bound small ops between the matrix
    products (instance norm, pooling, activations, the autocast casts) bound the step and inductor
    fuses them; float32 steps and CUDA run eagerly (``make bench`` measures both; docs/performance.md).
    """
    text = str(setting).lower()  # a YAML boolean counts as true/false
    if text not in COMPILE_SETTINGS:
        raise InputError(f"compile {setting!r}: must be one of {', '.join(COMPILE_SETTINGS)}")
    if text == "auto":
        return device.type == "cpu" and precision == "bf16"
    return text == "true"


@dataclass(frozen=True)
class Numerics:
    """How a stage runs its networks on its device: the resolved precision, from which setting, and
    whether training steps are compiled."""

    precision: str = "fp32"
    setting: str = "fp32"
    compile: bool = False

    @classmethod
    def resolve(cls, precision: str, compile: str | bool, device: torch.device) -> Numerics:
        resolved = resolve_precision(precision, device)
        return cls(resolved, precision, resolve_compile(compile, device, resolved))

    def protocol(self) -> dict[str, str]:
        """The precision and CPU fields of a result row or artifact (``cpu_protocol``)."""
        return cpu_protocol(self.precision, self.setting)


def full_precision(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float32 where autocast made it bfloat16 (or float16); float32 and float64 as they
    are. Losses and softmax take their inputs through it."""
    return tensor.float() if tensor.is_floating_point() and tensor.element_size() < 4 else tensor

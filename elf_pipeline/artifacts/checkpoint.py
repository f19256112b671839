"""Self-describing model checkpoints, loaded with ``weights_only=True`` (no pickle execution)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from elf_pipeline.infra.io import ArtifactError, atomic_path, not_torch_file
from elf_pipeline.models import build

if TYPE_CHECKING:
    import torch
    from torch import nn

REQUIRED = ("state_dict", "arch", "channels", "num_classes", "image_size")


def save_checkpoint(path: str | os.PathLike, model: nn.Module, arch: str, channels: int, num_classes: int,
                    image_size: int, **meta: object) -> None:
    import torch

    payload = {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "arch": arch,
               "channels": channels, "num_classes": num_classes, "image_size": image_size, **meta}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict:
    import torch

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: checkpoint not found")
    kind = not_torch_file(path)
    if kind is not None:
        raise ArtifactError(f"{path}: not a loadable weights-only checkpoint (no torch file: it holds {kind})")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ArtifactError(f"{path}: not a loadable weights-only checkpoint ({first_line})") from None
    missing = [key for key in REQUIRED if not isinstance(payload, dict) or key not in payload]
    if missing:
        raise ArtifactError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return payload


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    payload = load_checkpoint(path)
    model = build(payload["arch"], payload["channels"], payload["num_classes"], payload["image_size"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise ArtifactError(f"{path}: weights do not fit architecture {payload['arch']!r} ({str(err).splitlines()[0]})") from None
    return model.to(device).eval(), payload

"""Expert trajectory files for MTT: one network's parameters after every epoch, one HDF5 file per expert.

Layout:

    params           (epochs + 1, num_params) float32 or float16, row e = parameters after epoch e
                     (row 0 = initialisation); one chunk per row, so MTT reads two rows, not the file
    history/loss     (epochs,) mean training loss per epoch
    attrs            arch, index, seed, epochs, num_params, layout (JSON [[name, shape], ...]),
                     channels, num_classes, image_size, zca_eps (0 = no ZCA), lr, test_acc (final
                     epoch, reported only), train_images, train_seconds, storage_bytes, provenance
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from elf_pipeline.infra.io import ArtifactError, atomic_path, open_h5, write_provenance

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class ExpertInfo:
    """What MTT needs to know about an expert file without reading its parameters."""

    path: Path
    arch: str
    epochs: int
    layout: list[tuple[str, tuple[int, ...]]]
    channels: int
    num_classes: int
    image_size: int
    zca_eps: float  # 0: trained without ZCA
    lr: float


def parameter_layout(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """The (name, shape) of every parameter, in the order the flat rows of ``params`` hold them."""
    return [(name, tuple(p.shape)) for name, p in model.named_parameters()]


class ExpertWriter:
    """The open trajectory file: one ``params`` row per epoch, then the history and the attrs."""

    def __init__(self, h5: h5py.File, params: h5py.Dataset):
        self.h5, self.params = h5, params

    def write_epoch(self, epoch: int, flat: np.ndarray) -> None:
        self.params[epoch] = flat.astype(self.params.dtype)

    def finish(self, losses: list[float], attrs: dict, config: dict, inputs: dict) -> int:
        """Write the loss history, the attrs (plus ``storage_bytes``) and provenance; returns the
        bytes ``params`` takes on disk."""
        self.h5.create_dataset("history/loss", data=np.asarray(losses, dtype=np.float64))
        storage = int(self.params.id.get_storage_size())
        self.h5.attrs.update({**attrs, "storage_bytes": storage})
        write_provenance(self.h5, "experts", config, inputs)
        return storage


@contextlib.contextmanager
def expert_writer(path: str | os.PathLike, epochs: int, num_params: int, dtype: str) -> Iterator[ExpertWriter]:
    """Create an expert file atomically: it appears at ``path`` only when the block succeeds."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        params = h5.create_dataset("params", shape=(epochs + 1, num_params), dtype=np.dtype(dtype), chunks=(1, num_params))
        yield ExpertWriter(h5, params)


def read_expert_info(path: str | os.PathLike) -> ExpertInfo:
    with open_h5(path) as h5:
        try:
            attrs = h5.attrs
            layout = [(name, tuple(shape)) for name, shape in json.loads(attrs["layout"])]
            info = ExpertInfo(Path(path), str(attrs["arch"]), int(attrs["epochs"]), layout, int(attrs["channels"]),
                              int(attrs["num_classes"]), int(attrs["image_size"]), float(attrs["zca_eps"]),
                              float(attrs["lr"]))
            rows = h5["params"].shape
        except KeyError as err:
            raise ArtifactError(f"{path}: not an expert trajectory (missing {err})") from None
    if rows != (info.epochs + 1, sum(int(np.prod(shape)) for _, shape in layout)):
        raise ArtifactError(f"{path}: params has shape {rows}, inconsistent with its epochs and layout")
    return info


def read_epochs(path: str | os.PathLike, epochs: list[int]) -> torch.Tensor:
    """The flattened parameters after the given epochs (float32), reading only those rows."""
    import torch

    order = sorted(set(epochs))
    with open_h5(path) as h5:
        rows = h5["params"][order]  # h5py reads only the chunks of these rows
    by_epoch = dict(zip(order, torch.from_numpy(rows.astype(np.float32)), strict=True))
    return torch.stack([by_epoch[e] for e in epochs])

"""matplotlib for the study's figures: the headless Agg backend, loaded only when a figure is drawn,
and PNG files written atomically."""

from __future__ import annotations

import os

from elf_pipeline.infra.io import atomic_path

DPI = 120


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed on cluster nodes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str | os.PathLike) -> None:
    """``figure`` as a PNG at ``path`` (replaced only once fully written), then closed."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    pyplot().close(figure)

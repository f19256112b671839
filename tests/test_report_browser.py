"""The HTML report (``snakemake --report``) of the smoke study (conftest's ``smoke_report``), opened in headless Chromium.

tests/test_report_html.py checks what the file holds; this checks what a browser shows. The report
is a React page: its scripts must run for anything to appear, and a figure appears when its menu
entry is clicked (``app.setView({content: "img", ...})``). The test takes screenshots of

* the report as written: the page must not be blank (the scripts ran in the browser);
* the report with the accuracy figure opened, and the same page with that figure's PNG replaced by
  a blank one: the bar colour of the figure (matplotlib's tab:blue) must fill a block of pixels in
  the first and be absent in the second, and the two must differ where the figure lies.

Chromium is Debian's ``chromium`` (``make browser-deps`` installs it as root); without it the test
fails where it could have been installed (root with apt-get) and is skipped, with the reason, elsewhere
(``conftest.can_install_test_dependencies``).
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import missing_dependency
from PIL import Image

ACCURACY = "results/report/figures/digits/accuracy.png"
SYNSET = "results/report/figures/digits/synsets/random_ipc1.png"
WINDOW = (1600, 1400)
TAB_BLUE = np.array([31, 119, 180])  # the first bar colour of every accuracy panel


def blank_png() -> str:
    """A 1x1 transparent PNG, base64: the figure removed, the page otherwise the same."""
    buffer = io.BytesIO()
    Image.new("RGBA", (1, 1), (0, 0, 0, 0)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session", autouse=True)
def chromium() -> str:
    """Chromium, or a failure where `make test` installs it (root with apt-get; conftest decides).
    Session-scoped so that it is settled before the (session-scoped) smoke study is built."""
    if CHROMIUM is None:
        missing_dependency("needs chromium on PATH (make browser-deps installs it as root: apt-get install chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def report_html(smoke_report: Path) -> Path:
    return smoke_report / "report.html"


def screenshot(page: Path, out: Path) -> np.ndarray:
    """RGB pixels of ``page`` as headless Chromium renders it (scripts run, then the shot)."""
    command = [CHROMIUM, "--headless", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               f"--user-data-dir={out.parent / 'chromium-profile'}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
               "--virtual-time-budget=15000", f"--screenshot={out}", page.as_uri()]
    if os.geteuid() == 0:
        command.insert(1, "--no-sandbox")  # Chromium refuses to run as root inside its sandbox
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0 and out.is_file(), f"chromium failed:\n{result.stderr[-2000:]}"
    with Image.open(out) as image:
        assert image.size == WINDOW
        return np.asarray(image.convert("RGB")).astype(int)


def opened(report: Path, result: str, out: Path, data_uri: str | None = None) -> Path:
    """A copy of the report that opens ``result`` on load, as a click on its menu entry does;
    ``data_uri`` replaces the figure's own image."""
    page = report.read_text()
    source = f'"data:image/png;base64,{data_uri}"' if data_uri else f"results[{result!r}].data_uri"
    script = (f"<script>window.addEventListener('load', () => setTimeout(() => app.setView("
              f"{{content: 'img', contentPath: {source}, resultPath: {result!r}}}), 200));</script>")
    head, body_end, tail = page.rpartition("</body>")  # the last one: embedded results may hold HTML pages
    assert body_end, f"{report}: no </body>"
    out.write_text(head + script + body_end + tail)
    return out


def colour_pixels(pixels: np.ndarray, colour: np.ndarray, tolerance: int = 12) -> np.ndarray:
    return (np.abs(pixels - colour) <= tolerance).all(axis=-1)


def test_report_renders_in_the_browser(report_html: Path, tmp_path: Path) -> None:
    pixels = screenshot(report_html, tmp_path / "report.png")
    background = np.median(pixels.reshape(-1, 3), axis=0)
    non_background = (np.abs(pixels - background).sum(axis=-1) > 30).mean()
    assert non_background > 0.05, f"only {non_background:.4f} of the page differs from its background: blank page"


def test_accuracy_figure_renders(report_html: Path, tmp_path: Path) -> None:
    page = report_html.read_text()
    assert re.search(rf'"{re.escape(ACCURACY)}"', page), f"{ACCURACY} is not in the report"
    with_figure = screenshot(opened(report_html, ACCURACY, tmp_path / "figure.html"), tmp_path / "figure.png")
    without = screenshot(opened(report_html, ACCURACY, tmp_path / "blank.html", blank_png()), tmp_path / "blank.png")
    blue, blue_blank = colour_pixels(with_figure, TAB_BLUE), colour_pixels(without, TAB_BLUE)
    assert blue.sum() > 500, f"{blue.sum()} tab:blue pixels: the accuracy bars are not on screen"
    assert blue_blank.sum() < 50, f"{blue_blank.sum()} tab:blue pixels without the figure"
    changed = np.abs(with_figure - without).sum(axis=-1) > 30
    rows, cols = np.nonzero(changed)
    assert changed.mean() > 0.02, f"only {changed.mean():.4f} of the page changed with the figure"
    with Image.open(report_html.parent / ACCURACY) as image:  # the file the report embeds
        width, height = image.size
    # the changed block is about as large as the figure (the page may scale it down to fit)
    assert cols.max() - cols.min() > 0.4 * min(width, WINDOW[0]), (cols.min(), cols.max(), width)
    assert rows.max() - rows.min() > 0.4 * min(height, WINDOW[1]), (rows.min(), rows.max(), height)


def test_synthetic_image_grid_renders(report_html: Path, tmp_path: Path) -> None:
    with_figure = screenshot(opened(report_html, SYNSET, tmp_path / "figure.html"), tmp_path / "figure.png")
    without = screenshot(opened(report_html, SYNSET, tmp_path / "blank.html", blank_png()), tmp_path / "blank.png")
    changed = np.abs(with_figure - without).sum(axis=-1) > 30
    assert changed.mean() > 0.005, f"only {changed.mean():.4f} of the page changed with the synthetic-image grid"
    # de-normalised digits: grey levels between black and white inside the changed block
    block = with_figure[changed]
    grey = (np.ptp(block, axis=-1) < 8) & (block.mean(axis=-1) > 20) & (block.mean(axis=-1) < 235)
    assert grey.sum() > 100, f"{grey.sum()} grey pixels: no digit images on screen"


"""The finished smoke study's ``snakemake --report`` page (conftest's ``smoke_report``, a copy of the study): the
HTML report must hold every figure with its caption and category, and the tables with their
reference rows.

The report is one self-contained HTML file; Snakemake embeds the results as JSON in
``<script id="results">`` (file name, caption HTML, category, base64 data) and the grouping in
``<script id="categories">``. Those are parsed here, and every embedded PNG is decoded and opened.
"""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from elf_pipeline.stages import report

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CONFIG = "tests/configs/smoke.yaml"

pytestmark = pytest.mark.slow

FIGURES = {  # embedded result -> a phrase of its caption (workflow/report/*.rst)
    "results/report/figures/digits/accuracy.png": "The black tick over each group",
    "results/report/figures/digits/gap_closed.png": "Share of the cross-architecture gap",
    **{f"results/report/figures/digits/synsets/{method}_ipc{ipc}.png": "de-normalised"
       for method in ("random", "dm") for ipc in (1, 2)},
    "results/report/figures/digits/teachers/convnet.png": "Training curve of an ELF teacher",
}
TABLES = {"results/report/summary.html": "per dataset and IPC, methods as rows"}


def snakemake(workdir: Path, *args: str) -> str:
    result = subprocess.run([SNAKEMAKE, *args], cwd=workdir, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def study(smoke_report: Path) -> Path:
    return smoke_report


def embedded(page: str, name: str) -> object:
    """The JSON value Snakemake's report assigns in ``<script id="{name}"> var ... = <json>;``."""
    match = re.search(rf'<script id="{name}">\s*var \w+ = (.*?);\s*</script>', page, flags=re.S)
    assert match, f"report.html has no <script id={name!r}>"
    return json.loads(match.group(1))


def decode(data_uri: str) -> bytes:
    header, _, payload = data_uri.partition(",")
    assert header.endswith(";base64"), header
    return base64.b64decode(payload)


def assert_png(data: bytes, what: str) -> None:
    assert data[:8] == PNG_SIGNATURE, f"{what} is not a PNG"
    with Image.open(io.BytesIO(data)) as image:
        assert image.width > 0 and image.height > 0, what


def test_html_report_holds_every_figure_with_caption_and_category(study: Path) -> None:
    page = (study / "report.html").read_text()
    results = embedded(page, "results")
    assert set(results) == set(FIGURES) | set(TABLES)
    for path, phrase in {**FIGURES, **TABLES}.items():
        assert phrase in results[path]["caption"], f"{path}: caption lacks {phrase!r}"
    for path in FIGURES:
        assert results[path]["mime_type"] == "image/png"
        assert_png(decode(results[path]["data_uri"]), path)
    assert results["results/report/figures/digits/synsets/dm_ipc1.png"]["labels"] == {"method": "dm", "IPC": "1"}
    categories = embedded(page, "categories")
    assert set(categories) == {"Tables", "Accuracy", "Gap closed", "Synthetic images", "Teachers"}
    assert sorted(categories["Synthetic images"]["digits"]) == sorted(p for p in FIGURES if "/synsets/" in p)
    assert "EvaLuation with distillation" in embedded(page, "workflow-desc")
    tables = decode(results["results/report/summary.html"]["data_uri"]).decode()
    for text in ("<h3>IPC 1 · baseline → elf</h3>", "<td>full real data (upper bound)</td>",
                 "<td>random real subset (reference)</td>", "<h3>Gap closed · IPC 1</h3>",
                 "<h2>Time and memory per stage</h2>", "<td>reference</td>", "<td>students</td>"):
        assert text in tables, text


def test_summary_runs_and_reference_files(study: Path) -> None:
    summary = (study / "results/report/summary.md").read_text()
    assert "### IPC 1 · baseline → elf" in summary and "### Gap closed · IPC 1" in summary
    assert re.search(r"^\| full real data \(upper bound\) +\| \d+\.\d ± 0\.0 +\| \d+\.\d ± 0\.0 +\|$", summary, flags=re.M)
    assert re.search(r"^\| random real subset \(reference\) \| [\d.]+ ± [\d.]+ → [\d.]+ ± [\d.]+ \([+-][\d.]+\)", summary,
                     flags=re.M)
    assert "200 of the 1,438 real training images, 3 epochs, 1 seed" in summary
    assert re.search(r"^\| digits +\| reference +\| +2 \|", summary, flags=re.M)
    runs = report.read_runs(study / "results/report/runs.parquet")  # schema check
    assert len(runs) == 2 * 2 * 2 * 2 * 2  # methods x ipc x archs x evaluations x seeds
    assert pq.read_table(study / "results/report/runs.parquet").num_rows == len(runs)
    reference = report.collect_reference([study / "results/report/reference.parquet"])
    assert sorted(reference["arch"]) == ["convnet", "resnet18"] and (reference["train_images"] == 200).all()
    assert reference["test_acc"].between(0, 1).all()
    per_job = pd.read_parquet(study / "results/digits/reference/convnet.parquet")
    assert per_job["train_epochs"].tolist() == [3] and per_job["train_batch_size"].tolist() == [32]


def test_figures_logs_and_nothing_left_to_do(study: Path) -> None:
    for path in FIGURES:
        assert_png((study / path).read_bytes(), path)
    for log in ("report.log", "digits/report/results.log", "digits/reference/convnet.log"):
        assert (study / "results/logs" / log).is_file(), log
    assert "test accuracy" in (study / "results/logs/digits/reference/resnet18.log").read_text()
    assert (study / "results/benchmarks/digits/reference/resnet18.tsv").is_file()
    dry = snakemake(study, "-n", "--configfile", CONFIG)
    assert "Nothing to be done" in dry

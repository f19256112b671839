"""What the report figures (elf_pipeline/stages/report/figures.py) draw, read back from the PNG pixels: bar
heights in proportion to the accuracies, the full-data tick, the synthetic images at their
de-normalised grey levels, the teacher curves; and the errors for inputs that cannot be drawn."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from elf_pipeline.cli import main
from elf_pipeline.infra.errors import ArtifactError
from elf_pipeline.stages.report import figures

TAB_BLUE, TAB_ORANGE = np.array([31, 119, 180]), np.array([255, 127, 14])


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def mask(image: np.ndarray, colour, tolerance: int = 6) -> np.ndarray:
    return (np.abs(image - np.asarray(colour)) <= tolerance).all(axis=-1)


def runs(accuracies: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    rows = [{"dataset": "digits", "method": "dm", "ipc": 1, "arch": arch, "evaluation": evaluation, "seed": seed,
             "test_acc": acc, "loss_mode": "task" if evaluation == "baseline" else "front_rear_task"}
            for (arch, evaluation), values in accuracies.items() for seed, acc in enumerate(values)]
    return pd.DataFrame(rows)


def longest_run(column: np.ndarray) -> int:
    """Extent of the longest vertical run of True, across the 1-2 px grid lines drawn over a bar (a
    bar; the legend patch is a shorter, separate run)."""
    rows = np.flatnonzero(column)
    runs = np.split(rows, np.flatnonzero(np.diff(rows) > 4) + 1)
    return max(int(run[-1] - run[0] + 1) for run in runs)


def test_bar_heights_follow_the_accuracies(tmp_path) -> None:
    out = tmp_path / "acc.png"
    reference = pd.DataFrame({"dataset": ["digits"], "arch": ["convnet"], "test_acc": [1.0]})
    figures.plot_accuracy(runs({("convnet", "baseline"): [0.8, 0.8], ("alexnet", "baseline"): [0.2, 0.2]}), reference,
                          "digits", out)
    image = pixels(out)
    blue = mask(image, TAB_BLUE)
    columns = np.flatnonzero(blue.sum(axis=0) > 5)
    groups = np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1)
    assert len(groups) == 2, f"{len(groups)} blue bars, expected one per architecture"
    heights = [longest_run(blue[:, group[len(group) // 2]]) for group in groups]
    assert heights[0] / heights[1] == pytest.approx(4.0, abs=0.3)  # 80% vs 20%, convnet (distillation arch) first
    bottoms = [np.flatnonzero(blue[:, group].any(axis=1)).max() for group in groups]
    assert abs(bottoms[0] - bottoms[1]) <= 1  # both bars stand on the same axis
    # the full-data tick (100%): a black line over the convnet bar that, unlike the axes frame, does
    # not cross the space between the groups; none over alexnet (no full-data row)
    black = mask(image, (0, 0, 0), tolerance=40)
    gap = np.arange(groups[0].max() + 5, groups[1].min() - 5)
    top = np.flatnonzero(blue[:, groups[0]].any(axis=1)).min()

    def ticks(group):
        return [r for r in range(top - 2) if black[r, group].mean() >= 0.8 and black[r, gap].mean() < 0.2]

    assert ticks(groups[0]), "no full-data tick above the convnet bar"
    assert not ticks(groups[1])


def test_second_evaluation_gets_its_own_colour(tmp_path) -> None:
    out = tmp_path / "acc.png"
    figures.plot_accuracy(runs({("convnet", "baseline"): [0.5], ("convnet", "elf"): [0.5]}),
                          pd.DataFrame(columns=["dataset", "arch", "test_acc"]), "digits", out)
    image = pixels(out)
    blue, orange = mask(image, TAB_BLUE), mask(image, TAB_ORANGE)
    assert blue.sum() > 200 and orange.sum() > 200
    # equal accuracies: equally tall bars, baseline (blue) left of elf (orange)
    assert blue.sum(axis=0).max() == pytest.approx(orange.sum(axis=0).max(), abs=2)
    assert np.flatnonzero(blue.sum(axis=0) > 5).max() < np.flatnonzero(orange.sum(axis=0) > 5).min()


def synthetic_set(path, images: np.ndarray, labels: np.ndarray, **attrs) -> None:
    with h5py.File(path, "w") as h5:
        h5["images"], h5["labels"] = images, labels
        h5.attrs.update({"method": "dm", "ipc": 1, **attrs})


def test_synset_grid_shows_each_class_at_its_grey_level(digits_h5, tmp_path) -> None:
    with h5py.File(digits_h5, "r") as h5:
        mean, std = float(np.asarray(h5.attrs["mean"])[0]), float(np.asarray(h5.attrs["std"])[0])
    levels = np.linspace(0.1, 0.9, 10)  # class c: a flat image of grey level levels[c] once de-normalised
    images = ((levels - mean) / std).reshape(10, 1, 1, 1) * np.ones((10, 1, 16, 16))
    synthetic_set(tmp_path / "synset.h5", images.astype(np.float32), np.arange(10))
    out = tmp_path / "grid.png"
    assert main(["report-synset", "--synset", str(tmp_path / "synset.h5"), "--data", str(digits_h5), "--out", str(out)]) == 0
    image = pixels(out)
    grey = image[..., 0]
    flat = (np.ptp(image, axis=-1) == 0)
    for level in levels:
        assert (flat & (np.abs(grey - 255 * level) <= 2)).sum() > 100, f"grey level {level:.2f} missing from the grid"
    # a second image per class adds a row: the figure grows, and --max-per-class 1 cuts it back
    synthetic_set(tmp_path / "two.h5", np.concatenate([images, images]).astype(np.float32), np.tile(np.arange(10), 2))
    figures.plot_synset(tmp_path / "two.h5", digits_h5, tmp_path / "two.png")
    figures.plot_synset(tmp_path / "two.h5", digits_h5, tmp_path / "one.png", max_per_class=1)
    assert pixels(tmp_path / "two.png").shape[0] > image.shape[0] + 20
    assert abs(pixels(tmp_path / "one.png").shape[0] - image.shape[0]) <= 2


def test_synset_that_does_not_fit_is_refused(digits_h5, tmp_path) -> None:
    synthetic_set(tmp_path / "rgb.h5", np.zeros((10, 3, 16, 16), np.float32), np.arange(10))
    with pytest.raises(ArtifactError, match=r"rgb\.h5: images \(10, 3, 16, 16\) are not NCHW with 1 channels"):
        figures.plot_synset(tmp_path / "rgb.h5", digits_h5, tmp_path / "x.png")
    with h5py.File(tmp_path / "nolabels.h5", "w") as h5:
        h5["images"] = np.zeros((1, 1, 16, 16), np.float32)
    with pytest.raises(ArtifactError, match=r"nolabels\.h5: synthetic set needs datasets 'images' and 'labels'"):
        figures.plot_synset(tmp_path / "nolabels.h5", digits_h5, tmp_path / "x.png")
    with pytest.raises(ArtifactError, match=r"rgb\.h5: prepared dataset lacks attribute 'mean'"):
        figures.plot_synset(tmp_path / "rgb.h5", tmp_path / "rgb.h5", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_teacher_curve_draws_loss_and_accuracy(tmp_path, capsys) -> None:
    history = tmp_path / "history.json"
    history.write_text(json.dumps({"arch": "convnet", "checkpoint_epoch": 3, "test_acc": 0.5, "epochs": [
        {"epoch": e, "train_loss": 2.0 / e, "test_acc": 0.1 * e if e % 2 else None} for e in range(1, 6)]}))
    out = tmp_path / "teacher.png"
    assert main(["report-teacher", "--history", str(history), "--out", str(out)]) == 0
    image = pixels(out)
    assert mask(image, TAB_BLUE).sum() > 100 and mask(image, TAB_ORANGE).sum() > 100
    history.write_text(json.dumps({"epochs": []}))
    assert main(["report-teacher", "--history", str(history), "--out", str(tmp_path / "empty.png")]) == 2
    assert capsys.readouterr().err.strip().endswith(f"{history}: history holds no epochs")
    history.write_text("not json")
    with pytest.raises(ArtifactError, match=r"history\.json: not a teacher history \(JSONDecodeError"):
        figures.plot_teacher(history, tmp_path / "bad.png")
    assert not (tmp_path / "empty.png").exists() and not (tmp_path / "bad.png").exists()


def test_gap_closed_without_a_gap_says_so(tmp_path) -> None:
    out = tmp_path / "gap.png"
    figures.plot_gap_closed(runs({("convnet", "baseline"): [0.5]}), "digits", out)
    image = pixels(out)
    assert not mask(image, TAB_BLUE).any()  # no bars, only the message
    assert image.shape[1] > 2 * image.shape[0]  # the short, wide message figure

"""DD-Ranking's HLR, IOR and LRS on a hand-built table, the expected numbers worked out by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from elf_pipeline.stages.report.ddranking import lrs, scores


def _runs() -> pd.DataFrame:
    rows = []
    for method, evaluation, accs in [("dm", "baseline", [0.69, 0.71]), ("dm", "elf", [0.74, 0.76]),
                                     ("random", "baseline", [0.60, 0.60]), ("random", "elf", [0.62, 0.62]),
                                     ("dm", "kd", [0.80, 0.80])]:
        for seed, acc in enumerate(accs):
            rows.append({"dataset": "fm", "method": method, "ipc": 10, "arch": "convnet", "evaluation": evaluation,
                         "seed": seed, "test_acc": acc})
    return pd.DataFrame(rows)


REFERENCE = pd.DataFrame([{"dataset": "fm", "arch": "convnet", "seed": s, "test_acc": a} for s, a in [(0, 0.89), (1, 0.91)]])


def test_lrs_maps_alpha_minus_one_to_zero_and_one_to_one():
    assert lrs(ior=1.0, hlr=-1.0) == pytest.approx(1.0)
    assert lrs(ior=-1.0, hlr=1.0) == pytest.approx(0.0)
    # alpha = 0.5 * 0.10 - 0.5 * 0.20 = -0.05: (e^-0.05 - e^-1) / (e - e^-1)
    assert lrs(ior=0.10, hlr=0.20) == pytest.approx(0.248192, abs=1e-6)
    # the weight moves alpha: w = 1 reads IOR alone
    assert lrs(ior=0.10, hlr=0.20, weight=1.0) == pytest.approx((math.exp(0.1) - math.exp(-1)) / (math.e - math.exp(-1)))
    with pytest.raises(ValueError, match="weight 1.5"):
        lrs(0.1, 0.2, weight=1.5)


def test_scores_on_a_hand_built_table():
    table = scores(_runs(), REFERENCE).set_index("evaluation")
    assert set(table.index) == {"baseline", "elf", "kd"}  # the random subset is the yardstick, not a row
    # baseline: HLR = 0.90 - 0.70, IOR = 0.70 - 0.60
    assert table.loc["baseline", "hlr"] == pytest.approx(0.20)
    assert table.loc["baseline", "ior"] == pytest.approx(0.10)
    assert table.loc["baseline", "lrs"] == pytest.approx(0.248192, abs=1e-6)
    # elf: HLR keeps the hard-label accuracy (0.70); IOR against random under elf: 0.75 - 0.62
    assert table.loc["elf", "hlr"] == pytest.approx(0.20)
    assert table.loc["elf", "ior"] == pytest.approx(0.13)
    assert table.loc["elf", "lrs"] == pytest.approx(0.254308, abs=1e-6)
    # kd has no random subset trained under kd: IOR and LRS are missing, not guessed
    assert table.loc["kd", "hlr"] == pytest.approx(0.20)
    assert math.isnan(table.loc["kd", "ior"]) and math.isnan(table.loc["kd", "lrs"])


def test_without_reference_rows_hlr_and_lrs_are_missing():
    table = scores(_runs(), None).set_index("evaluation")
    assert table["hlr"].isna().all() and table["lrs"].isna().all()
    assert table.loc["baseline", "ior"] == pytest.approx(0.10)
    assert scores(_runs().iloc[0:0], None).empty


def test_summary_shows_the_scores_and_the_report_writes_them(tmp_path):
    from elf_pipeline.stages.report import render_summary

    runs = _runs().assign(train_epochs=100, teacher=None, adapter=False)
    text = render_summary(runs, REFERENCE.assign(train_images=1000, train_images_total=1000, train_epochs=30))
    assert "## DD-Ranking scores" in text
    # baseline row of dm at IPC 10: HLR 20.0 points, IOR 10.0, LRS 24.8
    assert "20.0 / 10.0 / 24.8" in text
    assert "20.0 / 13.0 / 25.4" in text and "20.0 / – / –" in text
    assert "DD-Ranking" not in render_summary(runs[runs["method"] != "random"])  # no yardstick, no section

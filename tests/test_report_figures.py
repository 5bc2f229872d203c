"""Report figures: nothing is cut off or overlaps, panels share one y-scale that a single
wide interval cannot flatten, and accuracy axes stay near [0, 1].

Checked on the rendered figure: every title, label, tick label, legend entry and
annotation lies inside the canvas, and tick labels of one axis do not overlap.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection

from orchestrator.report import figures
from orchestrator.report.effects import effect_ranking, main_effects

LONG = "amplitude_offset_trainable"
RATES = [0.0005, 0.001, 0.0015, 0.002, 0.0025, 0.003, 0.005]


def visible_texts(fig):
    """(text, window box) of every drawn, non-empty text of the figure."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    out = []
    texts = list(fig.texts)
    for legend in fig.legends:
        texts += legend.get_texts()
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        texts += ax.texts
        if ax.get_legend() is not None:
            texts += ax.get_legend().get_texts() + [ax.get_legend().get_title()]
        for axis, (low, high) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            lo, hi = min(low, high), max(low, high)
            for tick in axis.get_major_ticks():
                if lo - 1e-9 <= tick.get_loc() <= hi + 1e-9 and tick.label1.get_visible():
                    texts.append(tick.label1)
    for text in texts:
        if text.get_visible() and text.get_text().strip():
            out.append((text, text.get_window_extent(renderer)))
    return out


def assert_clean(fig):
    box = fig.bbox
    for text, extent in visible_texts(fig):
        assert extent.x0 >= box.x0 - 1 and extent.x1 <= box.x1 + 1, text.get_text()
        assert extent.y0 >= box.y0 - 1 and extent.y1 <= box.y1 + 1, text.get_text()
    canvas = FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for axis in (ax.xaxis, ax.yaxis):
            labels = [t for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
            extents = [t.get_window_extent(renderer) for t in labels]
            for (a, ea), (b, eb) in itertools.combinations(zip(labels, extents, strict=True), 2):
                assert not ea.overlaps(eb), (a.get_text(), b.get_text())


def effects_table(shift: dict[str, float], n: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for lr, flag, readout in itertools.product(RATES, [False, True], ["z", "zz"]):
        for _ in range(n):
            rows.append(
                {
                    "learning_rate": lr,
                    LONG: flag,
                    "sqe_readout": readout,
                    "test_accuracy": 0.8
                    + shift.get("lr", 0) * (lr > 0.002)
                    + shift.get("readout", 0) * (readout == "zz")
                    + rng.normal(0, 0.004),
                }
            )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------
def test_main_effects_and_pareto_have_nothing_cut_off_or_overlapping():
    frame = effects_table({"lr": 0.02, "readout": 0.005})
    factors = ["learning_rate", LONG, "sqe_readout"]
    table = main_effects(frame, factors, "test_accuracy", bounds=(0, 1))
    assert_clean(figures.main_effects_figure(table, "test_accuracy", (0, 1)))
    ranking = effect_ranking(table)
    # the old vertical Pareto printed "sqe_readoutamplitude_offset_trainable"
    assert_clean(figures.pareto_figure(ranking, "test_accuracy"))


def test_a_wide_interval_does_not_flatten_its_neighbours():
    """As on a copy of the quickstart table: one level's t-interval runs from -0.76 to
    2.41, the other panel's means differ by 0.05 with tight intervals."""
    table = pd.DataFrame(
        {
            "factor": ["qubits", "qubits", "learning_rate", "learning_rate"],
            "level": [9, 10, 0.01, 0.03],
            "n": [2, 2, 8, 8],
            "max": np.nan,
            "mean": [0.82, 0.83, 0.80, 0.85],
            "sd": np.nan,
            "ci_low": [-0.76, 0.81, 0.795, 0.845],
            "ci_high": [2.41, 0.85, 0.805, 0.855],
        }
    )
    fig = figures.main_effects_figure(table, "test_accuracy")
    low, high = fig.axes[0].get_ylim()
    assert (0.85 - 0.80) / (high - low) >= 1 / 7.5  # the means fill a good part of the axis
    assert low > 0.6 and high < 1.05
    # the cut interval is marked at both edges of the qubits panel
    markers = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    ends = sorted(float(y) for c in markers for _, y in c.get_offsets())
    assert ends[0] == pytest.approx(low) and ends[-1] == pytest.approx(high)
    assert_clean(fig)


def test_intervals_that_fit_are_shown_whole():
    means, lows, highs = [0.78, 0.80], [0.75, 0.77], [0.81, 0.83]
    low, high = figures.axis_limits(means, lows, highs, (0, 1))
    assert low <= 0.75 and high >= 0.83
    near_one = figures.axis_limits([0.98, 0.99], [0.9, 0.95], [1.0, 1.0], (0, 1))
    assert near_one[1] <= 1.01  # the accuracy axis ends just past 1


def test_interaction_panels_share_one_scale():
    frame = effects_table({"lr": 0.06, "readout": 0.008})
    pairs = [("learning_rate", "sqe_readout"), (LONG, "sqe_readout")]
    fig = figures.interactions_figure(frame, pairs, "test_accuracy", (0, 1))
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 2
    assert visible[0].get_ylim() == visible[1].get_ylim()
    assert all(len(ax.containers) >= 2 for ax in visible)  # error bars, one per line
    assert_clean(fig)


def test_half_normal_plot_labels_only_effects_beyond_the_margin():
    effects = pd.DataFrame(
        {
            "source": ["qubits", "reuploads", "qubits:reuploads = main_layers:lr_decay", "x"],
            "effect": [0.05, 0.001, -0.002, 0.0005],
        }
    )
    effects["abs_effect"] = effects["effect"].abs()
    fig = figures.half_normal_figure(effects, me=0.01, sme=0.02, metric="test_accuracy")
    labels = {t.get_text() for t in fig.axes[0].texts}
    assert "qubits" in labels and "reuploads" not in labels
    assert {"ME 0.01", "SME 0.02"} <= labels
    assert_clean(fig)


def test_best_by_qubits_figure_has_one_line_per_group_and_a_clean_legend():
    best = pd.DataFrame(
        {
            "qubits": [10, 12, 14, 10, 12, 10],
            "best": [0.80, 0.79, 0.81, 0.84, 0.85, 0.87],
            "mean": [0.78, 0.77, 0.79, 0.83, 0.84, 0.86],
            "ci_low": [0.77, 0.76, 0.78, 0.82, 0.83, 0.85],
            "ci_high": [0.79, 0.78, 0.80, 0.84, 0.85, 0.87],
            "group": ["single sQE, paper encoding"] * 3
            + ["single sQE, remedy: offset 1 trainable + ZZ readout, 800 epochs"] * 2
            + ["MLP encoder"],
        }
    )
    trials = pd.Series([10, 10, 12, 14])
    fig = figures.best_by_qubits_figure(trials, pd.Series([0.8, 0.7, 0.79, 0.81]), best, "acc")
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["a trial", *dict.fromkeys(best["group"])]
    left = fig.axes[0]
    lines = [line for line in left.get_lines() if line.get_label() in set(best["group"])]
    assert [len(line.get_xdata()) for line in lines] == [3, 2, 1]
    assert_clean(fig)


def test_energy_figure_with_two_circuits_is_clean():
    q = np.arange(2, 80)
    table = pd.concat(
        [
            pd.DataFrame(
                {"circuit": c, "qubits": q, "qpu_energy_j": 1e5 * q**2, "gpu_energy_j": k * 2.0**q}
            )
            for c, k in (
                ("R=4, N=1, M=2, final linear", 1e-9),
                ("R=2, N=1, M=1, final linear", 5e-10),
            )
        ],
        ignore_index=True,
    )
    fig = figures.energy_figure(table, {"a": 46, "b": 47}, [10, 12])
    assert len(fig.axes[0].get_lines()) >= 4
    assert_clean(fig)

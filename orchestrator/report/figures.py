"""Report figures (matplotlib object API on the Agg canvas; no pyplot state).

Each function takes prepared tables and returns a ``Figure``; ``to_png`` renders it.
Panels of one figure share their y-scale, so that a small effect does not look as big as
a large one. The scale follows the means and their intervals, but an interval longer than
three times the range of the means is cut at the axis and marked with a triangle (its
ends are in the CSV), so that one panel's wide interval cannot flatten the others. Titles
are wrapped to the width of their panel.
"""

from __future__ import annotations

import io
import math
import textwrap

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from orchestrator.report.effects import interaction_means, level_order

__all__ = [
    "to_png",
    "axis_limits",
    "main_effects_figure",
    "pareto_figure",
    "interactions_figure",
    "half_normal_figure",
    "best_by_qubits_figure",
    "energy_figure",
    "noise_figure",
    "TRUNCATED_NOTE",
]

BLUE, ORANGE, GREY = "#1f77b4", "#ff7f0e", "#9a9a9a"
COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
MARKERS = ("o", "s", "^", "D")
TRUNCATED_NOTE = (
    "An interval longer than three times the range of the means is cut at the edge of the "
    "axis and marked with a triangle (its ends are in the CSV)."
)


def to_png(fig: Figure, *, dpi: int = 100) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def axis_limits(
    means, lows, highs, bounds: tuple[float, float] | None = None
) -> tuple[float, float]:
    """Shared y-limits for means with intervals: the means' range plus a margin that shows
    every interval whole unless it is longer than three times that range (then the means
    still fill a seventh of the axis), at least 0.15 of it; within ``bounds`` (plus a
    sliver)."""
    means = np.asarray(means, dtype=float)
    finite = means[np.isfinite(means)]
    if not len(finite):
        return (0.0, 1.0) if bounds is None else bounds
    lows, highs = np.asarray(lows, dtype=float), np.asarray(highs, dtype=float)
    halves = np.concatenate([means - lows, highs - means])
    halves = halves[np.isfinite(halves) & (halves > 0)]
    longest = float(halves.max()) if len(halves) else 0.0
    low, high = float(finite.min()), float(finite.max())
    spread = high - low
    if spread > 0:
        pad = min(max(1.05 * longest, 0.15 * spread), 3 * spread)
    else:
        pad = 1.05 * longest or max(abs(low) * 0.01, 1e-3)
    low, high = low - pad, high + pad
    if bounds is not None:
        sliver = 0.03 * (high - low)
        low, high = max(low, bounds[0] - sliver), min(high, bounds[1] + sliver)
    return low, high


def main_effects_figure(
    effects: pd.DataFrame, metric: str, bounds: tuple[float, float] | None = None
) -> Figure:
    """One panel per factor: level means with their t-interval as error bars (shared y)."""
    factors = list(dict.fromkeys(effects["factor"]))
    cols = min(4, max(1, len(factors)))
    rows = math.ceil(len(factors) / cols)
    fig = Figure(figsize=(3.3 * cols, 2.9 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, sharey=True, squeeze=False)
    limits = axis_limits(effects["mean"], effects["ci_low"], effects["ci_high"], bounds)
    for ax, f in zip(axes.flat, factors, strict=False):
        group = effects[effects["factor"] == f]
        x = np.arange(len(group))
        _intervals(ax, x, group["mean"], group["ci_low"], group["ci_high"], limits, BLUE)
        ax.plot(x, group["mean"].to_numpy(float), marker="o", color=BLUE)
        _level_ticks(ax, x, list(group["level"]))
        _title(ax, f, 3.3)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylim(*limits)
    for ax in axes.flat[len(factors) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"mean {metric}")
    return fig


def pareto_figure(ranking: pd.DataFrame, metric: str) -> Figure:
    """Factors by range of level means, largest on top (horizontal bars: names never
    overlap), each bar labelled with its share and the cumulative share."""
    n = len(ranking)
    fig = Figure(figsize=(6.4, 1.2 + 0.42 * max(n, 1)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(n)[::-1]
    values = ranking["range"].to_numpy(float)
    ax.barh(y, values, color=BLUE, height=0.6)
    ax.set_yticks(y, list(ranking["factor"]))
    for yi, value, share, cumulative in zip(
        y, values, ranking["share"], ranking["cumulative_share"], strict=True
    ):
        ax.annotate(
            f"{100 * share:.0f}% (cum. {100 * cumulative:.0f}%)",
            (value, yi),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    top = float(np.nanmax(values)) if n and np.isfinite(values).any() else 1.0
    ax.set_xlim(0, 1.35 * top if top > 0 else 1.0)
    ax.set_xlabel(f"range of level means ({metric})")
    ax.grid(alpha=0.3, axis="x")
    _title(ax, "Effects ranked by range (Pareto)", 6.4)
    return fig


def interactions_figure(
    frame: pd.DataFrame,
    pairs: list[tuple[str, str]],
    metric: str,
    bounds: tuple[float, float] | None = None,
) -> Figure:
    """One panel per pair: cell means of ``a`` (x) by level of ``b`` (lines) with
    t-intervals, every panel on one y-scale."""
    cells = [interaction_means(frame, a, b, metric, bounds=bounds) for a, b in pairs]
    stacked = pd.concat(cells, ignore_index=True) if cells else pd.DataFrame()
    limits = axis_limits(
        stacked.get("mean", []), stacked.get("ci_low", []), stacked.get("ci_high", []), bounds
    )
    cols = min(3, max(1, len(pairs)))
    rows = math.ceil(len(pairs) / cols)
    fig = Figure(figsize=(4.0 * cols, 3.5 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, sharey=True, squeeze=False)
    for ax, (a, b), table in zip(axes.flat, pairs, cells, strict=False):
        levels_a = level_order(frame[a])
        position = {level: i for i, level in enumerate(levels_a)}
        levels_b = level_order(frame[b])
        for k, level_b in enumerate(levels_b):
            part = table[table[b] == level_b]
            part = part.assign(_x=part[a].map(position)).sort_values("_x")
            shift = (k - (len(levels_b) - 1) / 2) * 0.06  # keep the error bars apart
            x = part["_x"].to_numpy(float) + shift
            color, marker = _style(k)
            _intervals(ax, x, part["mean"], part["ci_low"], part["ci_high"], limits, color)
            ax.plot(x, part["mean"], marker=marker, color=color, label=_short(level_b))
        _level_ticks(ax, np.arange(len(levels_a)), levels_a)
        ax.set_xlabel(a)
        _title(ax, f"{a} x {b}", 4.0)
        ax.legend(title=b, fontsize=7, title_fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylim(*limits)
    for ax in axes.flat[len(pairs) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"mean {metric}")
    return fig


def half_normal_figure(effects: pd.DataFrame, me: float, sme: float, metric: str) -> Figure:
    """Half-normal plot: ordered |effect| against half-normal quantiles, Lenth's margins of
    error (ME, SME) as vertical lines; effects beyond ME are labelled."""
    from orchestrator.report.factorial import half_normal_scores

    data = effects.sort_values("abs_effect", kind="stable").reset_index(drop=True)
    scores = half_normal_scores(len(data))
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    active = data["abs_effect"] > me if np.isfinite(me) else pd.Series(False, index=data.index)
    ax.scatter(data["abs_effect"], scores, color=np.where(active, ORANGE, BLUE), zorder=3)
    for value, label, style in ((me, "ME", "--"), (sme, "SME", ":")):
        if np.isfinite(value):
            ax.axvline(value, color="black", linestyle=style, linewidth=1)
            ax.annotate(
                f"{label} {value:.3g}",
                (value, 0.02),
                xycoords=("data", "axes fraction"),
                xytext=(3, 0),
                textcoords="offset points",
                fontsize=8,
            )
    labelled = [i for i in range(len(data)) if active.iloc[i]][-6:]  # the largest few
    for k, i in enumerate(labelled):
        ax.annotate(
            str(data.loc[i, "source"]),
            (data.loc[i, "abs_effect"], scores[i]),
            xytext=(-6, 6 + 9 * (k % 2)),
            textcoords="offset points",
            ha="right",
            fontsize=8,
        )
    top = float(data["abs_effect"].max()) if len(data) else 1.0
    limit = max(top, me if np.isfinite(me) else 0.0, sme if np.isfinite(sme) else 0.0)
    ax.set_xlim(0, 1.08 * limit if limit > 0 else 1.0)
    ax.set_xlabel(f"|effect| on {metric}")
    ax.set_ylabel("half-normal quantile")
    ax.grid(alpha=0.3)
    _title(ax, "Half-normal plot of effects with Lenth's margins of error", 6.4)
    return fig


def best_by_qubits_figure(
    qubits: pd.Series, values: pd.Series, best: pd.DataFrame, metric: str
) -> Figure:
    """The paper's Figure 8 per comparison group: left the maximum over seeds and settings
    (the paper's statistic) with every trial as a grey dot, right the mean with its 95 %
    t-interval; one colour and marker pair per group, the legend below both panels."""
    fig = Figure(figsize=(10.0, 4.0 + 0.22 * best["group"].nunique()), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    left.scatter(qubits, values, color=GREY, s=12, alpha=0.6, label="a trial")
    for k, (label, part) in enumerate(best.groupby("group", sort=False)):
        color, marker = _style(k)
        line = "-" if len(part) > 1 else "none"
        x = part["qubits"].to_numpy(float)
        left.plot(x, part["best"], marker=marker, linestyle=line, color=color, label=label)
        shift = (k - (best["group"].nunique() - 1) / 2) * 0.05
        mean = part["mean"].to_numpy(float)
        err = [
            np.nan_to_num(mean - part["ci_low"].to_numpy(float)),
            np.nan_to_num(part["ci_high"].to_numpy(float) - mean),
        ]
        right.errorbar(
            x + shift, mean, yerr=err, marker=marker, linestyle=line, color=color, capsize=3
        )
    ticks = sorted(set(best["qubits"].astype(int).to_list()))
    for ax, title in (
        (left, f"Maximum {metric} over seeds and settings (the paper's statistic)"),
        (right, f"Mean {metric} with 95% t-interval"),
    ):
        ax.set_xlabel("qubits")
        ax.set_xticks(ticks)
        ax.grid(alpha=0.3)
        _title(ax, title, 5.0)
    left.set_ylabel(metric)
    fig.legend(
        *left.get_legend_handles_labels(),
        loc="outside lower center",
        ncol=2,
        fontsize=8,
    )
    return fig


def energy_figure(
    table: pd.DataFrame, crossover: dict[str, int | None], study_qubits: list[int]
) -> Figure:
    """QPU (solid) and GPU (dashed) energy per inference (log scale) by qubit count, one
    colour per circuit, crossovers marked."""
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    parts = list(table.groupby("circuit", sort=False)) if "circuit" in table else [("", table)]
    for k, (circuit, part) in enumerate(parts):
        qpu, gpu = (BLUE, ORANGE) if len(parts) == 1 else (_style(k)[0],) * 2
        suffix = f", {circuit}" if circuit else ""
        ax.plot(part["qubits"], part["qpu_energy_j"], color=qpu, label=f"QPU{suffix}")
        ax.plot(
            part["qubits"],
            part["gpu_energy_j"],
            color=gpu,
            linestyle="-" if len(parts) == 1 else "--",
            label=f"GPU (statevector){suffix}",
        )
    marks = sorted({q for q in crossover.values() if q is not None})
    for k, q in enumerate(marks):
        ax.axvline(q, color="black", linestyle="--", linewidth=1)
        ax.annotate(
            f"crossover: {q} qubits",
            (q, 0.92 - 0.07 * k),
            xycoords=("data", "axes fraction"),
            xytext=(-5, 0),
            textcoords="offset points",
            ha="right",
            fontsize=8,
        )
    ax.set_yscale("log")
    for q in study_qubits:
        ax.axvline(q, color=GREY, linewidth=0.6, alpha=0.6)
    ax.set_xlabel("qubits")
    ax.set_ylabel("energy per inference (J)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    _title(ax, "Inference energy: QPU vs GPU simulation", 6.4)
    return fig


def noise_figure(table: pd.DataFrame, metric: str) -> Figure:
    """Best metric by qubit count, with and without gate noise."""
    fig = Figure(figsize=(6.0, 3.6), layout="constrained")
    ax = fig.subplots()
    for (label, part), color in zip(table.groupby("noise"), (BLUE, ORANGE), strict=False):
        ax.plot(part["qubits"], part["best"], marker="o", color=color, label=f"{label} (best)")
        ax.plot(part["qubits"], part["mean"], linestyle=":", color=color, label=f"{label} (mean)")
    ax.set_xlabel("qubits")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _title(ax, f"{metric} with and without gate noise", 6.0)
    return fig


# ------------------------------------------------------------------------------------
def _intervals(ax, x, mean, low, high, limits: tuple[float, float], color: str) -> None:
    """Error bars cut to the axis; a cut end gets a triangle pointing the way it runs on."""
    mean = np.asarray(mean, dtype=float)
    low = np.asarray(low, dtype=float)
    high = np.asarray(high, dtype=float)
    x = np.asarray(x, dtype=float)
    shown_low = np.clip(np.where(np.isfinite(low), low, mean), *limits)
    shown_high = np.clip(np.where(np.isfinite(high), high, mean), *limits)
    ax.errorbar(
        x,
        mean,
        yerr=[np.maximum(mean - shown_low, 0), np.maximum(shown_high - mean, 0)],
        fmt="none",
        ecolor=color,
        capsize=3,
    )
    below, above = low < limits[0], high > limits[1]
    if below.any():
        ax.scatter(
            x[below], np.full(below.sum(), limits[0]), marker="v", color=color, s=30, clip_on=False
        )
    if above.any():
        ax.scatter(
            x[above], np.full(above.sum(), limits[1]), marker="^", color=color, s=30, clip_on=False
        )


def _style(k: int) -> tuple[str, str]:
    """Colour and marker of the k-th line: every pair differs for the first 40 lines."""
    return COLORS[k % len(COLORS)], MARKERS[(k // len(COLORS)) % len(MARKERS)]


def _level_ticks(ax, x, levels: list) -> None:
    labels = [_short(v) for v in levels]
    longest = max((len(t) for t in labels), default=0)
    rotate = len(labels) > 3 and longest * len(labels) > 24  # upright ones would collide
    ax.set_xticks(x, labels, rotation=90 if rotate else 0)
    ax.set_xlim(-0.5, len(levels) - 0.5)


def _title(ax, text: str, width_in: float, fontsize: float = 10.0) -> None:
    """A title wrapped to the panel's width (about 0.55 em per character)."""
    chars = max(12, int(width_in * 72 / (0.55 * fontsize)))
    ax.set_title(textwrap.fill(text, chars), fontsize=fontsize)


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)

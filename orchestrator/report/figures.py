"""Report figures (matplotlib object API on the Agg canvas; no pyplot state).

Each function takes prepared tables and returns a ``Figure``; ``to_png`` renders it.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from orchestrator.report.effects import interaction_means, level_order

__all__ = [
    "to_png",
    "main_effects_figure",
    "pareto_figure",
    "interaction_figure",
    "best_by_qubits_figure",
    "energy_figure",
    "noise_figure",
]

BLUE, ORANGE, GREY = "#1f77b4", "#ff7f0e", "#9a9a9a"


def to_png(fig: Figure, *, dpi: int = 100) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def main_effects_figure(effects: pd.DataFrame, metric: str) -> Figure:
    """One panel per factor: level means with their t-interval as error bars."""
    factors = list(dict.fromkeys(effects["factor"]))
    cols = min(4, max(1, len(factors)))
    rows = math.ceil(len(factors) / cols)
    fig = Figure(figsize=(3.2 * cols, 2.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, sharey=True, squeeze=False)
    for ax, f in zip(axes.flat, factors, strict=False):
        group = effects[effects["factor"] == f]
        x = np.arange(len(group))
        mean = group["mean"].to_numpy(float)
        low = np.nan_to_num(mean - group["ci_low"].to_numpy(float))
        high = np.nan_to_num(group["ci_high"].to_numpy(float) - mean)
        ax.errorbar(x, mean, yerr=[low, high], marker="o", color=BLUE, capsize=3)
        ax.set_xticks(x, [_short(v) for v in group["level"]], rotation=30 if len(x) > 3 else 0)
        ax.set_title(f)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(factors) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"mean {metric}")
    return fig


def pareto_figure(ranking: pd.DataFrame, metric: str) -> Figure:
    """Factors by range of level means (bars) and the cumulative share (line)."""
    fig = Figure(figsize=(max(4.0, 0.9 * len(ranking) + 2), 3.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(ranking))
    ax.bar(x, ranking["range"], color=BLUE)
    ax.set_xticks(x, ranking["factor"], rotation=30 if len(x) > 4 else 0)
    ax.set_ylabel(f"range of level means ({metric})")
    twin = ax.twinx()
    twin.plot(x, 100 * ranking["cumulative_share"], color=ORANGE, marker="o")
    twin.set_ylim(0, 105)
    twin.set_ylabel("cumulative share (%)")
    ax.set_title("Effects ranked by range (Pareto)")
    return fig


def interaction_figure(frame: pd.DataFrame, a: str, b: str, metric: str) -> Figure:
    """Mean metric over the levels of ``a``, one line per level of ``b``."""
    cells = interaction_means(frame, a, b, metric)
    levels_a = level_order(frame[a])
    position = {level: i for i, level in enumerate(levels_a)}
    fig = Figure(figsize=(4.2, 3.0), layout="constrained")
    ax = fig.subplots()
    for level_b in level_order(frame[b]):
        part = cells[cells[b] == level_b]
        part = part.assign(_x=part[a].map(position)).sort_values("_x")
        ax.plot(part["_x"], part["mean"], marker="o", label=f"{b} = {_short(level_b)}")
    ax.set_xticks(range(len(levels_a)), [_short(v) for v in levels_a])
    ax.set_xlabel(a)
    ax.set_ylabel(f"mean {metric}")
    ax.set_title(f"{a} x {b}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def best_by_qubits_figure(
    qubits: pd.Series, values: pd.Series, best: pd.DataFrame, metric: str
) -> Figure:
    """Every quantum trial as a grey dot, the best per qubit count as a line (paper Fig. 8)."""
    fig = Figure(figsize=(5.5, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.scatter(qubits, values, color=GREY, s=14, alpha=0.7, label="trial")
    if "data.encoder" in best.columns:  # one line per encoder
        for encoder, part in best.groupby("data.encoder", sort=False):
            ax.plot(
                part["qubits"],
                part["best"],
                marker="o",
                label=f"best, {str(encoder).rstrip('/').rsplit('/', 1)[-1]}",
            )
    else:
        ax.plot(best["qubits"], best["best"], color=BLUE, marker="o", label="best per qubit count")
    ax.set_xlabel("qubits")
    ax.set_ylabel(metric)
    ax.set_xticks(sorted(set(best["qubits"].to_list())))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Best {metric} per qubit count")
    return fig


def energy_figure(table: pd.DataFrame, crossover: int | None, study_qubits: list[int]) -> Figure:
    """QPU and GPU energy per inference (log scale) by qubit count, crossover marked."""
    fig = Figure(figsize=(5.5, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.plot(table["qubits"], table["qpu_energy_j"], color=BLUE, label="QPU")
    ax.plot(table["qubits"], table["gpu_energy_j"], color=ORANGE, label="GPU (statevector)")
    ax.set_yscale("log")
    if crossover is not None:
        ax.axvline(crossover, color="black", linestyle="--", linewidth=1)
        ax.annotate(
            f"crossover: {crossover} qubits",
            (crossover, 0.9),
            xycoords=("data", "axes fraction"),
            xytext=(5, 0),
            textcoords="offset points",
            fontsize=8,
        )
    for q in study_qubits:
        ax.axvline(q, color=GREY, linewidth=0.6, alpha=0.6)
    ax.set_xlabel("qubits")
    ax.set_ylabel("energy per inference (J)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("Inference energy: QPU vs GPU simulation")
    return fig


def noise_figure(table: pd.DataFrame, metric: str) -> Figure:
    """Best metric by qubit count, with and without gate noise."""
    fig = Figure(figsize=(5.5, 3.4), layout="constrained")
    ax = fig.subplots()
    for (label, part), color in zip(table.groupby("noise"), (BLUE, ORANGE), strict=False):
        ax.plot(part["qubits"], part["best"], marker="o", color=color, label=f"{label} (best)")
        ax.plot(part["qubits"], part["mean"], linestyle=":", color=color, label=f"{label} (mean)")
    ax.set_xlabel("qubits")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{metric} with and without gate noise")
    return fig


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)

"""The paper's views of a study as pure table functions (figures are drawn in figures.py).

- ``best_by_qubits``: best accuracy per qubit count (the paper's Figure 8);
- ``model_comparison``: max accuracy and parameter count per head family against the
  best classical head (its Table II);
- ``energy_curve``: QPU vs GPU inference energy by qubit count and the crossover;
- ``noise_by_qubits``: accuracy with and without gate noise;
- ``design_summary`` / ``status_summary``: what was planned and what is there.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from model.errors import QsweepError
from model.heads.registry import CLASSICAL_HEADS, ENCODER_HEADS, QUANTUM_HEADS
from orchestrator.report.effects import level_order, mean_interval
from orchestrator.report.study import CONFIG_FIELDS, StudyData

ENCODER = "data.encoder"  # the data factor the paper views group by

__all__ = [
    "raw",
    "quantum_rows",
    "best_by_qubits",
    "encoder_levels",
    "ENCODER",
    "head_family",
    "model_comparison",
    "energy_curve",
    "noise_by_qubits",
    "design_summary",
    "status_summary",
    "incomplete_points",
]


def raw(frame: pd.DataFrame, column: str) -> pd.Series:
    """Unbinned values of a column (binned factors keep them in ``<column>__raw``)."""
    return frame[column + "__raw"] if column + "__raw" in frame.columns else frame[column]


def quantum_rows(frame: pd.DataFrame) -> pd.DataFrame:
    if "head" not in frame.columns:
        return frame
    return frame[frame["head"].isin(QUANTUM_HEADS)]


def encoder_levels(frame: pd.DataFrame) -> list[Any]:
    """The encoders (``data.encoder``) of the trials, in order, when there is more than one."""
    if ENCODER not in frame.columns:
        return []
    levels = level_order(raw(frame, ENCODER).dropna())
    return levels if len(levels) > 1 else []


def best_by_qubits(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per qubit count of the quantum heads: trials, best and mean metric, best trial.

    With several encoders (``data.encoder``) one row per (encoder, qubit count).
    """
    rows = quantum_rows(frame)
    by_encoder = encoder_levels(rows)
    cols = ["qubits", "n", "best", "mean", "best_trial_id", "best_n_params"]
    cols = [ENCODER, *cols] if by_encoder else cols
    if "qubits" not in rows.columns or rows.empty:
        return pd.DataFrame(columns=cols)
    qubits = raw(rows, "qubits").astype(int)
    encoder = raw(rows, ENCODER) if by_encoder else pd.Series("", index=rows.index)
    out = []
    for enc in by_encoder or [""]:
        for q in sorted(qubits[encoder == enc].unique()):
            group = rows[(qubits == q) & (encoder == enc)]
            best = group.loc[group[metric].idxmax()]
            out.append(_best_row(group, best, int(q), metric) | ({ENCODER: enc} if enc else {}))
    return pd.DataFrame(out, columns=cols)


def _best_row(group: pd.DataFrame, best: pd.Series, q: int, metric: str) -> dict[str, Any]:
    return {
        "qubits": int(q),
        "n": len(group),
        "best": float(best[metric]),
        "mean": float(group[metric].mean()),
        "best_trial_id": best.get("trial_id", ""),
        "best_n_params": _int_or_nan(best.get("n_params")),
    }


def head_family(row: pd.Series) -> str:
    """Family label of a trial as in the paper's Table II."""
    head = row.get("head", "quantum")
    if head == "quantum":
        encoders = row.get("encoders", 1)
        return "quantum, multi sQE" if _num(encoders) > 1 else "quantum, single sQE"
    if head == "mlp":
        return f"mlp (hidden={_int_or_nan(row.get('hidden', 0))})"
    if head in ENCODER_HEADS:
        return f"full fine-tuning ({head}, reference)"
    return str(head)


def model_comparison(frame: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, list[str]]:
    """Max and mean (95 % t-interval) metric and parameter count per head family (quantum
    families per qubit count; per study too when the frame holds several studies).

    ``diff_to_best_classical`` = family max - the best classical (mlp, logreg, svc) max.
    Full fine-tuning (``head: finetune``) trains the encoder itself: it is listed as the
    reference row, never as the best classical head. With several encoders
    (``data.encoder``) families are compared per encoder, against that encoder's best
    classical head (named in ``best_classical``).
    """
    by_encoder = encoder_levels(frame)
    studies = "study" in frame.columns and frame["study"].nunique() > 1
    if not by_encoder:
        return _model_comparison(frame, metric, studies)
    parts, notes = [], []
    for enc in by_encoder:
        table, part_notes = _model_comparison(frame[raw(frame, ENCODER) == enc], metric, studies)
        table.insert(0, ENCODER, enc)
        parts.append(table)
        notes += [f"{ENCODER} = {enc}: {n}" for n in part_notes]
    return pd.concat(parts, ignore_index=True), notes


def _model_comparison(
    frame: pd.DataFrame, metric: str, studies: bool
) -> tuple[pd.DataFrame, list[str]]:
    """``studies``: one row per study and family (a combined report of several studies)."""
    cols = [
        *(["study"] if studies else []),
        "family",
        "qubits",
        "trials",
        "max",
        "mean",
        "ci95",
        "n_params",
        "best_trial_id",
        "diff_to_best_classical",
        "best_classical",
    ]
    notes: list[str] = []
    if frame.empty:
        return pd.DataFrame(columns=cols), ["No completed trials to compare."]
    data = frame.copy()
    data["_family"] = data.apply(head_family, axis=1)
    quantum = data["head"].isin(QUANTUM_HEADS) if "head" in data else pd.Series(True, data.index)
    data["_q"] = np.where(quantum, raw(data, "qubits") if "qubits" in data else np.nan, np.nan)
    keys = (["study"] if studies else []) + ["_family", "_q"]
    rows = []
    for key, group in data.groupby(keys, dropna=False, sort=True):
        *study, family, q = key
        best = group.loc[group[metric].idxmax()]
        mean, _, ci = mean_interval(group[metric])
        rows.append(
            {
                **({"study": study[0]} if studies else {}),
                "family": family,
                "qubits": _int_or_nan(q),
                "trials": len(group),
                "max": float(best[metric]),
                "mean": mean,
                "ci95": ci,
                "n_params": _int_or_nan(best.get("n_params")),
                "best_trial_id": best.get("trial_id", ""),
            }
        )
    out = pd.DataFrame(rows)
    classical = data[data["head"].isin(CLASSICAL_HEADS)] if "head" in data else data.iloc[:0]
    if classical.empty:
        out["diff_to_best_classical"] = math.nan
        out["best_classical"] = ""
        notes.append(
            f"No classical baseline ({', '.join(CLASSICAL_HEADS)}) among the completed trials: the difference "
            "to the best classical head cannot be computed. Add head: [logreg, svc, mlp] trials."
        )
    else:
        top = classical.loc[classical[metric].idxmax()]
        out["diff_to_best_classical"] = out["max"] - float(top[metric])
        out["best_classical"] = f"{top['_family']} ({float(top[metric]):.4f})"
    if "head" in data and data["head"].isin(ENCODER_HEADS).any():
        notes.append(
            "Full fine-tuning trains the sentence encoder itself (every encoder weight): it is "
            "the upper reference a head on frozen embeddings could approach, not a competitor "
            "of the same size."
        )
    out = out.sort_values("max", ascending=False, kind="stable").reset_index(drop=True)
    return out[cols], notes


def energy_curve(
    study: StudyData, qubits: range = range(2, 80)
) -> tuple[pd.DataFrame, Any, list[str]]:
    """QPU and GPU energy per inference (J) by qubit count, and the crossover qubit count.

    Uses ``model.energy`` on the best quantum trial's configuration when importable;
    otherwise the mean of the table's ``qpu_energy_j`` / ``gpu_energy_j`` per qubit count.
    Returns (table with qubits, qpu_energy_j, gpu_energy_j; crossover or None; notes).
    """
    cols = ["qubits", "qpu_energy_j", "gpu_energy_j"]
    rows = quantum_rows(study.completed)
    if rows.empty:
        return (
            pd.DataFrame(columns=cols),
            None,
            ["No completed quantum trials: no energy estimate."],
        )
    best = rows.loc[rows[study.metric].idxmax()]
    reason = "model.energy is not available; "
    try:
        from model.energy import EnergyParams, crossover_qubits, energy_table
    except ImportError:
        energy_table = None
    if energy_table is not None:
        try:
            config = _trial_config(best)
            params = EnergyParams()
            table = pd.DataFrame(energy_table(config, qubits, params))
            crossover = crossover_qubits(config, params, qubits)
        except (QsweepError, ValueError, KeyError) as err:
            reason = f"model.energy could not evaluate the best quantum trial ({err}); "
        else:
            note = (
                f"Estimated with model.energy for the circuit of the best quantum trial "
                f"{best.get('trial_id', '')} (encoders={config.encoders}, reuploads={config.reuploads}, "
                f"reupload_layers={config.reupload_layers}, main_layers={config.main_layers}) at every "
                f"register size {qubits.start}..{qubits.stop - 1}, with the default EnergyParams."
            )
            return table[cols], crossover, [note]
    if not {"qpu_energy_j", "gpu_energy_j", "qubits"} <= set(rows.columns):
        return pd.DataFrame(columns=cols), None, [reason + "and the table has no energy columns."]
    data = pd.DataFrame(
        {
            "qubits": raw(rows, "qubits").astype(int),
            "qpu_energy_j": rows["qpu_energy_j"].astype(float),
            "gpu_energy_j": rows["gpu_energy_j"].astype(float),
        }
    ).dropna()
    if data.empty:
        return pd.DataFrame(columns=cols), None, [reason + "and the energy columns are empty."]
    table = data.groupby("qubits", as_index=False).mean()
    above = table[table["gpu_energy_j"] >= table["qpu_energy_j"]]
    crossover = int(above["qubits"].iloc[0]) if len(above) else None
    return table, crossover, [reason + "showing the trials' recorded energy columns."]


def noise_by_qubits(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Quantum heads' best and mean metric by qubit count with and without gate noise.

    Empty when the quantum trials are all noiseless or all noisy.
    """
    cols = ["qubits", "noise", "n", "best", "mean"]
    frame = quantum_rows(frame)  # classical heads have no gates
    if not {"noise_p1", "noise_p2"} & set(frame.columns) or frame.empty:
        return pd.DataFrame(columns=cols)
    p1 = raw(frame, "noise_p1").astype(float) if "noise_p1" in frame else 0.0
    p2 = raw(frame, "noise_p2").astype(float) if "noise_p2" in frame else 0.0
    noisy = (p1 > 0) | (p2 > 0)
    if not noisy.any() or noisy.all():
        return pd.DataFrame(columns=cols)
    data = pd.DataFrame(
        {
            "qubits": raw(frame, "qubits").astype(int) if "qubits" in frame else 0,
            "noise": np.where(noisy, "with gate noise", "noiseless"),
            metric: frame[metric].astype(float),
        }
    )
    out = data.groupby(["qubits", "noise"])[metric].agg(["size", "max", "mean"]).reset_index()
    return out.rename(columns={"size": "n", "max": "best"})[cols]


def design_summary(study: StudyData) -> pd.DataFrame:
    """One row per factor: planned levels, levels observed in the analysed trials, role."""
    rows = []
    names = list(dict.fromkeys([*study.planned_levels, *study.factors, *study.single_level]))
    for f in names:
        values = raw(study.analysed, f) if f in study.analysed else pd.Series([], dtype=object)
        observed = [str(v) for v in level_order(values)]
        role = "analysed"
        if f in study.binned:
            role = f"analysed in {len(study.binned[f])} quantile bins"
        elif f in study.single_level:
            role = "one level observed: not analysed"
        elif f not in study.factors:
            role = "no column: not analysed"
        rows.append(
            {
                "factor": f,
                "planned": _planned_text(study.meta.get("factors", {}).get(f)),
                "observed_levels": len(observed),
                "observed": _observed_text(values, observed, binned=f in study.binned),
                "role": role,
            }
        )
    return pd.DataFrame(rows, columns=["factor", "planned", "observed_levels", "observed", "role"])


def status_summary(study: StudyData) -> tuple[dict[str, Any], pd.DataFrame]:
    """Counts (planned, present, by status, missing) and the failed/stopped trials."""
    table = study.table
    planned = study.meta.get("n_trials_planned")
    counts = table["status"].value_counts().to_dict()
    summary: dict[str, Any] = {
        "planned": planned
        if planned is not None
        else "unknown (no n_trials_planned in study.json)",
        "present": len(table),
        "completed with metric": len(study.completed),
    }
    summary.update({f"status {k}": int(v) for k, v in sorted(counts.items())})
    if isinstance(planned, int):
        summary["missing (planned - present)"] = max(planned - len(table), 0)
    seeds = study.meta.get("seeds")
    if seeds is None and "seed" in table:
        seeds = sorted(table["seed"].dropna().unique().tolist())
    if seeds is not None:  # "3 (0, 1, 2)": how many repeats, and which seeds
        summary["seeds"] = f"{len(seeds)} ({', '.join(map(str, seeds))})"
    else:
        summary["seeds"] = "-"
    bad = table[table["status"] != "completed"]
    keep = [c for c in ("trial_id", "point_id", "seed", "status", "attempts", "error") if c in bad]
    failed = bad[keep].copy()
    if "error" in failed:
        failed["error"] = failed["error"].astype(str).str.slice(0, 160)
    return summary, failed.reset_index(drop=True)


def incomplete_points(study: StudyData) -> pd.DataFrame:
    """Design points (``point_id``) with fewer completed trials than planned seeds."""
    seeds = study.meta.get("seeds")
    table = study.table
    cols = ["point_id", "completed", "planned_seeds", "statuses"]
    if not isinstance(seeds, list) or "point_id" not in table or table.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for point, group in table.groupby("point_id", sort=True):
        done = int((group["status"] == "completed").sum())
        if done < len(seeds):
            statuses = ", ".join(f"{k}: {v}" for k, v in group["status"].value_counts().items())
            rows.append(
                {
                    "point_id": point,
                    "completed": done,
                    "planned_seeds": len(seeds),
                    "statuses": statuses,
                }
            )
    return pd.DataFrame(rows, columns=cols)


# ------------------------------------------------------------------------------------
def _trial_config(row: pd.Series):
    from model.config import TrialConfig

    values = {}
    for f in CONFIG_FIELDS:
        if f in ("device", "seed"):  # the table's device is the resolved one (e.g. cuda:0)
            continue
        value = row.get(f + "__raw", row.get(f))
        if f in row.index and not _missing(value):
            values[f] = _plain(value)
    return TrialConfig.from_dict(values)


def _observed_text(values: pd.Series, observed: list[str], *, binned: bool) -> str:
    if binned:
        return f"{values.min():.3g}..{values.max():.3g}"
    return ", ".join(observed[:8]) + (" ..." if len(observed) > 8 else "")


def _planned_text(spec: Any) -> str:
    if isinstance(spec, dict):
        scale = " (log)" if spec.get("log") else ""
        return f"{spec.get('low')}..{spec.get('high')}{scale}"
    if isinstance(spec, list):
        return ", ".join(map(str, spec))
    return "-"


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _int_or_nan(value: Any) -> Any:
    number = _num(value)
    return int(number) if math.isfinite(number) else math.nan


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value

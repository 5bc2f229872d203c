"""The paper's views of a study as pure table functions (figures are drawn in figures.py).

- ``paper_groups``: like is compared with like: head family (single sQE, multi sQE, MLP
  encoder), encoding (the paper's or a remedy), final linear layer, epochs and encoder
  when they vary;
- ``best_by_qubits``: max (the paper's statistic) and mean with interval per group and
  qubit count (the paper's Figure 8);
- ``model_comparison``: max and mean accuracy and parameter count per head family and
  encoding against the best classical head (its Table II);
- ``energy_curve``: QPU vs GPU inference energy by qubit count and the crossover, for
  the best trial of each group;
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
from orchestrator.report.effects import clip_interval, level_order, mean_interval
from orchestrator.report.groups import (
    PAPER_ENCODING,
    encoder_name,
    encoding,
    head_family,
    int_or_nan,
    setting_applies,
    values_text,
)
from orchestrator.report.study import CONFIG_FIELDS, StudyData

ENCODER = "data.encoder"  # the data factor the paper views group by

__all__ = [
    "raw",
    "quantum_rows",
    "paper_groups",
    "best_by_qubits",
    "encoder_levels",
    "ENCODER",
    "head_family",
    "encoding",
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


def paper_groups(frame: pd.DataFrame) -> pd.DataFrame:
    """The comparison group of every quantum trial: columns family, encoding, final_linear
    and epochs (when they vary), data.encoder (when there are several encoders) and
    ``group``, their label, e.g. "single sQE, paper encoding, 800 epochs"."""
    rows = quantum_rows(frame)
    out = pd.DataFrame(index=rows.index)
    out["family"] = rows.apply(head_family, axis=1) if len(rows) else pd.Series(dtype=object)
    out["encoding"] = rows.apply(encoding, axis=1) if len(rows) else pd.Series(dtype=object)
    label = out["family"].str.replace("quantum, ", "", regex=False)
    label = label.where(out["encoding"] == "", label + ", " + out["encoding"])
    if "final_linear" in rows and raw(rows, "final_linear").nunique() > 1:
        out["final_linear"] = raw(rows, "final_linear").astype(bool)
        label = label.where(out["final_linear"], label + ", no final linear layer")
    if "epochs" in rows and raw(rows, "epochs").nunique() > 1:
        out["epochs"] = raw(rows, "epochs").astype(int)
        label = label + ", " + out["epochs"].astype(str) + " epochs"
    if encoder_levels(rows):
        out[ENCODER] = raw(rows, ENCODER)
        label = label + ", " + out[ENCODER].map(encoder_name)
    out["group"] = label
    return out


def best_by_qubits(
    frame: pd.DataFrame, metric: str, *, bounds: tuple[float, float] | None = None
) -> pd.DataFrame:
    """Per comparison group (:func:`paper_groups`) and qubit count of the quantum heads:
    trials, the maximum metric (the paper's statistic) and the mean with its 95 %
    t-interval (clipped to ``bounds``), the best trial, the studies the trials come from
    and the settings that vary among them.
    """
    rows = quantum_rows(frame)
    groups = paper_groups(rows)
    keys = [k for k in (ENCODER, "family", "encoding", "final_linear", "epochs") if k in groups]
    cols = [
        *([ENCODER] if ENCODER in groups else []),
        "qubits",
        *[k for k in keys if k != ENCODER],
        "n",
        "best",
        "mean",
        "ci_low",
        "ci_high",
        "best_trial_id",
        "best_n_params",
        "studies",
        "varies",
        "group",
    ]
    if "qubits" not in rows.columns or rows.empty:
        return pd.DataFrame(columns=cols)
    data = rows.assign(**{f"_{k}": groups[k] for k in (*keys, "group")})
    data["_qubits"] = raw(rows, "qubits").astype(int)
    out = []
    for label in _group_order(groups):
        part = data[data["_group"] == label]
        for q in sorted(part["_qubits"].unique()):
            cell = part[part["_qubits"] == q]
            best = cell.loc[cell[metric].idxmax()]
            mean, _, half = mean_interval(cell[metric])
            low, high = clip_interval(mean - half, mean + half, bounds)
            out.append(
                {
                    **{k: best[f"_{k}"] for k in keys},
                    "qubits": int(q),
                    "n": len(cell),
                    "best": float(best[metric]),
                    "mean": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "best_trial_id": best.get("trial_id", ""),
                    "best_n_params": int_or_nan(best.get("n_params")),
                    "studies": ", ".join(map(str, dict.fromkeys(cell["study"])))
                    if "study" in cell
                    else "",
                    "varies": _varying(cell, exclude={"qubits", *keys}),
                    "group": label,
                }
            )
    return pd.DataFrame(out, columns=cols)


def _group_order(groups: pd.DataFrame) -> list[str]:
    """Group labels: single sQE, multi sQE, MLP encoder; paper encoding before remedies."""
    family_rank = {"quantum, single sQE": 0, "quantum, MLP encoder": 2}
    first = groups.drop_duplicates("group")
    epochs = first["epochs"] if "epochs" in first else pd.Series(0, index=first.index)
    ranked = sorted(
        zip(first["family"], first["encoding"], epochs, first["group"], strict=True),
        key=lambda r: (
            family_rank.get(r[0], 1),
            len(r[0]),  # multi sQE (E=2) before (E=10)
            r[0],
            r[1] != PAPER_ENCODING,
            r[1],
            r[2],
            r[3],
        ),
    )
    return [r[3] for r in ranked]


def _varying(cell: pd.DataFrame, *, exclude: set[str]) -> str:
    """The settings that take several values among these trials, e.g.
    "learning_rate: 7 values, 0.0005..0.005; final_linear: False, True"."""
    parts = []
    for column in (*CONFIG_FIELDS, "data.encoder", "data.split_seed", "data.n_per_class"):
        if column in exclude or column not in cell or column == "head":
            continue
        if not all(setting_applies(column, h) for h in cell.get("head", ["quantum"])):
            continue
        values = raw(cell, column).dropna().unique()
        if len(values) > 1:
            parts.append(f"{column}: {values_text(values)}")
    return "; ".join(parts)


def model_comparison(
    frame: pd.DataFrame, metric: str, *, bounds: tuple[float, float] | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Max (the paper's statistic) and mean (95 % t-interval, clipped to ``bounds``) metric
    and parameter count per head family and encoding (quantum families per qubit count;
    per study too when the frame holds several studies).

    ``diff_to_best_classical`` = family max - the best classical (mlp, logreg, svc) max.
    Full fine-tuning (``head: finetune``) trains the encoder itself: it is listed as the
    reference row, never as the best classical head. With several encoders
    (``data.encoder``) families are compared per encoder, against that encoder's best
    classical head (named in ``best_classical``).
    """
    by_encoder = encoder_levels(frame)
    studies = "study" in frame.columns and frame["study"].nunique() > 1
    if not by_encoder:
        table, notes = _model_comparison(frame, metric, studies, bounds)
    else:
        parts, notes = [], []
        for enc in by_encoder:
            part = frame[raw(frame, ENCODER) == enc]
            table, part_notes = _model_comparison(part, metric, studies, bounds)
            table.insert(0, ENCODER, enc)
            parts.append(table)
            notes += [f"{ENCODER} = {encoder_name(enc)}: {n}" for n in part_notes]
        table = pd.concat(parts, ignore_index=True)
    if (table["encoding"] == "").all():  # no sQE head: nothing to tell apart
        table = table.drop(columns="encoding")
    return table, notes


def _model_comparison(
    frame: pd.DataFrame, metric: str, studies: bool, bounds: tuple[float, float] | None
) -> tuple[pd.DataFrame, list[str]]:
    """``studies``: one row per study and family (a combined report of several studies)."""
    cols = [
        *(["study"] if studies else []),
        "family",
        "encoding",
        "qubits",
        "trials",
        "max",
        "mean",
        "ci_low",
        "ci_high",
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
    data["_encoding"] = data.apply(encoding, axis=1)
    quantum = data["head"].isin(QUANTUM_HEADS) if "head" in data else pd.Series(True, data.index)
    data["_q"] = np.where(quantum, raw(data, "qubits") if "qubits" in data else np.nan, np.nan)
    keys = (["study"] if studies else []) + ["_family", "_encoding", "_q"]
    rows = []
    for key, group in data.groupby(keys, dropna=False, sort=True):
        *study, family, enc, q = key
        best = group.loc[group[metric].idxmax()]
        mean, _, half = mean_interval(group[metric])
        low, high = clip_interval(mean - half, mean + half, bounds)
        rows.append(
            {
                **({"study": study[0]} if studies else {}),
                "family": family,
                "encoding": enc,
                "qubits": int_or_nan(q),
                "trials": len(group),
                "max": float(best[metric]),
                "mean": mean,
                "ci_low": low,
                "ci_high": high,
                "n_params": int_or_nan(best.get("n_params")),
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
) -> tuple[pd.DataFrame, dict[str, int | None], list[str]]:
    """QPU and GPU energy per inference (J) by qubit count, and the crossover qubit count,
    for the best trial of each comparison group (:func:`paper_groups`).

    ``model.energy`` counts the gates of the PQC (reuploads R, reupload layers N, main
    layers M, final linear layer), so groups whose best trials share that circuit share a
    curve. Returns (table with [circuit,] qubits, qpu_energy_j, gpu_energy_j — the circuit
    column only when there are several; crossover per circuit label, None where there is
    none in the range; notes). Without model.energy: the mean of the table's recorded
    ``qpu_energy_j`` / ``gpu_energy_j`` per qubit count.
    """
    cols = ["qubits", "qpu_energy_j", "gpu_energy_j"]
    rows = quantum_rows(study.completed)
    if rows.empty:
        return pd.DataFrame(columns=cols), {}, ["No completed quantum trials: no energy estimate."]
    reason = "model.energy is not available; "
    try:
        from model.energy import EnergyParams, crossover_qubits, energy_table
    except ImportError:
        energy_table = None
    if energy_table is not None:
        groups = paper_groups(rows)["group"]
        circuits: dict[str, list[str]] = {}
        configs = {}
        try:
            for label in _group_order(paper_groups(rows)):
                part = rows[groups == label]
                best = part.loc[part[study.metric].idxmax()]
                config = _trial_config(best)
                circuit = (
                    f"R={config.reuploads}, N={config.reupload_layers}, M={config.main_layers}, "
                    + ("final linear" if config.final_linear else "no final linear")
                )
                configs.setdefault(circuit, config)
                circuits.setdefault(circuit, []).append(f"{label}: {best.get('trial_id', '')}")
            params = EnergyParams()
            tables, crossover = [], {}
            for circuit, config in configs.items():
                table = pd.DataFrame(energy_table(config, qubits, params))[cols]
                tables.append(table.assign(circuit=circuit) if len(configs) > 1 else table)
                crossover[circuit] = crossover_qubits(config, params, qubits)
        except (QsweepError, ValueError, KeyError) as err:
            reason = f"model.energy could not evaluate the best quantum trial ({err}); "
        else:
            table = pd.concat(tables, ignore_index=True)
            if len(configs) > 1:
                table = table[["circuit", *cols]]
            notes = [
                "Estimated with model.energy at every register size "
                f"{qubits.start}..{qubits.stop - 1} with the default EnergyParams, for the "
                "circuit of the best trial of each group (the groups of the per-qubit view). "
                "model.energy counts the PQC's gates (R, N, M, final linear layer), not the "
                "encoders', so groups whose best trials share a PQC share a curve."
            ]
            notes += [
                f"Circuit {circuit}: best trials {'; '.join(members)}."
                for circuit, members in circuits.items()
            ]
            return table, crossover, notes
    if not {"qpu_energy_j", "gpu_energy_j", "qubits"} <= set(rows.columns):
        return pd.DataFrame(columns=cols), {}, [reason + "and the table has no energy columns."]
    data = pd.DataFrame(
        {
            "qubits": raw(rows, "qubits").astype(int),
            "qpu_energy_j": rows["qpu_energy_j"].astype(float),
            "gpu_energy_j": rows["gpu_energy_j"].astype(float),
        }
    ).dropna()
    if data.empty:
        return pd.DataFrame(columns=cols), {}, [reason + "and the energy columns are empty."]
    table = data.groupby("qubits", as_index=False).mean()
    above = table[table["gpu_energy_j"] >= table["qpu_energy_j"]]
    crossover = int(above["qubits"].iloc[0]) if len(above) else None
    return table, {"recorded": crossover}, [reason + "showing the trials' recorded energy columns."]


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
            role = f"sampled from a range: analysed in {len(study.binned[f])} quantile bins"
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


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value

"""Which trials the paper views compare with which: head family, encoding, encoder name,
and the settings that differ between the studies of a combined report.

    head_family(row)    # 'quantum, single sQE' | 'quantum, multi sQE (E=2)' | 'quantum, MLP encoder'
                        # | 'mlp (hidden=48)' | 'logreg' | 'svc' | 'full fine-tuning (finetune, reference)'
    encoding(row)       # 'paper encoding' | 'remedy: offset 1 + ZZ readout' | '' (no sQE)
    encoder_name("~/.cache/qsweep-encoders/all-mpnet-base-v2")   # 'all-mpnet-base-v2'
    study_settings(table)  # one row per study: the settings that differ between studies
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from model.heads.registry import ENCODER_HEADS, QUANTUM_HEADS, TORCH_HEADS

__all__ = [
    "head_family",
    "encoding",
    "encoder_name",
    "setting_applies",
    "study_settings",
    "values_text",
    "as_number",
    "int_or_nan",
    "PAPER_ENCODING",
]

PAPER_ENCODING = "paper encoding"
# Which heads a setting means something for (a logreg trial's epochs or shots are defaults
# that nothing reads). Run-time settings that do not change results are never compared.
_SQE = (
    "encoders",
    "encoder_layers",
    "encoder_combine",
    "amplitude_offset",
    "amplitude_offset_trainable",
    "sqe_readout",
)
_CIRCUIT = (
    "qubits",
    "reuploads",
    "reupload_layers",
    "main_layers",
    "connectivity",
    "rotation",
    "final_linear",
    "input_scale",
    "shots",
    "noise_p1",
    "noise_p2",
)
_TRAINING = ("epochs", "learning_rate", "lr_decay", "weight_decay")
_RUNTIME = ("seed", "device", "eval_batch_size", "cuda_graphs", "gradient", "cpu_kernel")
_COMPARED_DATA = ("data.encoder", "data.split_seed", "data.n_per_class")


def setting_applies(setting: str, head: Any) -> bool:
    """True when ``setting`` changes what a trial of ``head`` computes."""
    if setting in _RUNTIME:
        return False
    if setting.startswith("data.") or setting == "head":
        return True
    if setting in _SQE:
        return head == "quantum"
    if setting in _CIRCUIT:
        return head in QUANTUM_HEADS
    if setting == "hidden":  # the MLP's width, and the MLP encoder's
        return head in ("mlp", "mlp_encoder")
    if setting == "batch_norm":
        return head == "mlp"
    if setting.startswith("finetune_"):
        return head in ENCODER_HEADS
    if setting in _TRAINING:
        return head in TORCH_HEADS
    if setting == "batch_size":
        return head in TORCH_HEADS or head in ENCODER_HEADS
    return True


def head_family(row: pd.Series) -> str:
    """Family label of a trial as in the paper's Table II (one per kind of head)."""
    head = row.get("head", "quantum")
    if head == "quantum":
        encoders = as_number(row.get("encoders", 1))
        if encoders > 1:
            return f"quantum, multi sQE (E={int(encoders)})"
        return "quantum, single sQE"
    if head == "mlp_encoder":
        return "quantum, MLP encoder"
    if head == "mlp":
        return f"mlp (hidden={int_or_nan(row.get('hidden', 0))})"
    if head in ENCODER_HEADS:
        return f"full fine-tuning ({head}, reference)"
    return str(head)


def encoding(row: pd.Series) -> str:
    """How an sQE head encodes its input: the paper's, or which remedy; "" without an sQE.

    The paper's encoding has no amplitude offset (fixed 0, not trainable) and Pauli-Z
    readout; a remedy adds an offset (``offset 1``, ``offset 0 trainable``) and/or the
    ZZ readout.
    """
    if row.get("head", "quantum") != "quantum":
        return ""
    offset = as_number(row.get("amplitude_offset", 0.0))
    offset = 0.0 if math.isnan(offset) else offset
    trainable = bool(row.get("amplitude_offset_trainable", False) or False)
    parts = []
    if offset != 0 or trainable:
        parts.append(f"offset {offset:g}" + (" trainable" if trainable else ""))
    if str(row.get("sqe_readout", "z")) == "zz":
        parts.append("ZZ readout")
    return "remedy: " + " + ".join(parts) if parts else PAPER_ENCODING


def encoder_name(value: Any) -> str:
    """The encoder's name without its directory: a cache path or hub id -> its last part;
    ``minilm`` (the packaged model) -> all-MiniLM-L6-v2."""
    text = str(value)
    if text == "minilm":
        return "all-MiniLM-L6-v2"
    return text.rstrip("/").rsplit("/", 1)[-1] or text


def study_settings(table: pd.DataFrame, *, encoder_names: bool = False) -> pd.DataFrame:
    """One row per study: the settings whose values differ between the studies.

    A setting is compared only on the trials whose head it applies to (a logreg trial has
    no epochs); a study where it applies to no trial shows "-". Several values in one study
    are listed (up to four, else "N values, min..max"). ``encoder_names``: the encoder
    column is ``encoder`` with names, not ``data.encoder`` as the studies give it.
    """
    from orchestrator.report.study import CONFIG_FIELDS

    first = ("epochs", "data.encoder", "qubits", "encoders")  # what a reader compares first
    columns = [
        c
        for c in dict.fromkeys((*first, *CONFIG_FIELDS, *_COMPARED_DATA))
        if c in table.columns and c not in _RUNTIME and c != "head"
    ]
    studies = list(dict.fromkeys(table["study"]))
    values: dict[str, dict[str, tuple]] = {}
    for column in columns:
        per_study = {}
        for name in studies:
            rows = table[table["study"] == name]
            heads = rows["head"] if "head" in rows else pd.Series("quantum", index=rows.index)
            mask = [setting_applies(column, h) for h in heads]
            present = rows.loc[mask, column].dropna()
            per_study[name] = tuple(sorted(present.unique(), key=_sort_key))
        shown = {v for v in per_study.values() if v}
        if len(shown) > 1 or any(len(v) > 1 for v in shown):
            values[column] = per_study
    rows = []
    for name in studies:
        row = {"study": name}
        for column, per_study in values.items():
            names = encoder_names and column == "data.encoder"
            row["encoder" if names else column] = values_text(per_study[name], encoder=names)
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------
def values_text(values, *, encoder: bool = False) -> str:
    """Values for a table cell: up to four listed, else "N values, min..max"; "-" for none."""
    values = sorted(values, key=_sort_key)
    if not values:
        return "-"
    shown = [encoder_name(v) if encoder else _plain_text(v) for v in values]
    if len(shown) <= 4:
        return ", ".join(shown)
    return f"{len(shown)} values, {shown[0]}..{shown[-1]}"


def _plain_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value.item() if hasattr(value, "item") else value)


def _sort_key(value: Any) -> tuple[int, Any]:
    number = as_number(value)
    return (0, number) if not math.isnan(number) else (1, str(value))


def as_number(value: Any) -> float:
    """``float(value)``, NaN when it is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def int_or_nan(value: Any) -> Any:
    """An int for a finite number, NaN otherwise (a parameter count, a qubit count)."""
    number = as_number(value)
    return int(number) if math.isfinite(number) else math.nan

"""Read one trial's settings from a YAML file (a study file works too).

Used by ``qsweep train`` and ``qsweep circuit``. Recognised top-level keys:
``data`` (DataConfig), ``encoder`` (shortcut for ``data.encoder``), and ``fixed`` or
``trial`` (TrialConfig). The other keys of a study file (``name``, ``factors``,
``search``, ...) are ignored here; for each factor the first level is used, so
``qsweep train search_spaces/quickstart.yaml`` trains that study's first point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from model.config import DataConfig, TrialConfig, parse_value
from model.errors import ConfigError

__all__ = ["read_yaml", "load_trial_file", "apply_sets"]


def read_yaml(path: str | Path, *, what: str = "config file") -> dict[str, Any]:
    """Parse a YAML mapping; errors name the file, the line and what the parser said."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist.")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{path}:{where} is not valid YAML: {problem}.") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(
            f"{path} must hold a YAML mapping at the top level, got {type(doc).__name__}."
        )
    return doc


def apply_sets(trial: dict[str, Any], data: dict[str, Any], sets: list[str]) -> None:
    """Apply ``--set key=value`` (``data.key=value`` for data settings) in place."""
    for item in sets:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"--set {item!r} is not of the form key=value (e.g. --set qubits=12)."
            )
        if key.startswith("data."):
            data[key[5:]] = parse_value(text)
        else:
            trial[key.removeprefix("trial.").removeprefix("fixed.")] = parse_value(text)


def load_trial_file(
    path: str | Path,
    *,
    sets: list[str] = (),
    data_source: str | None = None,
    encoder: str | None = None,
) -> tuple[TrialConfig, DataConfig]:
    """TrialConfig and DataConfig from a YAML file plus command-line overrides."""
    doc = read_yaml(path)
    trial = dict(_mapping(doc, "trial", path) or _mapping(doc, "fixed", path))
    for name, levels in (_mapping(doc, "factors", path) or {}).items():
        if name not in trial and isinstance(levels, list) and levels:
            trial[name] = levels[0]
    data = dict(_mapping(doc, "data", path))
    if doc.get("encoder") is not None:
        data["encoder"] = doc["encoder"]
    apply_sets(trial, data, list(sets))
    if data_source:
        data["source"] = data_source
    if encoder:
        data["encoder"] = encoder
    where = "trial" if "trial" in doc else "fixed"
    return TrialConfig.from_dict(trial, where=where), DataConfig.from_dict(data)


def _mapping(doc: dict[str, Any], key: str, path: str | Path) -> dict[str, Any]:
    value = doc.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: '{key}' must be a mapping of settings, got {value!r}.")
    return value

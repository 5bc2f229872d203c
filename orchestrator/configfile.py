"""The one reader of trial settings in YAML files and ``--set`` options.

Used by ``qsweep train``, ``qsweep circuit``, ``qsweep energy`` and (for the ``trial`` /
``fixed`` rule and :func:`read_yaml`) by :mod:`orchestrator.spec`. The rule:

- ``trial`` and ``fixed`` name the same mapping of TrialConfig settings; give one;
- ``data`` holds DataConfig settings, ``encoder`` is a shortcut for ``data.encoder``;
- in a study file the other keys (``name``, ``factors``, ``search``, ...) are ignored,
  except that each listed factor not set in ``trial``/``fixed`` takes its first level, so
  ``qsweep train search_spaces/quickstart.yaml`` trains that study's first point;
- ``--set KEY=VALUE`` (values parsed as YAML) changes a trial setting; ``trial.KEY`` and
  ``fixed.KEY`` say the same, ``data.KEY`` changes a data setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from model.config import DataConfig, TrialConfig
from model.errors import ConfigError

__all__ = [
    "read_yaml",
    "parse_value",
    "parse_sets",
    "trial_mapping",
    "trial_settings",
    "mapping_at",
    "load_trial_file",
]


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


def parse_value(text: str) -> Any:
    """Parse a ``--set key=value`` right-hand side as YAML (``1e-3``, ``true``, ``[1, 2]``)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):  # PyYAML reads "1e-3" (no dot) as a string
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    return value


def parse_sets(sets: list[str] | tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--set`` items -> (trial settings, data settings), later items winning."""
    trial: dict[str, Any] = {}
    data: dict[str, Any] = {}
    for item in sets:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r} is not KEY=VALUE (e.g. --set qubits=12).")
        if key.startswith("data."):
            data[key[5:]] = parse_value(text)
        else:
            trial[key.removeprefix("trial.").removeprefix("fixed.")] = parse_value(text)
    return trial, data


def trial_mapping(doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The key (``trial`` or ``fixed``) and mapping of a document's trial settings."""
    if "fixed" in doc and "trial" in doc:
        raise ConfigError("give either 'fixed' or 'trial' (the same thing), not both.")
    key = "trial" if "trial" in doc else "fixed"
    return key, mapping_at(doc, key)


def trial_settings(doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """:func:`trial_mapping` plus the first level of each listed factor not set there."""
    key, values = trial_mapping(doc)
    trial = dict(values)
    for name, levels in mapping_at(doc, "factors").items():
        if name not in trial and isinstance(levels, list) and levels:
            trial[name] = levels[0]
    return key, trial


def load_trial_file(
    path: str | Path,
    *,
    sets: list[str] = (),
    data_source: str | None = None,
    encoder: str | None = None,
) -> tuple[TrialConfig, DataConfig]:
    """TrialConfig and DataConfig from a YAML file plus command-line overrides."""
    doc = read_yaml(path)
    try:
        where, trial = trial_settings(doc)
        data = dict(mapping_at(doc, "data"))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    if doc.get("encoder") is not None:
        data["encoder"] = doc["encoder"]
    trial_sets, data_sets = parse_sets(list(sets))
    trial.update(trial_sets)
    data.update(data_sets)
    if data_source:
        data["source"] = data_source
    if encoder:
        data["encoder"] = encoder
    return TrialConfig.from_dict(trial, where=where), DataConfig.from_dict(data)


def mapping_at(doc: dict[str, Any], key: str) -> dict[str, Any]:
    """``doc[key]`` as a mapping (absent or null: empty); ConfigError naming the key otherwise."""
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key} = {value!r} must be a mapping.")
    return value

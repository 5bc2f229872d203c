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
from model.errors import ConfigError, short_repr

__all__ = [
    "read_yaml",
    "StrictLoader",
    "MAX_ALIAS_VALUES",
    "parse_value",
    "parse_sets",
    "trial_mapping",
    "trial_settings",
    "mapping_at",
    "load_trial_file",
]


# Values an alias may add to a document beyond the ones written out in it (anchors that
# repeat a block are fine; a "billion laughs" file that expands 753 bytes into 10^9 is not).
MAX_ALIAS_VALUES = 10_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Refused(yaml.YAMLError):
    """A well-formed YAML document that qsweep refuses (duplicate key, alias bomb)."""


class StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """PyYAML's safe loader (libyaml's parser where present, which also bounds nesting)
    that refuses a key given twice in one mapping and aliases that expand past
    :data:`MAX_ALIAS_VALUES` values or refer to themselves."""

    def construct_document(self, node: yaml.Node) -> Any:
        self._check(node)
        return super().construct_document(node)

    def _check(self, root: yaml.Node) -> None:
        """One iterative walk over the composed lists and mappings, each visited once,
        before anything is built (and before ``<<`` merges rewrite mappings): duplicate
        keys, recursive aliases, and the values that aliases add to the document."""
        sizes: dict[int, int] = {}  # id(node) -> values under it, aliases expanded
        ancestors: set[int] = set()
        added = 0  # values under the second and later references to a node
        stack: list[tuple[yaml.Node, bool]] = [(root, False)]
        while stack:
            node, finished = stack.pop()
            inner = [c for c in _children(node) if not isinstance(c, yaml.ScalarNode)]
            if finished:
                scalars = len(_children(node)) - len(inner)
                sizes[id(node)] = 1 + scalars + sum(sizes[id(child)] for child in inner)
                ancestors.discard(id(node))
                continue
            if id(node) in sizes:  # an alias to a list or mapping built already
                added += sizes[id(node)]
                continue
            if id(node) in ancestors:
                raise _Refused(
                    f"an alias refers to the list or mapping on line {node.start_mark.line + 1} "
                    "that contains it (a recursive alias); write the values out"
                )
            if isinstance(node, yaml.MappingNode):
                self._check_keys(node)
            ancestors.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in inner)
        if added > MAX_ALIAS_VALUES:
            count = f"{added:,}" if added < 10**15 else "more than 10^15"
            raise _Refused(
                f"its YAML aliases (*name) expand to {count} values beyond the ones written "
                f"out, more than the {MAX_ALIAS_VALUES:,} allowed; write the values out instead"
            )

    def _check_keys(self, node: yaml.MappingNode) -> None:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:  # keys as written; a << merge may be overridden
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in lines:
                where = (
                    f"on line {line}" if lines[key] == line else f"on lines {lines[key]} and {line}"
                )
                raise _Refused(
                    f"key {short_repr(key)} is given twice in one mapping, {where}; give it once"
                )
            lines[key] = line


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def read_yaml(path: str | Path, *, what: str = "config file") -> dict[str, Any]:
    """Parse a YAML mapping; errors name the file, the line and what the parser said.

    Refused with a ConfigError: a missing or empty file, bytes that are not UTF-8, YAML
    that does not parse, a key given twice in one mapping, an alias bomb, and a top
    level that is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {short_repr(str(path))} does not exist.")
    raw = path.read_bytes()
    if not raw.strip():
        raise ConfigError(f"{path}: the file is empty; a {what} holds a YAML mapping of settings.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path} is not a UTF-8 YAML file (byte {raw[err.start]:#04x} at offset "
            f"{err.start} is not UTF-8); give a {what} as UTF-8 text."
        ) from None
    try:
        doc = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a safe loader
    except _Refused as err:
        raise ConfigError(f"{path}: {err}.") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{path}:{where} is not valid YAML: {problem}.") from None
    except RecursionError:  # the pure-Python parser, where libyaml is missing
        raise ConfigError(f"{path} nests lists or mappings too deeply to read.") from None
    if doc is None:
        raise ConfigError(
            f"{path}: the file holds no settings (only comments, blank lines or null); "
            f"a {what} holds a YAML mapping of settings."
        )
    if not isinstance(doc, dict):
        raise ConfigError(
            f"{path} must hold a YAML mapping at the top level, got {type(doc).__name__}."
        )
    return doc


def parse_value(text: str) -> Any:
    """Parse a ``--set key=value`` right-hand side as YAML (``1e-3``, ``true``, ``[1, 2]``)."""
    try:
        value = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a safe loader
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
            raise ConfigError(f"--set {short_repr(item)} is not KEY=VALUE (e.g. --set qubits=12).")
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
        raise ConfigError(f"{key} = {short_repr(value)} must be a mapping.")
    return value

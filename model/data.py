"""Labelled sentences: loading (demo, Hugging Face hub, local files) and low-data protocols.

    from model.config import DataConfig
    from model.data import make_splits
    splits = make_splits(DataConfig(source="demo", protocol="paper", n_per_class=100))

Sources (``DataConfig.source``):
- ``demo``: the offline demo set of :mod:`model.demo` (500 sentences, 300/100/100).
- ``hf:NAME``: ``datasets.load_dataset(NAME)`` (e.g. ``hf:SetFit/sst2``); fails fast with
  a DataError when the hub is declared offline or unreachable.
- a local directory with ``train`` and optionally ``validation`` (or ``dev``/``val``) and
  ``test`` files, each ``.jsonl``, ``.csv`` or ``.parquet`` with ``text`` and ``label``
  columns. Labels may be 0/1 (ints, floats 0.0/1.0, strings "0"/"1") or the strings
  "negative"/"positive" (any case). Protocol ``paper`` needs only ``train``; protocol
  ``splits`` needs all three.

Protocols (seeded with ``numpy.random.Generator(PCG64(split_seed))``):
- ``paper``: pool every split, drop repeated texts (first occurrence kept; a text that
  appears with both labels is dropped entirely), draw ``n_per_class`` sentences per
  class, split them into train/validation with ``n_val = ceil(val_fraction * 2n)``
  (sklearn's rounding; 512 drawn at 0.15 -> 435/77), stratified, and test on every
  remaining sentence. No text occurs in two splits.
- ``splits``: draw ``n_per_class`` per class from train (0: all of train); validation
  and test are the given files, unchanged (so results compare with published ones).
``max_test > 0`` keeps a seeded random subsample of that many test rows.
"""

from __future__ import annotations

import csv
import json
import math
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from model.config import DataConfig
from model.errors import ConfigError, DataError
from model.types import TextSplits

__all__ = [
    "load_labelled",
    "make_splits",
    "split_paper",
    "split_given",
    "hub_unavailable_reason",
    "SPLIT_NAMES",
    "SPLIT_ALIASES",
    "FILE_SUFFIXES",
]

Split = tuple[list[str], np.ndarray]  # (texts, int64 labels 0/1)

SPLIT_NAMES = ("train", "validation", "test")
SPLIT_ALIASES = {"train": ("train",), "validation": ("validation", "dev", "val"), "test": ("test",)}
FILE_SUFFIXES = (".jsonl", ".csv", ".parquet")
LABEL_WORDS = {"0": 0, "1": 1, "negative": 0, "positive": 1}
LOCAL_DATA_HINT = (
    "Use local data instead: --data /path/to/dir holding train/validation/test files "
    "(.jsonl, .csv or .parquet with 'text' and 'label' columns), or --data demo for the "
    "offline demo set."
)


# --- loading ---------------------------------------------------------------------------
def load_labelled(source: str) -> dict[str, Split]:
    """Load ``{"train", "validation", "test"}`` -> (texts, int64 labels) from ``source``.

    A split a local directory does not have is returned empty (``[]``, shape ``(0,)``).
    """
    if source == "demo":
        from model.demo import demo_splits

        return demo_splits()
    if source.startswith("hf:"):
        return _load_hub(source[3:])
    return _load_directory(Path(source).expanduser())


def _empty() -> Split:
    return [], np.zeros(0, dtype=np.int64)


def _load_directory(root: Path) -> dict[str, Split]:
    expected = (
        "train plus optional validation (or dev/val) and test, each as "
        + "/".join(FILE_SUFFIXES)
        + " with 'text' and 'label' columns"
    )
    if not root.is_dir():
        what = "is a file, not a directory" if root.exists() else "does not exist"
        raise DataError(
            f"data directory {str(root)!r} {what}. Expected a directory with {expected}. {LOCAL_DATA_HINT}"
        )
    found = sorted(p.name for p in root.iterdir())
    out: dict[str, Split] = {}
    for split, aliases in SPLIT_ALIASES.items():
        matches = [
            root / f"{a}{s}" for a in aliases for s in FILE_SUFFIXES if (root / f"{a}{s}").is_file()
        ]
        if len(matches) > 1:
            names = ", ".join(sorted(p.name for p in matches))
            raise DataError(
                f"data directory {str(root)!r} has several files for split {split!r}: {names}; keep one."
            )
        out[split] = _read_file(matches[0]) if matches else _empty()
        if split == "train" and not matches:
            raise DataError(
                f"data directory {str(root)!r} has no train file. Found: {', '.join(found) or 'nothing'}. "
                f"Expected {expected}, e.g. train.jsonl."
            )
    return out


def _read_file(path: Path) -> Split:
    """Read one split file; validate texts and labels. Row numbers in errors are 1-based data rows."""
    suffix = path.suffix
    try:
        if suffix == ".jsonl":
            columns, rows = _read_jsonl(path)
        elif suffix == ".csv":
            columns, rows = _read_csv(path)
        else:
            columns, rows = _read_parquet(path)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: is not UTF-8 text ({err}); save it as UTF-8.") from None
    except csv.Error as err:
        raise DataError(f"{path}: is not valid CSV ({err}).") from None
    for name in ("text", "label"):
        if name not in columns:
            raise DataError(
                f"{path}: missing column {name!r}; found columns: {', '.join(map(str, columns)) or 'none'}. "
                "Each file needs 'text' and 'label' columns."
            )
    texts = _check_texts([r.get("text") for r in rows], path)
    labels = _parse_labels([r.get("label") for r in rows], path)
    return texts, labels


def _read_jsonl(path: Path) -> tuple[list[str], list[dict]]:
    rows: list[dict] = []
    columns: dict[str, None] = {}
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {number} is not valid JSON ({err.msg}).") from None
            if not isinstance(row, dict):
                raise DataError(
                    f"{path}: line {number} is not a JSON object: {line.strip()[:80]!r}."
                )
            columns.update(dict.fromkeys(row))
            rows.append(row)
    return list(columns), rows


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _read_parquet(path: Path) -> tuple[list[str], list[dict]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: cannot be read as Parquet ({err}).") from None
    return table.column_names, table.to_pylist()


def _check_texts(values: list, where: object) -> list[str]:
    for number, value in enumerate(values, start=1):
        if not isinstance(value, str) or not value.strip():
            raise DataError(
                f"{where}: row {number} has an empty or non-text 'text' value ({value!r}); "
                "every row needs a non-blank sentence."
            )
    return list(values)


def _parse_labels(values: list, where: object) -> np.ndarray:
    """0/1 as ints, integral floats, or strings "0"/"1"/"negative"/"positive"."""
    out = np.empty(len(values), dtype=np.int64)
    bad: dict[str, int] = {}
    for number, value in enumerate(values, start=1):
        label = _label_of(value)
        if label is None:
            bad.setdefault(repr(value), number)
        else:
            out[number - 1] = label
    if bad:
        shown = ", ".join(f"{v} (first at row {n})" for v, n in list(bad.items())[:5])
        raise DataError(
            f"{where}: labels must be binary; found {shown}. "
            "Allowed: 0/1 (numbers or strings) or 'negative'/'positive'."
        )
    return out


def _label_of(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return int(value)
    if isinstance(value, float) and value in (0.0, 1.0):
        return int(value)
    if isinstance(value, str):
        return LABEL_WORDS.get(value.strip().lower())
    return None


# --- Hugging Face hub --------------------------------------------------------------------
def hub_unavailable_reason(timeout: float = 3.0) -> str | None:
    """Why the Hugging Face hub cannot be used right now, or None when it looks reachable.

    Offline mode declared by ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` /
    ``TRANSFORMERS_OFFLINE`` wins; otherwise one TCP connection to the hub endpoint is
    tried (skipped when a proxy is configured).
    """
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"offline mode is declared ({var}={os.environ[var]})"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as err:
        return f"the hub at {host}:{port} is unreachable ({err})"


def _load_hub(name: str) -> dict[str, Split]:
    if not name:
        raise DataError("data source 'hf:' names no dataset; use e.g. hf:SetFit/sst2.")
    reason = hub_unavailable_reason()
    if reason and not reason.startswith("offline mode"):
        raise DataError(f"cannot load Hugging Face dataset {name!r}: {reason}. {LOCAL_DATA_HINT}")
    import datasets  # offline mode declared: only the local datasets cache is tried (fast)

    try:
        dataset = datasets.load_dataset(name)
    except (
        Exception
    ) as err:  # hub errors come in many types (ConnectionError, FileNotFoundError, ...)
        why = f"{reason}; " if reason else ""
        raise DataError(
            f"cannot load Hugging Face dataset {name!r}: {why}{type(err).__name__}: {err}. {LOCAL_DATA_HINT}"
        ) from None
    out: dict[str, Split] = {}
    for split, aliases in SPLIT_ALIASES.items():
        present = [a for a in aliases if a in dataset]
        if not present:
            if split == "train":
                raise DataError(
                    f"Hugging Face dataset {name!r} has no train split; found: {', '.join(dataset)}."
                )
            out[split] = _empty()
            continue
        part = dataset[present[0]]
        where = f"hf:{name} [{present[0]}]"
        for column in ("text", "label"):
            if column not in part.column_names:
                raise DataError(
                    f"{where}: missing column {column!r}; found columns: {', '.join(part.column_names)}."
                )
        out[split] = (
            _check_texts(list(part["text"]), where),
            _parse_labels(list(part["label"]), where),
        )
    return out


# --- protocols -----------------------------------------------------------------------------
def make_splits(cfg: DataConfig) -> TextSplits:
    """Load ``cfg.source`` and apply ``cfg.protocol`` (deterministic for a given ``split_seed``)."""
    return apply_protocol(load_labelled(cfg.source), cfg)


def apply_protocol(data: dict[str, Split], cfg: DataConfig) -> TextSplits:
    """``cfg.protocol`` on rows already loaded by :func:`load_labelled` (several split
    seeds or sizes of one source load it once)."""
    if cfg.protocol == "paper":
        return split_paper(data, cfg)
    return split_given(data, cfg)


def _seeded(
    cfg: DataConfig,
) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent streams for the draw, the train/validation split and the test subsample."""
    children = np.random.SeedSequence(cfg.split_seed).spawn(3)
    return tuple(np.random.Generator(np.random.PCG64(c)) for c in children)  # type: ignore[return-value]


def _draw_per_class(
    labels: np.ndarray, n: int, rng: np.random.Generator, where: str
) -> list[np.ndarray]:
    """Seeded draw of ``n`` row indices per class (class 0 then class 1)."""
    drawn = []
    for label, name in ((0, "negative"), (1, "positive")):
        rows = np.flatnonzero(labels == label)
        if len(rows) < n:
            raise DataError(
                f"{where} has only {len(rows)} rows of class {label} ({name}) but data.n_per_class = {n}; "
                f"lower data.n_per_class to at most {min((labels == 0).sum(), (labels == 1).sum())}."
            )
        drawn.append(rng.choice(rows, size=n, replace=False))
    return drawn


def _subsample(
    texts: list[str], labels: np.ndarray, max_test: int, rng: np.random.Generator
) -> Split:
    if 0 < max_test < len(labels):
        keep = np.sort(rng.choice(len(labels), size=max_test, replace=False))
        return [texts[i] for i in keep], labels[keep]
    return texts, labels


def _pool_unique(data: dict[str, Split]) -> tuple[list[str], np.ndarray, int]:
    """All splits in order, each text once; texts seen with both labels are dropped entirely."""
    first: dict[str, int] = {}
    conflicting: set[str] = set()
    for name in SPLIT_NAMES:
        texts, labels = data[name]
        for text, label in zip(texts, labels.tolist(), strict=True):
            seen = first.setdefault(text, label)
            if seen != label:
                conflicting.add(text)
    total = sum(len(data[n][1]) for n in SPLIT_NAMES)
    texts = [t for t in first if t not in conflicting]
    labels = np.array([first[t] for t in texts], dtype=np.int64)
    return texts, labels, total - len(texts)


def split_paper(data: dict[str, Split], cfg: DataConfig) -> TextSplits:
    """Protocol ``paper``: pool, deduplicate, draw n per class, stratified train/val, rest is test."""
    n = cfg.n_per_class
    if n < 1:
        raise ConfigError(
            "data.n_per_class = 0 is not allowed with data.protocol = paper (it draws n per class "
            "from the pool); use n_per_class >= 1, or protocol = splits to train on all of train."
        )
    draw_rng, val_rng, test_rng = _seeded(cfg)
    texts, labels, dropped = _pool_unique(data)
    drawn = _draw_per_class(labels, n, draw_rng, f"data source {cfg.source!r} (all splits pooled)")
    n_val = min(max(math.ceil(cfg.val_fraction * 2 * n - 1e-9), 1), 2 * n - 1)
    per_class = [n_val // 2, n_val // 2]
    if n_val % 2:
        per_class[int(val_rng.integers(2))] += 1
    if max(per_class) >= n:
        raise ConfigError(
            f"data.val_fraction = {cfg.val_fraction} leaves no training rows of a class with "
            f"n_per_class = {n}; lower val_fraction or raise n_per_class."
        )
    val_idx = np.concatenate([rows[:k] for rows, k in zip(drawn, per_class, strict=True)])
    train_idx = np.concatenate([rows[k:] for rows, k in zip(drawn, per_class, strict=True)])
    train_idx, val_idx = val_rng.permutation(train_idx), val_rng.permutation(val_idx)
    rest = np.ones(len(labels), dtype=bool)
    rest[np.concatenate(drawn)] = False
    test_idx = np.flatnonzero(rest)
    if len(test_idx) == 0:
        raise DataError(
            f"data source {cfg.source!r}: drawing {n} per class leaves no rows for the test set; "
            "lower data.n_per_class."
        )
    test_text, test_y = _subsample(
        [texts[i] for i in test_idx], labels[test_idx], cfg.max_test, test_rng
    )
    note = f", {dropped} repeated rows dropped" if dropped else ""
    return TextSplits(
        train_text=[texts[i] for i in train_idx],
        train_y=labels[train_idx],
        val_text=[texts[i] for i in val_idx],
        val_y=labels[val_idx],
        test_text=test_text,
        test_y=test_y,
        source=f"{cfg.source} (pooled {len(labels)} unique rows{note})",
        protocol=f"paper n_per_class={n} val_fraction={cfg.val_fraction} seed={cfg.split_seed}",
    )


def split_given(data: dict[str, Split], cfg: DataConfig) -> TextSplits:
    """Protocol ``splits``: n per class from train (0: all); validation and test as given."""
    for name in ("validation", "test"):
        if len(data[name][1]) == 0:
            raise DataError(
                f"data source {cfg.source!r} has no {name} split, which data.protocol = splits needs; "
                f"add a {name} file (.jsonl/.csv/.parquet) or use protocol = paper."
            )
    draw_rng, _, test_rng = _seeded(cfg)
    texts, labels = data["train"]
    if cfg.n_per_class > 0:
        drawn = _draw_per_class(labels, cfg.n_per_class, draw_rng, f"train split of {cfg.source!r}")
        idx = draw_rng.permutation(np.concatenate(drawn))
        texts, labels = [texts[i] for i in idx], labels[idx]
    test_text, test_y = _subsample(*data["test"], cfg.max_test, test_rng)
    return TextSplits(
        train_text=list(texts),
        train_y=labels,
        val_text=list(data["validation"][0]),
        val_y=data["validation"][1],
        test_text=test_text,
        test_y=test_y,
        source=cfg.source,
        protocol=f"splits n_per_class={cfg.n_per_class} seed={cfg.split_seed}",
    )

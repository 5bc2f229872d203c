"""Data loading, validation errors, the demo set and the low-data protocols."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from model.config import DataConfig
from model.data import load_labelled, make_splits
from model.errors import ConfigError, DataError
from tests.conftest import require_or_skip

SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"
if not SST2.is_dir():
    SST2 = Path("/work/shared/data/sst2")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def rows_of(prefix: str, n_neg: int, n_pos: int) -> list[dict]:
    return [{"text": f"{prefix} negative sentence {i}", "label": 0} for i in range(n_neg)] + [
        {"text": f"{prefix} positive sentence {i}", "label": 1} for i in range(n_pos)
    ]


@pytest.fixture
def local_dir(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "train.jsonl", rows_of("train", 30, 40))
    write_jsonl(tmp_path / "validation.jsonl", rows_of("val", 10, 12))
    write_jsonl(tmp_path / "test.jsonl", rows_of("test", 15, 14))
    return tmp_path


# --- demo set ---------------------------------------------------------------------------------
def test_demo_set_is_balanced_distinct_and_stable() -> None:
    data = load_labelled("demo")
    assert set(data) == {"train", "validation", "test"}
    sizes = {k: len(v[0]) for k, v in data.items()}
    assert sizes == {"train": 300, "validation": 100, "test": 100}
    all_texts = [t for texts, _ in data.values() for t in texts]
    assert len(set(all_texts)) == 500  # no sentence twice, so no split leaks into another
    for texts, labels in data.values():
        assert labels.dtype == np.int64 and len(texts) == len(labels)
        assert Counter(labels.tolist()) == {0: len(labels) // 2, 1: len(labels) // 2}
        assert all(t.strip() and t == t.lower() for t in texts)
    again = load_labelled("demo")
    for name in data:
        assert data[name][0] == again[name][0]
        np.testing.assert_array_equal(data[name][1], again[name][1])


def test_demo_set_has_negation_and_mixed_sentiment() -> None:
    texts = [t for split_texts, _ in load_labelled("demo").values() for t in split_texts]
    assert sum("not " in t or "never " in t for t in texts) >= 50
    assert sum(" but " in t or " yet " in t or "despite" in t for t in texts) >= 100
    vocabulary = {w for t in texts for w in t.replace(".", " ").replace(",", " ").split()}
    assert len(vocabulary) >= 150


# --- local directories --------------------------------------------------------------------------
def test_local_jsonl_csv_parquet_and_label_spellings(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_jsonl(
        tmp_path / "train.jsonl",
        [{"text": "good", "label": "positive"}, {"text": "bad", "label": "Negative"}],
    )
    (tmp_path / "dev.csv").write_text('text,label\n"fine, really",1\nawful,0\n', encoding="utf-8")
    pq.write_table(
        pa.table({"text": ["nice", "meh"], "label": [1.0, 0.0], "extra": [1, 2]}),
        tmp_path / "test.parquet",
    )
    data = load_labelled(str(tmp_path))
    assert data["train"][0] == ["good", "bad"] and data["train"][1].tolist() == [1, 0]
    assert data["validation"][0] == ["fine, really", "awful"] and data["validation"][
        1
    ].tolist() == [1, 0]
    assert data["test"][1].tolist() == [1, 0] and data["test"][1].dtype == np.int64


def test_missing_test_file_is_fine_for_paper_but_not_for_splits(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", rows_of("t", 20, 20))
    data = load_labelled(str(tmp_path))
    assert len(data["test"][0]) == 0 and len(data["validation"][0]) == 0
    splits = make_splits(DataConfig(source=str(tmp_path), protocol="paper", n_per_class=5))
    assert splits.sizes()["test"] == 30
    with pytest.raises(DataError, match="no validation split.*protocol = paper"):
        make_splits(DataConfig(source=str(tmp_path), protocol="splits", n_per_class=5))


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does not exist.*--data demo"):
        load_labelled(str(tmp_path / "nowhere"))


def test_missing_train_file_lists_what_was_found(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    write_jsonl(tmp_path / "training.jsonl", rows_of("t", 1, 1))
    with pytest.raises(
        DataError, match=r"no train file.*notes\.txt, training\.jsonl.*train\.jsonl"
    ) as err:
        load_labelled(str(tmp_path))
    assert ".csv" in str(err.value) and ".parquet" in str(err.value)


def test_two_files_for_one_split(local_dir: Path) -> None:
    (local_dir / "dev.csv").write_text("text,label\na,1\n")
    with pytest.raises(
        DataError, match=r"several files for split 'validation': dev\.csv, validation\.jsonl"
    ):
        load_labelled(str(local_dir))


def test_missing_column_is_named(local_dir: Path) -> None:
    write_jsonl(local_dir / "test.jsonl", [{"sentence": "a", "label": 1}])
    with pytest.raises(
        DataError, match=r"test\.jsonl: missing column 'text'; found columns: sentence, label"
    ):
        load_labelled(str(local_dir))
    (local_dir / "test.jsonl").unlink()
    (local_dir / "test.csv").write_text("text,y\na,1\n")
    with pytest.raises(
        DataError, match=r"test\.csv: missing column 'label'; found columns: text, y"
    ):
        load_labelled(str(local_dir))


@pytest.mark.parametrize("bad", ["", "   ", None, 3])
def test_blank_or_non_text_rows_are_located(local_dir: Path, bad: object) -> None:
    rows = rows_of("val", 3, 3)
    rows[4]["text"] = bad
    write_jsonl(local_dir / "validation.jsonl", rows)
    with pytest.raises(
        DataError, match=r"validation\.jsonl: row 5 has an empty or non-text 'text'"
    ):
        load_labelled(str(local_dir))


def test_blank_text_in_csv(local_dir: Path) -> None:
    (local_dir / "test.jsonl").unlink()
    (local_dir / "test.csv").write_text("text,label\nfine,1\n,0\n")
    with pytest.raises(DataError, match=r"test\.csv: row 2 has an empty"):
        load_labelled(str(local_dir))


@pytest.mark.parametrize(
    ("bad", "shown"), [(2, "2"), ("neutral", "'neutral'"), (0.5, "0.5"), (True, "True")]
)
def test_non_binary_labels_are_named(local_dir: Path, bad: object, shown: str) -> None:
    rows = rows_of("train", 3, 3)
    rows[2]["label"] = bad
    write_jsonl(local_dir / "train.jsonl", rows)
    with pytest.raises(
        DataError, match=rf"train\.jsonl: labels must be binary; found {shown} \(first at row 3\)"
    ):
        load_labelled(str(local_dir))


def test_invalid_json_line(local_dir: Path) -> None:
    (local_dir / "train.jsonl").write_text('{"text": "a", "label": 1}\n{"text": "b", label: 0}\n')
    with pytest.raises(DataError, match=r"train\.jsonl: line 2 is not valid JSON"):
        load_labelled(str(local_dir))


def test_non_utf8_file(local_dir: Path) -> None:
    (local_dir / "test.jsonl").write_bytes('{"text": "caf\u00e9", "label": 1}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"test\.jsonl: is not UTF-8 text"):
        load_labelled(str(local_dir))


# --- hub ---------------------------------------------------------------------------------------
def test_hub_declared_offline_fails_with_local_data_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError) as err:
        load_labelled("hf:qsweep-tests/no-such-dataset")
    message = str(err.value)
    assert "qsweep-tests/no-such-dataset" in message and "offline mode is declared" in message
    assert "--data /path/to/dir" in message and "--data demo" in message


def test_hub_unreachable_fails_before_any_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "HF_HUB_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HTTPS_PROXY",
        "https_proxy",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(
        DataError, match=r"'SetFit/sst2': the hub at 127\.0\.0\.1:9 is unreachable.*--data demo"
    ):
        load_labelled("hf:SetFit/sst2")


# --- protocols ---------------------------------------------------------------------------------
def check_disjoint(splits) -> None:
    train, val, test = set(splits.train_text), set(splits.val_text), set(splits.test_text)
    assert not train & val and not train & test and not val & test


@pytest.mark.parametrize(("n", "frac"), [(100, 0.15), (10, 0.15), (7, 0.5), (25, 0.2)])
def test_paper_protocol_sizes_balance_and_rest_is_test(n: int, frac: float) -> None:
    cfg = DataConfig(
        source="demo", protocol="paper", n_per_class=n, val_fraction=frac, split_seed=3
    )
    splits = make_splits(cfg)
    n_val = math.ceil(frac * 2 * n)  # sklearn's train_test_split rounding
    assert splits.sizes() == {"train": 2 * n - n_val, "val": n_val, "test": 500 - 2 * n}
    drawn = np.concatenate([splits.train_y, splits.val_y])
    assert Counter(drawn.tolist()) == {0: n, 1: n}
    assert abs(int(splits.val_y.sum()) - (n_val - int(splits.val_y.sum()))) <= 1  # stratified
    check_disjoint(splits)
    data = load_labelled("demo")
    pool = {
        t: int(y) for texts, labels in data.values() for t, y in zip(texts, labels, strict=True)
    }
    assert set(splits.train_text) | set(splits.val_text) | set(splits.test_text) == set(pool)
    for texts, labels in ((splits.train_text, splits.train_y), (splits.test_text, splits.test_y)):
        assert [pool[t] for t in texts] == labels.tolist()


def test_protocols_are_deterministic_and_seed_dependent() -> None:
    for protocol in ("paper", "splits"):
        cfg = DataConfig(source="demo", protocol=protocol, n_per_class=40, split_seed=11)
        a, b = make_splits(cfg), make_splits(cfg)
        assert (a.train_text, a.val_text, a.test_text) == (b.train_text, b.val_text, b.test_text)
        c = make_splits(cfg.replace(split_seed=12))
        assert set(c.train_text) != set(a.train_text)


def test_max_test_subsamples_without_touching_the_draw() -> None:
    cfg = DataConfig(source="demo", protocol="paper", n_per_class=50, split_seed=5)
    full, sub = make_splits(cfg), make_splits(cfg.replace(max_test=60))
    assert sub.sizes()["test"] == 60 and set(sub.test_text) < set(full.test_text)
    assert sub.train_text == full.train_text and sub.val_text == full.val_text
    assert make_splits(cfg.replace(max_test=10_000)).test_text == full.test_text


def test_splits_protocol_draws_from_train_only(local_dir: Path) -> None:
    data = load_labelled(str(local_dir))
    cfg = DataConfig(source=str(local_dir), protocol="splits", n_per_class=8, split_seed=1)
    splits = make_splits(cfg)
    assert Counter(splits.train_y.tolist()) == {0: 8, 1: 8}
    assert set(splits.train_text) <= set(data["train"][0])
    assert splits.val_text == data["validation"][0] and splits.test_text == data["test"][0]
    everything = make_splits(cfg.replace(n_per_class=0))
    assert sorted(everything.train_text) == sorted(data["train"][0])
    assert make_splits(cfg.replace(max_test=5)).sizes()["test"] == 5


def test_too_few_rows_per_class(local_dir: Path) -> None:
    with pytest.raises(DataError, match=r"only 30 rows of class 0 \(negative\).*n_per_class = 31"):
        make_splits(DataConfig(source=str(local_dir), protocol="splits", n_per_class=31))
    with pytest.raises(DataError, match=r"only 55 rows of class 0.*n_per_class = 60.*at most 55"):
        make_splits(DataConfig(source=str(local_dir), protocol="paper", n_per_class=60))
    exact = local_dir / "exact"
    exact.mkdir()
    write_jsonl(exact / "train.jsonl", rows_of("t", 4, 4))
    with pytest.raises(DataError, match="leaves no rows for the test set"):
        make_splits(DataConfig(source=str(exact), protocol="paper", n_per_class=4))


def test_paper_needs_n_per_class() -> None:
    with pytest.raises(
        ConfigError, match="n_per_class = 0 is not allowed with data.protocol = paper"
    ):
        make_splits(DataConfig(source="demo", protocol="paper", n_per_class=0))


def test_paper_drops_repeated_and_conflicting_texts(tmp_path: Path) -> None:
    write_jsonl(
        tmp_path / "train.jsonl",
        rows_of("t", 6, 6) + [{"text": "t negative sentence 0", "label": 0}],
    )
    write_jsonl(
        tmp_path / "test.jsonl",
        [{"text": "t positive sentence 1", "label": 1}, {"text": "odd", "label": 1}],
    )
    write_jsonl(tmp_path / "dev.jsonl", [{"text": "odd", "label": 0}, {"text": "v", "label": 0}])
    splits = make_splits(DataConfig(source=str(tmp_path), protocol="paper", n_per_class=3))
    texts = splits.train_text + splits.val_text + splits.test_text
    assert sorted(texts) == sorted({r["text"] for r in rows_of("t", 6, 6)} | {"v"})
    assert "odd" not in texts  # given both labels: dropped


def test_paper_protocol_on_real_sst2() -> None:
    require_or_skip(SST2.is_dir(), f"SST-2 copy not found at {SST2}")
    cfg = DataConfig(
        source=str(SST2), protocol="paper", n_per_class=256, val_fraction=0.15, split_seed=0
    )
    splits = make_splits(cfg)
    labels_of: dict[str, set[int]] = {}
    n_rows = 0
    for name in ("train", "validation", "test"):
        for line in (SST2 / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            labels_of.setdefault(row["text"], set()).add(int(row["label"]))
            n_rows += 1
    assert n_rows == 6920 + 872 + 1821
    unique = {t for t, labels in labels_of.items() if len(labels) == 1}
    assert splits.sizes() == {"train": 435, "val": 77, "test": len(unique) - 512}
    assert Counter(np.concatenate([splits.train_y, splits.val_y]).tolist()) == {0: 256, 1: 256}
    check_disjoint(splits)
    assert set(splits.test_text) | set(splits.train_text) | set(splits.val_text) == unique

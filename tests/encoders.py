"""A tiny randomly initialised sentence encoder for tests (no download, about a second).

    from tests.encoders import build_tiny_encoder
    path = build_tiny_encoder(tmp_path / "tiny")   # a sentence-transformers directory
    SentenceTransformer(str(path)).encode(["a fine film ."]).shape  # (1, 32)

BERT with hidden size 32, one layer, two heads, a small WordPiece vocabulary written
here, and mean pooling; saved with ``SentenceTransformer.save`` so the real loading code
runs on it. The weights depend only on ``seed``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["build_tiny_encoder", "TINY_DIM"]

TINY_DIM = 32
_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_WORDS = (
    "a an the this that it is was not no never but and or of to in on for with as at by "
    "film movie story plot acting cast score ending scene scenes director script dialogue "
    "good great fine bad awful dull boring funny moving wonderful clever tedious lovely "
    "sharp flat slow fast smart witty charming clumsy very too so really quite i you we "
    "love hate like enjoy miss skip watch see left theatre money time hour minutes"
).split()
_PUNCT = list(".,;:!?'-\"()")


def _vocab() -> list[str]:
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    pieces = [f"##{c}" for c in letters]
    seen: dict[str, None] = {}
    for token in _SPECIAL + _PUNCT + letters + pieces + _WORDS:
        seen.setdefault(token, None)
    return list(seen)


def build_tiny_encoder(path: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny BERT + mean-pooling sentence-transformers model to ``path``; return it.

    Embeddings are ``TINY_DIM``-dimensional. Two calls with the same ``seed`` give
    identical weights; a different seed gives different weights.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = Path(path)
    backbone = path.parent / f".{path.name}-bert"
    backbone.mkdir(parents=True, exist_ok=True)
    vocab = _vocab()
    (backbone / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(backbone / "vocab.txt"), do_lower_case=True)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=TINY_DIM,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=128,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        bert = BertModel(config)
    bert.save_pretrained(str(backbone))
    tokenizer.save_pretrained(str(backbone))
    try:  # sentence-transformers >= 6.1 moved the modules
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # pragma: no cover - older sentence-transformers
        from sentence_transformers.models import Pooling, Transformer

    transformer = Transformer(str(backbone), max_seq_length=64)
    pooling = Pooling(TINY_DIM, pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(path))
    return path

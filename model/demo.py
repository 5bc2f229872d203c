"""The offline demo set: 500 short movie-review sentences written for qsweep.

The sentences are generated from hand-written phrase templates with a fixed seed, so
every machine builds the same 250 positive and 250 negative sentences without a
download. The text is original (not taken from SST-2 or any other corpus). Templates
mix plain praise and complaint with negation ("never feels tedious"), concession
("despite a clumsy ending, ... is moving overall") and reversed expectations, so a
frozen sentence encoder separates the classes well but not perfectly.

    from model.demo import demo_splits
    splits = demo_splits()            # {"train": (texts, labels), "validation": ..., "test": ...}

``load_labelled("demo")`` in :mod:`model.data` returns the same thing.
"""

from __future__ import annotations

import numpy as np

__all__ = ["demo_rows", "demo_splits", "DEMO_SEED", "DEMO_PER_CLASS", "DEMO_SPLIT_SIZES"]

DEMO_SEED = 20250411  # fixed: changing it changes every sentence
DEMO_PER_CLASS = 250
DEMO_SPLIT_SIZES = {"train": 150, "validation": 50, "test": 50}  # per class

SUBJECTS = (
    "the film", "this movie", "the new thriller", "this romantic comedy", "the sequel",
    "the documentary", "this period drama", "the animated feature", "the debut feature",
    "this heist picture", "the remake", "the adaptation", "this war epic", "the musical",
    "this horror film", "the family drama", "this space opera", "the courtroom drama",
    "the western", "this coming-of-age story",
)  # fmt: skip
ASPECTS = (
    "the acting", "the screenplay", "the score", "the cinematography", "the pacing",
    "the dialogue", "the ending", "the lead performance", "the editing", "the humour",
    "the plot", "the effects work", "the supporting cast", "the direction",
    "the opening act", "the soundtrack",
)  # fmt: skip
POSITIVE = (
    "wonderful", "gripping", "moving", "witty", "beautifully made", "assured", "luminous",
    "sharp", "heartfelt", "exhilarating", "tender", "inventive", "clever", "charming",
    "absorbing", "superb", "graceful", "delightful", "thrilling", "smart",
)  # fmt: skip
NEGATIVE = (
    "tedious", "clumsy", "lifeless", "muddled", "shallow", "overlong", "forgettable",
    "grating", "sloppy", "hollow", "tiresome", "flat", "incoherent", "dreary", "bland",
    "laughable", "painfully slow", "dull", "predictable", "messy",
)  # fmt: skip
MILD_NEGATIVE = ("uneven", "a bit slow", "rough around the edges", "too long", "thin", "clunky")
AWKWARD = ("slow", "clunky", "awkward", "shaky", "uneven", "corny")
MILD_POSITIVE = ("handsome", "decent", "competent", "pretty", "polished", "solid")
INTENSIFIERS = ("", "", "truly ", "remarkably ", "thoroughly ", "quite ", "consistently ")
POSITIVE_NOUNS = (
    "its warmth", "its wit", "its sheer energy", "real heart", "a terrific cast",
    "its generous spirit", "its confident storytelling", "a string of lovely surprises",
)  # fmt: skip
NEGATIVE_NOUNS = (
    "its clumsy script", "its endless running time", "its hollow centre", "a lazy twist",
    "wooden performances", "its muddled plotting", "a string of tired jokes",
    "its cynical tone",
)  # fmt: skip
POSITIVE_FEELINGS = (
    "grinning", "wanting to see it again", "completely satisfied", "in a wonderful mood",
    "moved and a little dazzled",
)  # fmt: skip
NEGATIVE_FEELINGS = (
    "checking my watch", "wanting my money back", "half asleep", "bored and annoyed",
    "wondering why i had bothered",
)  # fmt: skip
LIKE_VERBS = ("admire", "fall for", "enjoy", "be charmed by", "root for")

# Templates per label. Slots: {s} subject, {a}/{b} aspects, {p}/{q} positive,
# {n}/{m} negative, {mn} mild negative, {w} awkward, {mp} mild positive, {i} intensifier,
# {pn} positive noun, {nn} negative noun, {pf}/{nf} feelings, {v} like-verb.
POSITIVE_TEMPLATES = (
    "{s} is {i}{p}.",
    "{a} is {p} and {b} is {q}.",
    "i left {s} {pf}.",
    "{s} never feels {n}; it is {p} from start to finish.",
    "despite {a} being {mn}, {s} is {p} overall.",
    "it is hard not to {v} {s}.",
    "{a} could have been tighter, but {s} wins you over with {pn}.",
    "you would be foolish to miss {s}.",
    "not a single scene in {s} feels {n}.",
    "i expected {s} to be {n}, but it is {i}{p}.",
    "{s} is not {n} at all; {a} is {p}.",
    "{s} has a few {w} moments, yet {a} is {p} enough to carry it.",
    "{a} alone makes {s} worth seeing.",
    "{s} ends up {p}, thanks to {pn}.",
)  # fmt: skip
NEGATIVE_TEMPLATES = (
    "{s} is {i}{n}.",
    "{a} is {n} and {b} is {m}.",
    "i left {s} {nf}.",
    "{s} is never as {p} as it thinks it is.",
    "although {a} is {mp}, {s} is {n} overall.",
    "it is hard to care about anything in {s}.",
    "{a} is {p}, but nothing can save {s} from {nn}.",
    "save your money and skip {s}.",
    "not even {a} can rescue {s} from being {n}.",
    "i expected {s} to be {p}, but it is {i}{n}.",
    "{s} is not {p} at all; {a} is {n}.",
    "{s} has a few {p} moments, yet {a} is too {n} to ignore.",
    "{a} alone makes {s} a chore to sit through.",
    "{s} ends up {n}, thanks to {nn}.",
)  # fmt: skip


def _fill(template: str, rng: np.random.Generator) -> str:
    def pick(options: tuple[str, ...], avoid: str = "") -> str:
        choices = [o for o in options if o != avoid]
        return choices[int(rng.integers(len(choices)))]

    a = pick(ASPECTS)
    p = pick(POSITIVE)
    n = pick(NEGATIVE)
    slots = {
        "s": pick(SUBJECTS),
        "a": a,
        "b": pick(ASPECTS, avoid=a),
        "p": p,
        "q": pick(POSITIVE, avoid=p),
        "n": n,
        "m": pick(NEGATIVE, avoid=n),
        "mn": pick(MILD_NEGATIVE),
        "mp": pick(MILD_POSITIVE),
        "w": pick(AWKWARD),
        "i": pick(INTENSIFIERS),
        "pn": pick(POSITIVE_NOUNS),
        "nn": pick(NEGATIVE_NOUNS),
        "pf": pick(POSITIVE_FEELINGS),
        "nf": pick(NEGATIVE_FEELINGS),
        "v": pick(LIKE_VERBS),
    }
    return template.format(**slots)  # lower case, like SST-2


def _generate(templates: tuple[str, ...], count: int, rng: np.random.Generator) -> list[str]:
    """``count`` distinct sentences, cycling through the templates in order."""
    out: list[str] = []
    seen: set[str] = set()
    k = 0
    while len(out) < count:
        text = _fill(templates[k % len(templates)], rng)
        k += 1
        if text not in seen:
            seen.add(text)
            out.append(text)
        if k > 100 * count:  # pragma: no cover - templates are far richer than needed
            raise RuntimeError("demo templates cannot produce enough distinct sentences")
    return out


def demo_rows() -> tuple[list[str], np.ndarray]:
    """All 500 demo sentences (texts, int64 labels 0/1), positives and negatives interleaved."""
    rng = np.random.Generator(np.random.PCG64(DEMO_SEED))
    pos = _generate(POSITIVE_TEMPLATES, DEMO_PER_CLASS, rng)
    neg = _generate(NEGATIVE_TEMPLATES, DEMO_PER_CLASS, rng)
    texts = [t for pair in zip(neg, pos, strict=True) for t in pair]
    labels = np.tile(np.array([0, 1], dtype=np.int64), DEMO_PER_CLASS)
    return texts, labels


def demo_splits() -> dict[str, tuple[list[str], np.ndarray]]:
    """The demo set split per class 150/50/50 into train/validation/test (seeded, stratified)."""
    texts, labels = demo_rows()
    rng = np.random.Generator(np.random.PCG64(DEMO_SEED + 1))
    parts: dict[str, list[int]] = {name: [] for name in DEMO_SPLIT_SIZES}
    for label in (0, 1):
        idx = rng.permutation(np.flatnonzero(labels == label))
        start = 0
        for name, size in DEMO_SPLIT_SIZES.items():
            parts[name].extend(idx[start : start + size].tolist())
            start += size
    out = {}
    for name, idx in parts.items():
        order = sorted(idx)
        out[name] = ([texts[i] for i in order], labels[order])
    return out

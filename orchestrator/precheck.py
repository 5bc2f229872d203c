"""What can be known offline before a study runs: does its data source resolve, do its
encoders, what does the embedding cache already hold, and would the study directory be
accepted. Nothing is loaded from a hub and no model is loaded.

    check = DataCheck(spec)           # .problems, .texts, .encoders[name]
    run_problems(spec, study_dir=Path("results/quickstart"), resume=False)   # [] when fine

``qsweep run`` refuses to start (exit 2, nothing written) when :attr:`DataCheck.problems`
is not empty; ``qsweep run --dry-run`` prints the plan (:mod:`orchestrator.plan`), then
:func:`run_problems`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model.errors import ConfigError, DataError, EncoderError
from orchestrator.results import ResultsTable, prepare_study_dir, same_data, trials_path

__all__ = ["DataCheck", "run_problems", "finished_trials"]

# Sentences per second on 2 CPU cores (NOTES.md): all-MiniLM-L6-v2 and all-mpnet-base-v2.
MINILM_RATE, MPNET_RATE = 200.0, 30.0


class DataCheck:
    """What can be known offline about a study's data before it runs: whether its source
    and encoders resolve, the texts to embed (when the source is local) and, per encoder,
    its width, its embedding rate and the texts already in the embedding cache."""

    def __init__(self, spec) -> None:
        from model.data import LOCAL_DATA_HINT

        self.spec = spec
        self.problems: list[str] = []
        self.texts: list[str] | None = None  # the unique texts of every data setting
        self._hub_reason: tuple[str | None] | None = None
        source = spec.data.source
        if source.startswith("hf:"):
            problem = self._hub_dataset_problem(source[3:])
            if problem:
                self.problems.append(f"data.source {source}: {problem} {LOCAL_DATA_HINT}")
        else:
            self.texts = self._local_texts()
        self.encoders: dict[str, dict[str, Any]] = {}
        for name in dict.fromkeys(d.encoder for d in spec.data_settings()):
            self.encoders[name] = self._encoder(name)

    def hub_reason(self) -> str | None:
        """Why the Hugging Face hub cannot be used (asked once), or None."""
        if self._hub_reason is None:
            from model.data import hub_unavailable_reason

            self._hub_reason = (hub_unavailable_reason(),)
        return self._hub_reason[0]

    def _hub_dataset_problem(self, name: str) -> str | None:
        reason = self.hub_reason()
        if reason is None:
            return None  # reachable: loaded from the hub at run time
        cached = _hub_dataset_cached(name)
        if reason.startswith("offline mode"):
            return None if cached else f"{reason} and the dataset is not in the local cache."
        also = " (a copy is cached: HF_DATASETS_OFFLINE=1 uses it)" if cached else ""
        return f"the Hugging Face hub cannot be used: {reason}{also}."

    def _local_texts(self) -> list[str] | None:
        from model.data import apply_protocol, load_labelled

        spec = self.spec
        try:
            loaded = load_labelled(spec.data.source)
            splits = [apply_protocol(loaded, d) for d in spec.data_settings()]
        except (DataError, ConfigError) as err:
            self.problems.append(f"data.source {spec.data.source}: {err}")
            return None
        return list(
            dict.fromkeys(t for x in splits for t in (*x.train_text, *x.val_text, *x.test_text))
        )

    def _encoder(self, name: str) -> dict[str, Any]:
        from model.embeddings import (
            ENCODER_HINT,
            cached_text_keys,
            encoder_width,
            local_encoder_dir,
        )

        where = self.spec.encoder_paths.get(name, name)
        label = f"{name} {where}".lower()
        rate = MINILM_RATE if "minilm" in label else MPNET_RATE
        guess = 384 if "minilm" in label else 768 if "mpnet" in label else None
        facts: dict[str, Any] = {"where": where, "rate": rate, "dim": guess, "cached": None}
        shown = name if where == name else f"{name} (from {where})"
        try:
            directory = local_encoder_dir(where)
        except EncoderError as err:
            self.problems.append(f"encoder {shown}: {err}")
            return facts
        if directory is None:
            reason = self.hub_reason()
            if reason:
                self.problems.append(
                    f"encoder {shown} is not in the local Hugging Face cache and cannot be "
                    f"downloaded: {reason}. {ENCODER_HINT}"
                )
            return facts
        facts["dim"] = encoder_width(where) or guess
        keys = cached_text_keys(where, self.spec.data.cache_dir or None)
        if self.texts is None:
            facts["held"] = len(keys)
        else:
            from model.embeddings import text_key

            facts["cached"] = sum(text_key(t) in keys for t in self.texts)
        return facts

    def embed_seconds(self, name: str, rows: int) -> tuple[float, str]:
        """(modelled seconds to embed what is not cached, what the cache holds) of one
        encoder whose source has ``rows`` sentences."""
        from orchestrator.progress import format_duration

        facts = self.encoders[name]
        if facts["cached"] is not None:
            missing = len(self.texts or []) - facts["cached"]
            held = f"{facts['cached']} of {len(self.texts or [])} sentences cached"
        elif "held" in facts:
            missing = max(0, rows - facts["held"])
            held = f"the cache holds {facts['held']} sentences of it"
        else:
            missing, held = rows, "nothing cached"
        seconds = missing / facts["rate"]
        if missing == 0:
            return 0.0, f"{held}: no embedding"
        return seconds, f"{held}; ~{format_duration(seconds)} on 2 CPU cores for the rest"


def _hub_dataset_cached(name: str) -> bool:
    """Whether Hugging Face dataset ``name`` has a copy in the local caches (the hub's
    download cache or the datasets library's own), without importing ``datasets``."""
    import os

    from huggingface_hub import constants

    home = Path(os.environ.get("HF_HOME") or constants.HF_HOME).expanduser()
    hub = Path(os.environ.get("HF_HUB_CACHE") or home / "hub").expanduser()
    datasets = Path(os.environ.get("HF_DATASETS_CACHE") or home / "datasets").expanduser()
    return (hub / f"datasets--{name.replace('/', '--')}").is_dir() or (
        datasets / name.replace("/", "___")
    ).is_dir()


def run_problems(spec, *, study_dir: Path, resume: bool, check: DataCheck | None = None):
    """What would make ``qsweep run`` fail before its first trial, found offline: a data
    source or an encoder that does not resolve here, or a study directory the run refuses
    (finished trials without --resume, another study). One paragraph each."""
    problems = list((check or DataCheck(spec)).problems)
    try:
        prepare_study_dir(spec, study_dir, resume=resume)
    except ConfigError as err:
        problems.append(str(err))
    return problems


def finished_trials(spec, study_dir: Path) -> set[str]:
    """Ids of the trials ``--resume`` keeps: final rows of the study's table that were
    trained on the data setting the study plans for them (as the driver decides)."""
    table = ResultsTable(trials_path(study_dir), study=spec.name)  # table + journal
    done = table.done_ids()
    if not done:  # a new study: no need to plan its trials here (seconds at 100,000)
        return set()
    planned = {p.trial_id: p for p in spec.planned_trials()} if not spec.is_optuna else {}
    return {t for t in done if t not in planned or same_data(table.rows[t], planned[t].data)}

"""A study's search space, parsed once from YAML into a frozen, validated ``StudySpec``.

    from orchestrator.spec import load_spec
    spec = load_spec("search_spaces/quickstart.yaml")
    for planned in spec.planned_trials():      # grid / DOE kinds
        print(planned.trial_id, planned.config.qubits)

Every error names the YAML key path, the value and what is allowed; a broken YAML file
gives the file, line and parser message. Factor names are ``TrialConfig`` field names
or data keys under a ``data.`` prefix (:data:`DATA_FACTORS`): a point then also picks
the encoder, the split seed or the number of sentences per class of its trials.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.config import DataConfig, TrialConfig
from model.errors import ConfigError, short_repr, shorten
from orchestrator.configfile import mapping_at, read_yaml, trial_mapping
from orchestrator.design import KINDS as DOE_KINDS
from orchestrator.design import SEARCH_KINDS, design_matrix, design_points, full_factorial
from orchestrator.packing import parse_pack_size

__all__ = [
    "StudySpec",
    "SearchSpec",
    "PlannedTrial",
    "load_spec",
    "spec_from_dict",
    "SEARCH_KINDS",
    "METRICS",
    "TRIAL_FIELDS",
    "DATA_FACTORS",
    "DEFAULT_MAX_TRIALS",
    "data_key",
    "split_point",
    "trials_per_gpu",
]

SAMPLERS = ("tpe", "random", "cmaes")
# What fit() reports every epoch (and in its final summary); the search optimises one of them.
METRICS = {"val_accuracy": "max", "val_loss": "min", "train_accuracy": "max", "train_loss": "min"}
TOP_LEVEL = (
    "name",
    "description",
    "data",
    "encoder",
    "fixed",
    "trial",
    "factors",
    "search",
    "seeds",
    "metric",
    "mode",
    "early_stopping",
    "resources",
    "max_concurrent",
    "retries",
    "pack_size",
    "mlflow",
    "max_trials",
)
REGISTER = ("best", "all", "none")  # mlflow.register: which trials get a registered model
MLFLOW_DEFAULTS = {"register": "best", "register_top": 10}
# A study plans at most this many trials (points x seeds) unless its file raises the cap
# with max_trials: a typo that multiplies a grid fails here, not after hours of planning.
DEFAULT_MAX_TRIALS = 100_000
TRIAL_FIELDS = tuple(f.name for f in dataclasses.fields(TrialConfig))
# Data settings that may be factors (listed levels only: each level is embedded up front).
DATA_PREFIX = "data."
DATA_FACTORS = ("data.encoder", "data.split_seed", "data.n_per_class")
# One plain path component: results/<name>/ (so not "." or "..", not hidden, no "/").
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class SearchSpec:
    """How points are chosen: ``grid`` (full factorial of the lists), ``optuna`` or a DOE kind."""

    kind: str = "grid"
    trials: int = 0  # optuna: number of suggestions
    sampler: str = "tpe"  # optuna: tpe | random | cmaes
    seed: int = 0  # optuna sampler seed / lhs seed
    resolution: int | None = None  # fracfact
    samples: int | None = None  # lhs

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "optuna":
            out.update(trials=self.trials, sampler=self.sampler, seed=self.seed)
        if self.kind == "fracfact":
            out["resolution"] = self.resolution
        if self.kind == "lhs":
            out.update(samples=self.samples, seed=self.seed)
        return out


@dataclass(frozen=True)
class PlannedTrial:
    """One point x seed of a grid/DOE study."""

    trial_id: str  # p003_s1
    point_id: str  # p003
    seed: int
    config: TrialConfig  # fixed + point + seed, validated
    data: DataConfig = DataConfig()  # the study's data with the point's data factors


def split_point(point: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(TrialConfig values, DataConfig values)`` of a point; data keys lose ``data.``."""
    trial = {k: v for k, v in point.items() if not k.startswith(DATA_PREFIX)}
    data = {k[len(DATA_PREFIX) :]: v for k, v in point.items() if k.startswith(DATA_PREFIX)}
    return trial, data


def data_key(data: DataConfig) -> str:
    """A data setting as a short string: the key of its embedded splits and of its packs."""
    return (
        f"{data.source}|{data.encoder}|split_seed={data.split_seed}|n_per_class={data.n_per_class}"
    )


@dataclass(frozen=True)
class StudySpec:
    name: str
    description: str
    data: DataConfig
    fixed: dict[str, Any]  # TrialConfig keys fixed for every trial (validated)
    factors: dict[str, Any]  # name -> list of levels | {"low", "high", "log"}
    search: SearchSpec
    seeds: tuple[int, ...] = (0,)
    metric: str = "val_accuracy"
    mode: str = "max"
    early_stopping: dict[str, Any] | None = None  # {"kind": "asha", "grace_period", ...}
    resources: dict[str, float] = field(default_factory=lambda: {"cpu": 1.0, "gpu": 0.0})
    max_concurrent: int = 2
    retries: int = 1
    pack_size: int | str = "auto"  # trials per packed model (one Ray trial): auto | 1 (off) | N
    # which completed trials get a full, registered MLflow model: the best register_top by
    # the metric (best), every one (all) or none; every trial keeps its state file either way
    mlflow: dict[str, Any] = field(default_factory=lambda: dict(MLFLOW_DEFAULTS))
    max_trials: int = DEFAULT_MAX_TRIALS  # the cap on n_trials() (study key max_trials)
    source: str = ""  # file the spec came from
    # encoder name (a data.encoder level) -> local directory to load it from (--encoder-path)
    encoder_paths: dict[str, str] = field(default_factory=dict)

    # ---------------------------------------------------------------------------------
    def replace(self, **changes: Any) -> StudySpec:
        return dataclasses.replace(self, **changes)

    @property
    def is_optuna(self) -> bool:
        return self.search.kind == "optuna"

    def points(self) -> list[dict[str, Any]]:
        """Factor settings of every point (grid/DOE); empty for optuna."""
        if self.search.kind == "grid":
            return full_factorial(self.factors)
        if self.search.kind in DOE_KINDS:
            return design_points(
                dict(self.factors),
                self.search.kind,
                resolution=self.search.resolution,
                samples=self.search.samples,
                seed=self.search.seed,
            )
        return []

    @property
    def data_factors(self) -> list[str]:
        """The factors that are data settings (``data.encoder``, ...)."""
        return [name for name in self.factors if name.startswith(DATA_PREFIX)]

    def data_for(self, point: dict[str, Any]) -> DataConfig:
        """The study's data with the point's data factors (``data.*`` keys) applied."""
        _, values = split_point(point)
        return self.data.replace(**values) if values else self.data

    def data_settings(self) -> list[DataConfig]:
        """Every distinct data setting of the study, in plan order (optuna: all level combinations)."""
        if self.is_optuna:
            levels = {name: self.factors[name] for name in self.data_factors}
            points = full_factorial(levels)
        else:
            points = self.points()
        return list(dict.fromkeys(self.data_for(p) for p in points))

    def planned_trials(self) -> list[PlannedTrial]:
        """Every point x seed with a stable id; the order is the run order."""
        out = []
        for point_id, point, cfg in self._point_configs():
            data = self.data_for(point)
            for seed in self.seeds:  # seeds are validated integers >= 0: no second check
                seeded = dataclasses.replace(cfg, seed=seed)
                out.append(PlannedTrial(f"{point_id}_s{seed}", point_id, seed, seeded, data))
        return out

    def _point_configs(self):
        """``(point_id, point, TrialConfig at the first seed)`` of every point, validated."""
        for index, point in enumerate(self.points()):
            point_id = f"p{index:03d}"
            trial_values, _ = split_point(point)
            values = {**self.fixed, **trial_values, "seed": self.seeds[0]}
            yield (
                point_id,
                point,
                TrialConfig.from_dict(values, where=f"factors (point {point_id})"),
            )

    def n_points(self) -> int:
        """Points of the design without building them (optuna: its suggestions)."""
        if self.is_optuna:
            return self.search.trials
        if self.search.kind == "lhs":
            return self.search.samples or 0
        if self.search.kind in ("fracfact", "pb"):  # a coded matrix of factors x runs: small
            return len(
                design_matrix(
                    dict(self.factors), self.search.kind, resolution=self.search.resolution
                )
            )
        return math.prod(len(levels) for levels in self.factors.values())  # grid, full

    def n_trials(self) -> int:
        return self.n_points() * len(self.seeds)

    def trial_config(self, point: dict[str, Any], seed: int) -> TrialConfig:
        trial_values, _ = split_point(point)
        return TrialConfig.from_dict({**self.fixed, **trial_values, "seed": seed}, where="factors")

    def study_dict(self) -> dict[str, Any]:
        """The spec part of study.json (plain JSON types)."""
        return {
            "name": self.name,
            "description": self.description,
            "factors": {
                k: (list(v) if isinstance(v, list) else dict(v)) for k, v in self.factors.items()
            },
            "fixed": dict(self.fixed),
            "search": self.search.to_dict(),
            "seeds": list(self.seeds),
            "metric": self.metric,
            "mode": self.mode,
            "pack_size": self.pack_size,
            "mlflow": dict(self.mlflow),
            "data": self.data.to_dict(),
        }


# ------------------------------------------------------------------------------------
def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a search-space YAML file."""
    path = Path(path)
    doc = read_yaml(path, what="search-space file")
    try:
        return spec_from_dict(doc, source=str(path))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def spec_from_dict(doc: Any, *, source: str = "") -> StudySpec:
    if not isinstance(doc, dict):
        raise ConfigError(f"a search space must be a YAML mapping, got {type(doc).__name__}.")
    unknown = sorted(set(doc) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(
            f"unknown top-level key {short_repr(unknown[0])}; allowed: {', '.join(TOP_LEVEL)}."
        )
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(
            f"name = {short_repr(name)} is not allowed; give a study name that is one plain "
            "path component (it becomes the directory results/<name>/): 1 to 100 letters, "
            "digits, '_', '.' or '-', starting with a letter, digit or '_' (so not '.' or '..')."
        )
    description = doc.get("description") or ""
    if not isinstance(description, str):
        raise ConfigError(f"description = {short_repr(description)} must be a string.")

    data_values = dict(mapping_at(doc, "data"))
    if doc.get("encoder") is not None:
        if "encoder" in data_values and data_values["encoder"] != doc["encoder"]:
            raise ConfigError(
                f"encoder = {short_repr(doc['encoder'])} contradicts data.encoder = {short_repr(data_values['encoder'])}; give one."
            )
        data_values["encoder"] = doc["encoder"]
    data = DataConfig.from_dict(data_values, where="data")

    fixed_key, fixed = trial_mapping(doc)
    fixed = dict(fixed)
    TrialConfig.from_dict(fixed, where=fixed_key)  # validates names and types

    search = _search(mapping_at(doc, "search") or {"kind": "grid"})
    seeds = _seeds(doc.get("seeds", [0]))
    max_trials = _positive_int(doc.get("max_trials", DEFAULT_MAX_TRIALS), "max_trials", low=1)
    raw_factors = mapping_at(doc, "factors")
    if search.kind in ("grid", "full"):  # counted from the lists before a level is validated
        sizes = [len(v) for v in raw_factors.values() if isinstance(v, list)]
        points = math.prod(sizes)
        grid = " x ".join(f"{n:,}" for n in sizes) or "no"
        _check_size(points, f"a grid of {grid} levels = {points:,} points", seeds, max_trials)
    factors = _factors(
        raw_factors, search.kind, fixed_key, set(fixed), set(data_values), max_trials
    )
    if "seed" in factors or "seed" in fixed:
        raise ConfigError(
            "'seed' cannot be a factor or fixed setting; list the repeats under seeds: [0, 1, 2]."
        )

    metric = doc.get("metric", "val_accuracy")
    if metric not in METRICS:
        raise ConfigError(
            f"metric = {short_repr(metric)} is not allowed; allowed: {', '.join(METRICS)}."
        )
    mode = doc.get("mode", METRICS[metric])
    if mode not in ("max", "min"):
        raise ConfigError(f"mode = {short_repr(mode)} is not allowed; allowed: max, min.")

    spec = StudySpec(
        name=name,
        description=description,
        data=data,
        fixed=fixed,
        factors=factors,
        search=search,
        seeds=seeds,
        metric=metric,
        mode=mode,
        early_stopping=_early_stopping(doc.get("early_stopping")),
        resources=_resources(doc.get("resources")),
        max_concurrent=_positive_int(doc.get("max_concurrent", 2), "max_concurrent", low=1),
        retries=_positive_int(doc.get("retries", 1), "retries", low=0),
        pack_size=parse_pack_size(doc.get("pack_size", "auto")),
        mlflow=_mlflow(doc.get("mlflow")),
        max_trials=max_trials,
        source=source,
    )
    points = spec.n_points()  # counted, not built
    how = {
        "optuna": f"search.trials = {points:,} suggestions",
        "lhs": f"search.samples = {points:,} points",
    }.get(search.kind, f"{points:,} points")
    _check_size(points, how, seeds, max_trials)
    if spec.search.kind != "optuna":
        for _ in spec._point_configs():  # validates every point (e.g. connectivity vs qubits)
            pass
    return spec


def _seeds(value: Any) -> tuple[int, ...]:
    seeds = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**63 for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise ConfigError(
            f"seeds = {short_repr(seeds)} is not allowed; give a list of distinct integers "
            ">= 0 (and < 2^63), e.g. [0, 1, 2]."
        )
    return tuple(seeds)


def _check_size(points: int, how: str, seeds: tuple[int, ...], max_trials: int) -> None:
    """Refuse a study of more than ``max_trials`` trials (points x seeds)."""
    n = points * len(seeds)
    if n > max_trials:
        raise ConfigError(
            f"the study plans {n:,} trials ({how} x {len(seeds)} "
            f"seed{'s' if len(seeds) != 1 else ''}), more than max_trials = {max_trials:,}; "
            "list fewer levels or seeds, or if you mean it raise the cap in the study file "
            f"with max_trials: {n}."
        )


# ------------------------------------------------------------------------------------
def _positive_int(value: Any, key: str, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < 2**63:
        raise ConfigError(
            f"{key} = {short_repr(value)} is not allowed; give an integer >= {low} (and < 2^63)."
        )
    return value


def _mlflow(values: Any) -> dict[str, Any]:
    """``mlflow: {register: best | all | none, register_top: K}`` (defaults: best, 10)."""
    if values is None:
        return dict(MLFLOW_DEFAULTS)
    if not isinstance(values, dict):
        raise ConfigError(
            f"mlflow = {values!r} must be a mapping, e.g. {{register: best, register_top: 10}}."
        )
    unknown = sorted(set(values) - set(MLFLOW_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"unknown key mlflow.{unknown[0]}; allowed: {', '.join(MLFLOW_DEFAULTS)}."
        )
    out = {**MLFLOW_DEFAULTS, **values}
    if out["register"] not in REGISTER:
        raise ConfigError(
            f"mlflow.register = {out['register']!r} is not allowed; allowed: {', '.join(REGISTER)} "
            "(best: the register_top best trials by the study metric get a registered model)."
        )
    out["register_top"] = _positive_int(out["register_top"], "mlflow.register_top", low=1)
    return out


def _search(values: dict[str, Any]) -> SearchSpec:
    kind = values.get("kind", "grid")
    if kind not in SEARCH_KINDS:
        raise ConfigError(
            f"search.kind = {short_repr(kind)} is not allowed; allowed: {', '.join(SEARCH_KINDS)}."
        )
    allowed = {
        "grid": {"kind"},
        "full": {"kind"},
        "pb": {"kind"},
        "optuna": {"kind", "trials", "sampler", "seed"},
        "fracfact": {"kind", "resolution"},
        "lhs": {"kind", "samples", "seed"},
    }[kind]
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ConfigError(
            f"search.{shorten(str(unknown[0]))} is not a setting of search.kind {kind}; allowed: {', '.join(sorted(allowed))}."
        )
    seed = _positive_int(values.get("seed", 0), "search.seed", low=0)
    if kind == "optuna":
        sampler = values.get("sampler", "tpe")
        if sampler not in SAMPLERS:
            raise ConfigError(
                f"search.sampler = {short_repr(sampler)} is not allowed; allowed: {', '.join(SAMPLERS)}."
            )
        if "trials" not in values:
            raise ConfigError(
                "search.trials is missing; an optuna search needs the number of trials, e.g. trials: 20."
            )
        trials = _positive_int(values["trials"], "search.trials", low=1)
        return SearchSpec(kind=kind, trials=trials, sampler=sampler, seed=seed)
    if kind == "fracfact":
        resolution = _positive_int(values.get("resolution", 3), "search.resolution", low=3)
        return SearchSpec(kind=kind, resolution=resolution)
    if kind == "lhs":
        if "samples" not in values:
            raise ConfigError(
                "search.samples is missing; an lhs design needs the number of points, e.g. samples: 12."
            )
        return SearchSpec(
            kind=kind, samples=_positive_int(values["samples"], "search.samples", low=1), seed=seed
        )
    return SearchSpec(kind=kind)


def _data_factor(name: str, spec: Any, data_keys: set[str]) -> list[Any]:
    """Validated levels of a ``data.*`` factor (listed levels only)."""
    key = f"factors.{shorten(str(name))}"
    if name not in DATA_FACTORS:
        raise ConfigError(
            f"unknown data factor {key}; allowed data factors: {', '.join(DATA_FACTORS)}."
        )
    field_name = name[len(DATA_PREFIX) :]
    if field_name in data_keys:
        raise ConfigError(f"{name} is both in data and in factors; keep it in one place.")
    if not isinstance(spec, list) or not spec:
        raise ConfigError(
            f"{key} = {short_repr(spec)} is not allowed; a data factor needs a list of levels "
            "(each level is embedded before the study starts), e.g. [0, 1, 2]."
        )
    levels = [
        DataConfig.from_dict({field_name: v}, where="factors.data").to_dict()[field_name]
        for v in spec
    ]
    if len(set(map(repr, levels))) != len(levels):
        raise ConfigError(f"{key} = {short_repr(spec)} repeats a level; list each level once.")
    return levels


def _factors(
    values: dict[str, Any],
    kind: str,
    fixed_key: str,
    fixed: set[str],
    data_keys: set[str],
    max_trials: int,
) -> dict[str, Any]:
    defaults = TrialConfig()
    out: dict[str, Any] = {}
    for name, spec in values.items():
        key = f"factors.{shorten(str(name))}"
        if isinstance(spec, list) and len(spec) > max_trials:  # before validating each level
            raise ConfigError(
                f"{key} lists {len(spec):,} levels, more than max_trials = {max_trials:,} "
                "trials of the whole study; list fewer levels, or if you mean it raise the cap "
                f"in the study file with max_trials: {len(spec)}."
            )
        if name.startswith(DATA_PREFIX):
            out[name] = _data_factor(name, spec, data_keys)
            continue
        if name not in TRIAL_FIELDS:
            raise ConfigError(
                f"unknown factor {key}; allowed factors: the TrialConfig fields "
                f"({', '.join(TRIAL_FIELDS)}) and the data factors ({', '.join(DATA_FACTORS)})."
            )
        if name in fixed:
            raise ConfigError(
                f"{name} is both in {fixed_key} and in factors; keep it in one place."
            )
        default = getattr(defaults, name)
        if isinstance(spec, list):
            if not spec:
                raise ConfigError(f"{key} = [] has no levels; list at least one value.")
            levels = [
                TrialConfig.from_dict({name: v}, where="factors").to_dict()[name] for v in spec
            ]
            if len(set(map(repr, levels))) != len(levels):
                raise ConfigError(
                    f"{key} = {short_repr(spec)} repeats a level; list each level once."
                )
            out[name] = levels
        elif isinstance(spec, dict):
            if kind not in ("optuna", "lhs"):
                raise ConfigError(
                    f"{key} = {short_repr(spec)} is a range; search.kind {kind} needs listed levels, e.g. [0.001, 0.01] "
                    "(ranges are for kinds optuna and lhs)."
                )
            unknown = sorted(set(spec) - {"low", "high", "log"})
            if unknown or "low" not in spec or "high" not in spec:
                raise ConfigError(
                    f"{key} = {short_repr(spec)} is not a range; give {{low: .., high: .., log: true|false}}."
                )
            if isinstance(default, bool) or not isinstance(default, (int, float)):
                raise ConfigError(
                    f"{key} is a {type(default).__name__} setting; a range needs a numeric one, give a list."
                )
            low = spec["low"]
            high = spec["high"]
            for bound, value in (("low", low), ("high", high)):
                if (
                    isinstance(value, bool)
                    or not isinstance(value, (int, float))
                    or not math.isfinite(value)
                ):
                    raise ConfigError(
                        f"{key}.{bound} = {short_repr(value)} is not a finite number."
                    )
            if not low < high:
                raise ConfigError(
                    f"{key}: low = {short_repr(low)} must be < high = {short_repr(high)}."
                )
            log = spec.get("log", False)
            if not isinstance(log, bool):
                raise ConfigError(
                    f"{key}.log = {short_repr(log)} is not allowed; give true or false."
                )
            if log and low <= 0:
                raise ConfigError(f"{key}: a log range needs low > 0, got {short_repr(low)}.")
            if isinstance(default, int):
                low, high = int(math.ceil(low)), int(math.floor(high))
            out[name] = {"low": low, "high": high, "log": log}
        else:
            raise ConfigError(
                f"{key} = {short_repr(spec)} is not allowed; give a list of levels or a range {{low, high, log}}."
            )
    if kind == "optuna" and not out:
        raise ConfigError("factors is empty; an optuna search needs at least one factor.")
    return out


def _early_stopping(value: Any) -> dict[str, Any] | None:
    if value is None or value is False:
        return None
    if not isinstance(value, dict):
        raise ConfigError(
            f"early_stopping = {short_repr(value)} must be a mapping like {{kind: asha, grace_period: 10}}."
        )
    allowed = {"kind", "grace_period", "reduction_factor"}
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ConfigError(
            f"early_stopping.{shorten(str(unknown[0]))} is not allowed; allowed: {', '.join(sorted(allowed))}."
        )
    kind = value.get("kind", "asha")
    if kind != "asha":
        raise ConfigError(
            f"early_stopping.kind = {short_repr(kind)} is not allowed; allowed: asha."
        )
    grace = _positive_int(value.get("grace_period", 10), "early_stopping.grace_period", low=1)
    factor = value.get("reduction_factor", 3)
    if (
        isinstance(factor, bool)
        or not isinstance(factor, (int, float))
        or not math.isfinite(factor)
        or factor <= 1
    ):
        raise ConfigError(
            f"early_stopping.reduction_factor = {short_repr(factor)} must be a finite number > 1."
        )
    return {"kind": "asha", "grace_period": grace, "reduction_factor": factor}


def _resources(value: Any) -> dict[str, float]:
    if value is None:
        return {"cpu": 1.0, "gpu": 0.0}
    if not isinstance(value, dict):
        raise ConfigError(
            f"resources = {short_repr(value)} must be a mapping like {{cpu: 1, gpu: 0}}."
        )
    unknown = sorted(set(value) - {"cpu", "gpu"})
    if unknown:
        raise ConfigError(
            f"resources.{shorten(str(unknown[0]))} is not allowed; allowed: cpu, gpu."
        )
    cpu = value.get("cpu", 1.0)
    if not _finite_number(cpu) or cpu <= 0:
        raise ConfigError(f"resources.cpu = {short_repr(cpu)} is not allowed; give a number > 0.")
    return {"cpu": float(cpu), "gpu": _gpu_share(value.get("gpu", 0.0))}


def _finite_number(value: Any) -> bool:
    """An int or float (not a bool) that is finite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _gpu_share(value: Any) -> float:
    """``resources.gpu``: 0, whole GPUs (1, 2, ...) or 1/k of one (``1/4`` or 0.25), so that
    k trials fill each GPU. 1/k is stored rounded down to Ray's 0.0001 resource precision
    (1/3 -> 0.3333), so that k of them fit on one GPU."""
    k = None
    if isinstance(value, str) and (found := re.fullmatch(r"\s*1\s*/\s*(\d+)\s*", value)):
        k = int(found.group(1))
    elif _finite_number(value) and 0 < value < 1:
        k = round(1 / value)
        if abs(value * k - 1) > 0.01:  # 0.3 would leave a tenth of every GPU idle
            k = None
    elif _finite_number(value) and value >= 0:
        if float(value).is_integer():
            return float(value)
    if k is not None and 1 <= k <= 10000:
        return math.floor(10000 / k) / 10000
    raise ConfigError(
        f"resources.gpu = {short_repr(value)} is not allowed; give 0 (no GPU), a whole number of GPUs "
        "per trial (1, 2, ...) or a share 1/k of one GPU, written 1/k or as its decimal "
        "(1/2, 1/4 = 0.25, 1/3), so that k trials fill each GPU."
    )


def trials_per_gpu(gpu: float) -> int:
    """How many trials share one GPU at ``resources.gpu`` = ``gpu``: k for 1/k, 1 for one
    or more GPUs per trial, 0 without GPUs."""
    if gpu <= 0:
        return 0
    return 1 if gpu >= 1 else int(round(1 / gpu))

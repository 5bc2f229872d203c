"""The ``qsweep run --dry-run`` plan and its cost model (no Ray, nothing is run).

    from orchestrator.plan import plan_text
    print(plan_text(load_spec("search_spaces/quickstart.yaml"), concurrency=2,
                    study_dir=Path("results/quickstart")))

The cost estimate is the median measured seconds per epoch of the completed trials in
the study's trials.parquet when there are any, else :func:`seconds_per_epoch`, a
statevector cost model scaled from one measured step, plus :func:`shot_seconds_per_epoch`;
the wall time is never less than the driver's own :data:`DRIVER_S_PER_TRIAL` per trial.
With ``resume`` only the trials without a final row are planned, as ``--resume`` runs
them. What is cached, and what would make the run fail before its first trial, comes
from :mod:`orchestrator.precheck`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from model.heads.registry import is_epochless
from orchestrator.precheck import DataCheck, finished_trials
from orchestrator.results import ResultsTable, trials_path

__all__ = [
    "plan_text",
    "seconds_per_epoch",
    "shot_seconds_per_epoch",
    "estimate_seconds",
    "pack_cost_factor",
    "DRIVER_S_PER_TRIAL",
]

# Calibration of the statevector cost model: 14 qubits, batch 16, 6 layers of rotations
# + CNOT ring, forward + backward, 2 threads, complex64: 0.425 s per step.
_CAL_STEP_S = 0.425
_CAL_WORK = 16 * 6 * 2**14  # samples x layers x amplitudes
_SST2_ROWS = 6920 + 872 + 1821
_DEMO_ROWS = 500


# ------------------------------------------------------------------------------------
def _n_train(d) -> tuple[int, int]:
    """(train, val) sizes the protocol will give a ``DataConfig`` (SST-2 sizes when every
    row is used)."""
    if d.n_per_class > 0:
        drawn = 2 * d.n_per_class
    else:
        drawn = _SST2_ROWS if d.protocol == "paper" else 6920
    if d.protocol == "paper":
        n_val = int(round(drawn * d.val_fraction))
        return drawn - n_val, n_val
    return drawn, 872


def seconds_per_epoch(cfg, n_train: int, n_val: int) -> float:
    """Modelled CPU seconds per epoch of one trial (2 threads; order of magnitude).

    Quantum heads: statevector work (samples x circuit layers x 2^qubits) scaled from one
    measured step; evaluation of the validation set counted as one third of a training
    pass; ``ry`` rotations 0.64x of ``rot``; noise-free circuits in the CPU kernel
    KERNEL_SPEEDUP faster; gate noise (Pauli trajectories) not modelled.
    MLP heads: 2 ms per epoch. sklearn heads: one epoch of 2 s. Shot noise: see
    :func:`shot_seconds_per_epoch`.
    """
    if cfg.head == "finetune":  # pairs x 2 sentences through MiniLM, + embedding every split
        return 4e-3 * 2 * cfg.finetune_iterations * n_train * cfg.finetune_epochs + 60.0
    if is_epochless(cfg.head):
        return 2.0
    if cfg.head == "mlp":
        return 0.002 + 2e-6 * n_train
    layers = (
        cfg.encoders * cfg.encoder_layers
        + cfg.reuploads * (cfg.reupload_layers + 1)
        + cfg.main_layers
    )
    if cfg.head == "mlp_encoder":
        layers = cfg.reuploads * (cfg.reupload_layers + 1) + cfg.main_layers
    work = (n_train + n_val / 3.0) * layers * 2**cfg.qubits
    factor = 1.0 if cfg.rotation == "rot" else 0.64
    if cfg.cpu_kernel != "off" and cfg.noise_p1 == 0 and cfg.noise_p2 == 0:
        factor /= KERNEL_SPEEDUP  # noise-free circuits run in the compiled CPU kernel
    return _CAL_STEP_S * factor * work / _CAL_WORK


# The compiled CPU kernel (trial.cpu_kernel) against the torch path the calibration step
# was measured on: the 10-qubit paper trial alone, 1 thread (python -m
# model.benchmark_trials --pack 1 8 16 --epochs 3 --kernel both, 2026-12-02): 3.3x.
KERNEL_SPEEDUP = 3.3

# Packing on the CPU: a pack of T trials costs T x (PACK_SHARED + (1 - PACK_SHARED) / T) of
# one trial's epoch. Fitted to the 10-qubit paper head with the CPU kernel, 1 thread (the
# same run): T = 8 is 2.6x and T = 16 3.0x faster per trial than T = 1 (the torch path:
# 2.0x and 2.1x, PACK_SHARED about 0.45).
PACK_SHARED = 0.3


def pack_cost_factor(size: int) -> float:
    """Per-trial cost in a pack of ``size`` relative to the trial alone (CPU model)."""
    return PACK_SHARED + (1.0 - PACK_SHARED) / max(1, size)


# Shot noise (trial.shots = S > 0) on the PQC's probabilities, per member and epoch (it is
# not shared in a pack): training draws the Gaussian form over all 2^q probabilities of
# every training sentence and reads Z out of them (forward and backward); evaluation
# draws S multinomial shots per validation sentence and bins them by the probabilities.
# The evaluation constants are the CPU time of the sampler alone (`python -m
# orchestrator.benchmark_shots --repeats 5`, 1 thread, 2026-12-03: 23.8 ns per shot,
# 36.6 ns per amplitude). The training constant is fitted to whole epochs with and without
# 8,192 shots (CPU kernel, 1 thread): 10 qubits, a pack of 8, +0.44 s per epoch (speed and
# memory page, 2026-12-02), and 14 qubits, a pack of 4, +0.54-0.70 s per member and epoch
# (2026-12-03, a loaded machine): about 80 ns per amplitude. The sampler alone takes 24:
# the rest is the readout through the probabilities and its backward.
SHOT_TRAIN_S = 80e-9  # per training sentence and amplitude
SHOT_EVAL_S = 24e-9  # per validation sentence and shot
SHOT_EVAL_AMP_S = 37e-9  # per validation sentence and amplitude


def shot_seconds_per_epoch(cfg, n_train: int, n_val: int) -> float:
    """Modelled CPU seconds that ``cfg.shots`` add to one epoch of one trial (0 without
    shots or without a PQC)."""
    if cfg.shots <= 0 or not cfg.is_quantum:
        return 0.0
    amplitudes = 2**cfg.qubits
    return (
        n_train * amplitudes * SHOT_TRAIN_S
        + n_val * cfg.shots * SHOT_EVAL_S
        + n_val * amplitudes * SHOT_EVAL_AMP_S
    )


# The driver's own work per finished trial (Ray Tune's event loop, the row, the journal
# append, handing the trial to the MLflow writer thread), measured end to end on zero-work
# trials: `python -m orchestrator.benchmark_scale --trials 10000 --pack 16` (SQLite MLflow,
# 2 epochs per trial, concurrency 2, 2-core x86_64 VM, 2026-12-03): 9.05 ms per trial,
# 110 trials/s. The driver is one process whose work overlaps the trials running on the
# other cores, so a study's wall time is at least its trials x this, however many slots.
DRIVER_S_PER_TRIAL = 0.009


def _makespan(jobs: list[float], concurrency: int) -> float:
    """Wall time of ``jobs`` (seconds each, in order) on ``concurrency`` slots, each job
    starting on the first slot to free up (Ray's FIFO scheduling)."""
    slots = [0.0] * max(1, concurrency)
    for job in jobs:
        i = slots.index(min(slots))
        slots[i] += job
    return max(slots)


def _measured_s_per_epoch(study_dir: Path) -> float | None:
    done = [
        r
        for r in ResultsTable(trials_path(study_dir), study="").rows.values()
        if r["status"] == "completed" and r["epochs_run"] and r["wall_time_s"]
    ]
    # a packed row's wall time is its pack's: bring it back to one trial alone
    members: dict[Any, int] = {}
    for r in done:
        if r.get("pack_id"):
            members[r["pack_id"]] = members.get(r["pack_id"], 0) + 1
    rows = []
    for r in done:
        size = members.get(r.get("pack_id"), 1)
        rows.append(r["wall_time_s"] / r["epochs_run"] / size / pack_cost_factor(size))
    return sorted(rows)[len(rows) // 2] if rows else None


def _fmt_level(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _plan_packs(spec, planned, concurrency: int):
    """The packs the driver will run (None for Optuna, which packs each suggestion's seeds)."""
    from orchestrator.packing import plan_packs, resolve_pack_size

    if spec.is_optuna:
        return None
    gpu = spec.resources.get("gpu", 0) > 0
    return plan_packs(planned, resolve_pack_size(spec), gpu=gpu, slots=concurrency)


def _pack_lines(spec, packs) -> list[str]:
    """How trials are packed into Ray trials (model.training.fit_packed)."""
    from orchestrator.packing import pack_summary, resolve_pack_size

    size = resolve_pack_size(spec)
    gpu = spec.resources.get("gpu", 0) > 0
    how = f"pack_size {size}" + (f" for a {'GPU' if gpu else 'CPU'}" if size == "auto" else "")
    if packs is None:
        return [f"packing ({how}): each suggestion trains its {len(spec.seeds)} seeds together"]
    lines = [f"packing ({how}): {pack_summary(packs)[len('packs: ') :]}"]
    if any(p.size > 1 for p in packs):
        for pack in packs[:12]:
            lines.append(f"  {pack.pack_id:<14} " + " ".join(m.trial_id for m in pack.members))
        if len(packs) > 12:
            lines.append(f"  ... {len(packs) - 12} more packs")
    return lines


def _data_lines(spec, planned, check: DataCheck) -> tuple[list[str], float]:
    """The embedding work before the study (one model load per encoder), the trials of
    each data setting, trials whose qubits cannot amplitude-encode the width; and the
    modelled seconds of embedding what is not cached yet."""
    settings = spec.data_settings()
    encoders = list(check.encoders)
    rows = len(check.texts) if check.texts is not None else (
        _DEMO_ROWS if spec.data.source == "demo" else _SST2_ROWS
    )  # fmt: skip
    out = [
        f"embedding (driver, before the first trial): {len(encoders)} encoder load(s), one per "
        f"encoder, each embeds the ~{rows} sentences of source {spec.data.source} once for its "
        f"{len(settings) // len(encoders)} data setting(s); cached texts are not embedded again"
    ]
    dims: dict[str, int | None] = {}
    seconds = 0.0
    for name, facts in check.encoders.items():
        dims[name] = dim = facts["dim"]
        embed_s, held = check.embed_seconds(name, rows)
        seconds += embed_s
        shown = f"{name} (from {facts['where']})" if facts["where"] != name else name
        out.append(f"  {shown}: {f'{dim}-d' if dim else 'width unknown until loaded'}, {held}")
    if len(settings) > 1 and planned:
        out.append(f"data settings: {len(settings)} (one object-store object each)")
        for d in settings:
            n = sum(p.data == d for p in planned)
            out.append(
                f"  {d.encoder} | split_seed={d.split_seed} | n_per_class={d.n_per_class}: {n} trials"
            )
    unfit: dict[tuple, int] = {}  # (encoder, width, qubits, encoders) -> trials
    for p in planned:
        dim, cfg = dims.get(p.data.encoder), p.config
        if dim and cfg.head == "quantum" and -(-dim // cfg.encoders) > 2**cfg.qubits:
            key = (p.data.encoder, dim, cfg.qubits, cfg.encoders)
            unfit[key] = unfit.get(key, 0) + 1
    for (name, dim, qubits, n_enc), n in unfit.items():
        out.append(
            f"warning: {n} trials with qubits={qubits}, encoders={n_enc} cannot amplitude-encode "
            f"the {dim}-d vectors of {name}; they will be failed rows"
        )
    return out, seconds


def estimate_seconds(
    spec, configs, sizes, concurrency: int, study_dir: Path, *, planned=None, packs=None
) -> tuple[float, str]:
    """Modelled wall seconds of a study and how they were modelled.

    Each trial alone costs epochs x (the median measured s/epoch of the study's
    completed trials, or :func:`seconds_per_epoch` + :func:`shot_seconds_per_epoch`);
    ``planned`` trials (``configs`` in the same order) are grouped into ``packs``
    (default: the packs the driver will run): a pack costs its members' circuits x
    :func:`pack_cost_factor` plus their shot noise, which packing does not share; the Ray
    trials are then laid out first-come first-served on ``concurrency`` slots. The one
    driver overlaps them, so the wall time is the larger of that layout and the driver's
    own :data:`DRIVER_S_PER_TRIAL` x the number of trials.
    """
    if not configs:
        return 0.0, "nothing to run"
    measured = _measured_s_per_epoch(study_dir)

    def epochs(c) -> int:
        return 1 if is_epochless(c.head) else c.epochs

    cost = [  # circuit seconds of each trial alone
        epochs(c) * (measured if measured is not None else seconds_per_epoch(c, *size))
        for c, size in zip(configs, sizes, strict=True)
    ]
    shots = [  # shot-noise seconds of each trial (in the measured figure already)
        0.0 if measured is not None else epochs(c) * shot_seconds_per_epoch(c, *size)
        for c, size in zip(configs, sizes, strict=True)
    ]
    jobs, packed = [c + s for c, s in zip(cost, shots, strict=True)], ""
    if planned is not None:
        if packs is None:
            packs = _plan_packs(spec, planned, concurrency)
        if any(p.size > 1 for p in packs):
            by_id = {t.trial_id: i for i, t in enumerate(planned)}
            jobs = [
                sum(cost[by_id[m.trial_id]] for m in p.members) * pack_cost_factor(p.size)
                + sum(shots[by_id[m.trial_id]] for m in p.members)
                for p in packs
            ]
            packed = (
                f", {len(packs)} packs at {PACK_SHARED:g} + {1 - PACK_SHARED:g}/T of a trial each"
            )
    total = _makespan(jobs, concurrency)
    driver = len(configs) * DRIVER_S_PER_TRIAL
    bound = ""
    if driver > total:
        total = driver
        bound = (
            f"; the driver bounds it: {len(configs)} trials x {1000 * DRIVER_S_PER_TRIAL:g} ms "
            "of its own work each (a Slurm job array, qsweep slurm submit --array K, runs K "
            "drivers)"
        )
    if measured is not None:
        how = f"measured: median {measured:.3g} s/epoch of the completed trials in {study_dir}/trials.parquet"
    else:
        n_sizes = set(sizes)
        shot_counts = sorted({c.shots for c in configs if c.shots > 0 and c.is_quantum})
        how = (
            "modelled for an otherwise idle CPU: statevector cost scaled from a measured "
            "14-qubit CPU step (2 threads), "
            + (
                f"{sizes[0][0]} train + {sizes[0][1]} val sentences per epoch"
                if len(n_sizes) == 1
                else "train + val sentences per epoch of each trial's data setting"
            )
            + (
                f", shot noise ({', '.join(map(str, shot_counts))} shots) "
                f"{sum(shots) / max(1e-9, sum(jobs)):.0%} of the time"
                if shot_counts
                else ""
            )
            + "; gate noise and GPUs not modelled"
        )
    return total, how + packed + bound


def plan_text(
    spec, *, concurrency: int, study_dir: Path, resume: bool = False, check: DataCheck | None = None
) -> str:
    """The --dry-run plan: trials, factors/points, resources and a cost estimate.

    With ``resume`` the trials that already have a final row in ``study_dir`` are counted
    as done, as ``--resume`` would keep them, and only the others are estimated.
    """
    from orchestrator.progress import format_duration

    check = check or DataCheck(spec)

    out = [f"study {spec.name}" + (f": {spec.description}" if spec.description else "")]
    if spec.source:
        out.append(f"file: {spec.source}")
    d = spec.data
    shown = {
        name: ("(factor)" if f"data.{name}" in spec.factors else getattr(d, name))
        for name in ("encoder", "n_per_class", "split_seed")
    }
    out.append(
        f"data: source={d.source} encoder={shown['encoder']} protocol={d.protocol} "
        f"n_per_class={shown['n_per_class']} val_fraction={d.val_fraction} "
        f"split_seed={shown['split_seed']} max_test={d.max_test}"
    )
    if spec.fixed:
        out.append("fixed: " + ", ".join(f"{k}={_fmt_level(v)}" for k, v in spec.fixed.items()))
    search = ", ".join(f"{k}={v}" for k, v in spec.search.to_dict().items())
    out.append(f"search: {search}; metric {spec.metric} ({spec.mode})")
    out.append("factors:")
    for name, levels in spec.factors.items():
        if isinstance(levels, list):
            out.append(
                f"  {name:<16} {len(levels)} levels: " + ", ".join(_fmt_level(v) for v in levels)
            )
        else:
            scale = "log" if levels["log"] else "linear"
            out.append(
                f"  {name:<16} range {_fmt_level(levels['low'])} .. {_fmt_level(levels['high'])} ({scale})"
            )
    seeds = ", ".join(map(str, spec.seeds))
    n_train, n_val = _n_train(spec.data)
    done = finished_trials(spec, study_dir)
    kept = done if resume else set()
    where = f"{study_dir}/trials.parquet"
    sizes: list[tuple[int, int]] = []  # (train, val) sentences of each trial in configs
    todo = None
    if spec.is_optuna:
        table = ResultsTable(trials_path(study_dir), study=spec.name) if done else None
        suggested = {table.rows[t]["point_id"] for t in kept} if table else set()
        left = max(0, spec.search.trials - len(suggested))
        line = (
            f"trials: {spec.search.trials} optuna suggestions x {len(spec.seeds)} seed ({seeds}) "
            f"= {spec.n_trials()}"
        )
        if resume:
            line += f"; {len(suggested)} suggestions finished in {where}, {left} to make"
        out.append(line)
        mid = {}
        for name, levels in spec.factors.items():
            if isinstance(levels, list):
                mid[name] = levels[len(levels) // 2]
            else:
                lo, hi = levels["low"], levels["high"]
                value = math.sqrt(lo * hi) if levels["log"] else (lo + hi) / 2
                mid[name] = int(round(value)) if isinstance(lo, int) else value
        configs = [spec.trial_config(mid, spec.seeds[0])] * (left * len(spec.seeds))
    else:
        planned = spec.planned_trials()
        todo = [p for p in planned if p.trial_id not in kept]
        points = spec.points()
        line = f"trials: {len(points)} points x {len(spec.seeds)} seeds ({seeds}) = {len(planned)}"
        if resume:
            line += f"; {len(planned) - len(todo)} finished in {where} (kept), {len(todo)} to run"
        out.append(line)
        if spec.search.kind != "grid" or len(points) <= 40:
            names = list(spec.factors)
            widths = [max(len(n), *(len(_fmt_level(p[n])) for p in points)) for n in names]
            out.append("points:")
            out.append(
                "  point  " + "  ".join(n.rjust(w) for n, w in zip(names, widths, strict=True))
            )
            for i, p in enumerate(points[:60]):
                cells = "  ".join(
                    _fmt_level(p[n]).rjust(w) for n, w in zip(names, widths, strict=True)
                )
                out.append(f"  p{i:03d}   {cells}")
            if len(points) > 60:
                out.append(f"  ... {len(points) - 60} more")
        configs = [p.config for p in todo]
        sizes = [_n_train(p.data) for p in todo]
    if done and not resume:
        out.append(
            f"note: {where} holds {len(done)} finished trial{'s' if len(done) != 1 else ''}: "
            "the run is refused without --resume (add --resume to plan what it would run)"
        )
    data_lines, embed_s = _data_lines(spec, todo or [], check)
    out += data_lines
    res = spec.resources
    out.append(
        f"resources per trial: cpu={res['cpu']:g} gpu={res['gpu']:g}; max concurrent trials: {concurrency}"
    )
    if spec.early_stopping:
        es = spec.early_stopping
        out.append(
            f"early stopping: ASHA on {spec.metric}, grace_period={es['grace_period']} epochs, reduction_factor={es['reduction_factor']:g}"
        )
    out.append(f"retries per failing trial: {spec.retries}")
    packs = _plan_packs(spec, todo, concurrency)
    out += _pack_lines(spec, packs)

    sizes = sizes or [(n_train, n_val)] * len(configs)
    total, how = estimate_seconds(
        spec, configs, sizes, concurrency, study_dir, planned=todo, packs=packs
    )
    epochs = sum(1 if is_epochless(c.head) else c.epochs for c in configs)
    embedding = (
        f"embedding ~{format_duration(embed_s)} of sentences not cached yet"
        if embed_s
        else "no embedding (every sentence is cached)"
    )
    out.append(
        f"cost estimate: {len(configs)} trials{' to run' if resume else ''}, {epochs} epochs in "
        f"all, {concurrency} at a time ~ {format_duration(total)} wall time ({how}); before it, "
        f"{embedding}"
    )
    if total > LONG_STUDY_S:
        out += _speed_up_lines(spec, configs, sizes, concurrency, study_dir, todo, total)
    out.append(f"results: {study_dir}/ (trials.parquet, study.json, mlflow.db)")
    return "\n".join(out)


LONG_STUDY_S = 24 * 3600.0  # estimates above this get suggestions for making them shorter


def _speed_up_lines(spec, configs, sizes, concurrency, study_dir, todo, total) -> list[str]:
    """Ways to shorten a long study, each with its modelled wall time where the CPU model
    can say it."""
    from orchestrator.packing import plan_packs, resolve_pack_size
    from orchestrator.progress import format_duration

    out = [
        f"note: ~{format_duration(total)} on {concurrency} CPU slot(s) like this machine's; to shorten it:"
    ]
    if todo is not None and resolve_pack_size(spec) != "auto":
        packs = plan_packs(todo, "auto", gpu=False, slots=concurrency)
        if any(p.size > 1 for p in packs):
            alt, _ = estimate_seconds(spec, configs, sizes, concurrency, study_dir, planned=todo,
                                      packs=packs)  # fmt: skip
            out.append(
                f"  - pack trials (pack_size: auto, up to 16 per model on a CPU): ~{format_duration(alt)}"
            )
    if not spec.resources.get("gpu"):
        out.append(
            "  - GPUs: resources: {gpu: 1} (or a fraction) and pack_size: auto (up to 64 trials "
            "per model on a GPU); the GPU speed is not modelled here"
        )
    wide = 8 * concurrency
    alt, _ = estimate_seconds(spec, configs, sizes, wide, study_dir, planned=todo)
    out.append(
        f"  - a Ray cluster on Slurm: qsweep slurm submit {spec.source or 'SPACE.yaml'} --nodes N "
        f"--max-concurrent K; K = {wide} (e.g. {8} machines like this one): ~{format_duration(alt)}"
    )
    return out

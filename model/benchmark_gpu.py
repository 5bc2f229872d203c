"""Every GPU figure of the speed table in one call of at most 5 minutes (device time is short).

    PYTHONPATH=. python3 -m model.benchmark_gpu                  # one H100/H200, --budget-s 240
    PYTHONPATH=. python3 -m model.benchmark_gpu --quick          # the 10-qubit rows only
    PYTHONPATH=. python3 -m model.benchmark_gpu --device cpu --quick --packs 2   # CPU smoke run

Prints one line per figure as it is measured (a run cut short still reports), then one
Markdown table for the README (its caption gives the GPU, the date and the method);
``--json PATH`` also writes the rows. In order of importance:

1. the 10-qubit paper head: one trial with CUDA graphs off and on, packs of 8 and 64 (on);
2. one 18-qubit trial (graphs on, adjoint gradients as ``auto`` picks them);
3. one training step at 22 and 24 qubits (batch 16), autograd and adjoint, each in a fresh
   process (``model.benchmark_trials``): time and peak CUDA memory;
4. the paper's Fig. 8(a) study (qubits 10-18 x 7 learning rates x 10 seeds, 800 epochs) in
   GPU-hours: at 10, 14 and 18 qubits one pack of the size the planner gives 70 trials
   (``auto``, balanced: 2 packs of 35 on an 80 GB GPU), the cost per trial-epoch
   interpolated geometrically in between.

Trials train **2 epochs, not 800**: the second epoch is the steady state (after warm-up and
CUDA-graph capture) and the 800-epoch time is 800 x its seconds; the table says so. Every
measurement starts only while ``--budget-s`` lasts (no epoch starts after it, a step process
gets the time left), so the call ends within the budget plus one epoch; what did not fit is
a row "skipped (time budget)". By the H100 step times measured on an earlier version (10
qubits eager 20 ms, graphed 1.2 ms; 18 qubits 41-53 ms; 22 qubits 0.33 s) the work itself
is about 2 minutes; the budget is what bounds it. Embeddings are 768-d Gaussian vectors in the paper
protocol's sizes (435 train, 77 validation); the simulation cost does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch

from model.benchmark_trials import time_pack
from model.config import TrialConfig
from model.packing import auto_pack_size

# The paper's time per 800-epoch trial: qubits -> (GPU, hours).
PAPER = {10: ("A100", 6.8), 18: ("H100", 90.0)}
FIG8_TRIALS = 70  # per qubit count: 7 learning rates x 10 seeds
EPOCHS = 800
SKIPPED = "skipped (time budget)"


class Budget:
    """Seconds left of the call's time budget."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def _say(rows: list[dict], **row) -> dict:
    rows.append(row)
    print("  " + ", ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return row


def _step(qubits: int, gradient: str, device: str, timeout: float) -> dict:
    """One training step in a fresh process: its time and peak memory, or why not."""
    cmd = [sys.executable, "-m", "model.benchmark_trials", "--_step", gradient,
           "--qubits", str(qubits), "--device", device, "--threads", "1"]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"not done within {timeout:.0f} s"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": "out of memory" if "out of memory" in last.lower() else last[:160]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fig8_pack(cfg: TrialConfig, gpu: bool, memory: int) -> tuple[int, int]:
    """(packs, members per pack) for the 70 trials of one qubit count, as the planner
    packs them: ``auto`` size, then balanced (70 at size 64: 2 packs of 35)."""
    size = auto_pack_size(cfg, gpu=gpu, memory_bytes=memory or None)
    packs = -(-FIG8_TRIALS // size)
    return packs, -(-FIG8_TRIALS // packs)


def fig8_hours(per_trial_epoch: dict[int, float]) -> dict[int, float]:
    """GPU-hours of the 70 trials of each qubit count from min to max of the measured ones:
    seconds per trial-epoch interpolated geometrically between neighbouring measurements."""
    measured = sorted(per_trial_epoch)
    hours = {}
    for q in range(measured[0], measured[-1] + 1):
        hi = next(m for m in measured if m >= q)
        lo = max(m for m in measured if m <= q)
        w = 0.0 if hi == lo else (q - lo) / (hi - lo)
        logs = (1 - w) * math.log(per_trial_epoch[lo]) + w * math.log(per_trial_epoch[hi])
        hours[q] = FIG8_TRIALS * EPOCHS * math.exp(logs) / 3600
    return hours


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:,.1f} min"


def _vs_paper(qubits: int, hours_per_trial: float) -> str:
    if qubits not in PAPER:
        return ""
    gpu, hours = PAPER[qubits]
    return f"{hours:g} {gpu}-h per trial; {hours / hours_per_trial:,.0f}x less"


def trial_row(label: str, setting: str, t: int, s_epoch: float, qubits: int) -> dict:
    per_trial = s_epoch * EPOCHS / t
    measured = f"{s_epoch:.3f} s/epoch" + (f" per pack of {t}" if t > 1 else "")
    return dict(what=label, setting=setting, measured=measured,
                trial=_minutes(per_trial) + (" per trial" if t > 1 else ""),
                paper=_vs_paper(qubits, per_trial / 3600), s_per_epoch=s_epoch, T=t)  # fmt: skip


def table(rows: list[dict], caption: str) -> str:
    """The README table: a caption line, then one row per measurement."""
    out = [caption, "", "| measurement | setting | measured | 800 epochs | the paper |",
           "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        cells = [r["what"], r["setting"], r["measured"], r.get("trial", ""), r.get("paper", "")]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the 10-qubit rows only")
    p.add_argument("--epochs", type=int, default=2, help="epochs per trial (2: one steady)")
    p.add_argument("--packs", type=int, nargs="+", default=[8, 64], help="pack sizes of [1]")
    p.add_argument("--trial-qubits", type=int, default=18, help="the one trial of [2]")
    p.add_argument("--step-qubits", type=int, nargs="+", default=[22, 24], help="[3]")
    p.add_argument("--fig8-qubits", type=int, nargs="+", default=[10, 14, 18], help="[4]")
    p.add_argument("--budget-s", type=float, default=240.0, help="time budget of the call")
    p.add_argument("--json", type=Path, help="also write the rows to this file")
    p.add_argument("--device", default="cuda", help="cpu: a smoke run (tests)")
    args = p.parse_args(argv)
    gpu = args.device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        print("model.benchmark_gpu needs a CUDA GPU; this machine has none.", file=sys.stderr)
        return 2
    budget = Budget(args.budget_s)
    name = torch.cuda.get_device_name(0) if gpu else "cpu"
    memory = torch.cuda.get_device_properties(0).total_memory if gpu else 0
    print(f"{name}, {memory / 2**30:.0f} GiB, torch {torch.__version__}", flush=True)
    rows: list[dict] = []
    base = TrialConfig(qubits=10, device=args.device, shots=8192)
    on = "on" if gpu else "off"  # a CPU has no graphs
    graphs = {"on": "CUDA graphs on", "off": "CUDA graphs off"}

    def timed(cfg: TrialConfig, t: int) -> float | None:
        """Steady-state s/epoch of a pack of ``t``; None when the budget is spent."""
        if budget.left() <= 0:
            return None
        s = time_pack(cfg, t, args.epochs, stop_at=budget.end)[0]
        if budget.left() < 0 and args.epochs > 1:
            print("  (the budget ran out: fewer epochs, set-up included)", flush=True)
        return s

    print("[1] 10 qubits, 8,192 shots", flush=True)
    for t, g in ((1, "off"), (1, on), *((t, on) for t in args.packs)):
        label = "10 qubits, one trial" if t == 1 else f"10 qubits, pack of {t}"
        s = timed(base.replace(cuda_graphs=g), t)
        if s is None:
            _say(rows, what=label, setting=graphs[g], measured=SKIPPED)
        else:
            _say(rows, **trial_row(label, graphs[g], t, s, 10))
    if not args.quick:
        q = args.trial_qubits
        print(f"[2] {q} qubits, 8,192 shots, one trial", flush=True)
        cfg = base.replace(qubits=q, cuda_graphs=on)
        s = timed(cfg, 1)
        setting = f"{graphs[on]}, {'adjoint' if q >= 14 else 'autograd'} gradients"
        label = f"{q} qubits, one trial"
        if s is None:
            _say(rows, what=label, setting=setting, measured=SKIPPED)
        else:
            _say(rows, **trial_row(label, setting, 1, s, q))

        print("[3] one training step, batch 16", flush=True)
        for q in args.step_qubits:
            for gradient in ("autograd", "adjoint"):
                label = f"{q} qubits, one training step (batch 16)"
                if budget.left() < 5:
                    _say(rows, what=label, setting=gradient, measured=SKIPPED)
                    continue
                r = _step(q, gradient, args.device, timeout=budget.left())
                key, kind = ("peak_cuda_mb", "CUDA memory") if gpu else ("peak_rss_mb", "RSS")
                measured = r.get("error") or (
                    f"{r['step_s']:.3f} s, peak {kind} {r[key] / 1024:.1f} GiB"
                )
                _say(rows, what=label, setting=gradient, measured=measured, **r)

        print(f"[4] Fig. 8(a): {FIG8_TRIALS} trials per qubit count, {EPOCHS} epochs", flush=True)
        per_trial_epoch, measured, sizes = {}, [], []
        for q in args.fig8_qubits:
            cfg = base.replace(qubits=q, cuda_graphs=on)
            packs, t = fig8_pack(cfg, gpu, memory)
            sizes.append(str(t))
            s = timed(cfg, t)
            if s is None:
                measured.append(f"{q} q: {SKIPPED}")
                continue
            per_trial_epoch[q] = s / t
            measured.append(f"{q} q {s:.2f}")
            print(f"  {q} qubits: {packs} packs of {t}, {s:.3f} s/epoch per pack", flush=True)
        qs = sorted(args.fig8_qubits)
        setting = (f"qubits {qs[0]}-{qs[-1]} x 7 learning rates x 10 seeds = "
                   f"{FIG8_TRIALS * (qs[-1] - qs[0] + 1)} trials, packs of {'/'.join(dict.fromkeys(sizes))}")  # fmt: skip
        row = dict(what="Fig. 8(a) projection", setting=setting,
                   measured="s/epoch per pack: " + ", ".join(measured))  # fmt: skip
        if len(per_trial_epoch) == len(qs):
            hours = fig8_hours(per_trial_epoch)
            per_trial = {q: h / FIG8_TRIALS for q, h in hours.items()}
            row["trial"] = f"{sum(hours.values()):,.1f} GPU-h in all"
            row["paper"] = "; ".join(
                f"{q} q: {per_trial[q]:.3f} GPU-h per trial vs {PAPER[q][1]:g} {PAPER[q][0]}-h"
                for q in sorted(PAPER) if q in per_trial
            )  # fmt: skip
            row["gpu_hours"] = round(sum(hours.values()), 3)
        _say(rows, **row)

    took = args.budget_s - budget.left()
    date = time.strftime("%Y-%m-%d")
    caption = (
        f"{name} ({memory / 2**30:.0f} GiB), torch {torch.__version__}, {date}: "
        f"`PYTHONPATH=. python3 -m model.benchmark_gpu` ({took:.0f} s in all). The paper's "
        "head (R=4, N=1, M=2, C=1, Rot, 5 sQE layers), batch 16, 8,192 shots, 435 train / 77 "
        f"validation rows; each trial trains {args.epochs} epochs and its 800-epoch time is "
        "800 x the steady-state s/epoch (the last epoch: after warm-up and graph capture)."
    )
    print("\n" + table(rows, caption), flush=True)
    if args.json:
        record = {"device": name, "date": date, "torch": torch.__version__, "wall_s": took,
                  "epochs": args.epochs, "rows": rows}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

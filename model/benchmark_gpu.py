"""Every GPU figure of the README's speed table in one call (the device machine's time is short).

    PYTHONPATH=. python3 -m model.benchmark_gpu                # about 5-8 minutes on one H100/H200
    PYTHONPATH=. python3 -m model.benchmark_gpu --quick        # the 10-qubit rows only

Prints one line per figure as it is measured (so a run cut short still reports), then a
Markdown table and a JSON line with every number, all measured in this one run:

1. the 10-qubit paper head, 3 epochs each: one trial with CUDA graphs off and on, and packs
   of 8 and 64 with graphs on -> seconds per epoch, minutes per 800-epoch trial;
2. the 18-qubit head, one trial (graphs on, adjoint gradients as ``auto`` picks them) ->
   the 800-epoch projection;
3. one training step at 22 and 24 qubits (batch 16) with autograd and with adjoint
   gradients, each in a fresh process -> time and peak CUDA memory (``model.benchmark_trials``);
4. the paper's Fig. 8(a) study (qubits 10-18 x 7 learning rates x 10 seeds, 800 epochs)
   in GPU-hours: 70 trials per qubit count in packs of ``auto`` size, the per-epoch time of
   one pack measured at 10, 14 and 18 qubits and interpolated geometrically in between.

Embeddings are 768-d Gaussian vectors in the paper protocol's sizes (435 train, 77
validation); the simulation cost does not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time

import torch

from model.benchmark_trials import time_pack
from model.config import TrialConfig
from model.packing import auto_pack_size

PAPER = {"10q trial (A100-h)": 6.8, "18q trial (H100-h)": 90.0}


def _say(rows: list[dict], **row) -> None:
    rows.append(row)
    print("  " + ", ".join(f"{k}={v}" for k, v in row.items()), flush=True)


def _step(qubits: int, gradient: str) -> dict:
    cmd = [sys.executable, "-m", "model.benchmark_trials", "--_step", gradient,
           "--qubits", str(qubits), "--device", "cuda"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": last[:160]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the 10-qubit rows only")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--packs", type=int, nargs="+", default=[8, 64], help="pack sizes of [1]")
    p.add_argument("--device", default="cuda", help="cpu: a smoke run of [1] (tests)")
    args = p.parse_args(argv)
    gpu = args.device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        print("model.benchmark_gpu needs a CUDA GPU; this machine has none.", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(0) if gpu else "cpu"
    memory = torch.cuda.get_device_properties(0).total_memory if gpu else 0
    print(f"{name}, {memory / 2**30:.0f} GiB, torch {torch.__version__}", flush=True)
    rows: list[dict] = []
    start = time.perf_counter()
    base = TrialConfig(qubits=10, device=args.device, shots=8192)
    on = "on" if gpu else "off"

    print("[1] 10 qubits, 8,192 shots", flush=True)
    for t, graphs in ((1, "off"), (1, on), *((t, on) for t in args.packs)):
        s, _ = time_pack(base.replace(cuda_graphs=graphs), t, args.epochs)
        _say(rows, what="10q pack", T=t, graphs=graphs, s_per_epoch=round(s, 4),
             min_per_trial_800=round(s * 800 / t / 60, 3))  # fmt: skip
    if not args.quick and gpu:
        print("[2] 18 qubits, 8,192 shots, one trial", flush=True)
        s, _ = time_pack(base.replace(qubits=18, cuda_graphs="on"), 1, 1)
        _say(rows, what="18q trial", T=1, graphs="on", s_per_epoch=round(s, 3),
             min_per_trial_800=round(s * 800 / 60, 2))  # fmt: skip

        print("[3] one training step, batch 16", flush=True)
        for qubits in (22, 24):
            for gradient in ("autograd", "adjoint"):
                r = _step(qubits, gradient)
                _say(rows, what="step", qubits=qubits, gradient=gradient, **r)

        print("[4] Fig. 8(a): qubits 10-18 x 7 learning rates x 10 seeds, 800 epochs", flush=True)
        measured = {}
        for qubits in (10, 14, 18):
            cfg = base.replace(qubits=qubits, cuda_graphs="on")
            size = min(70, auto_pack_size(cfg, gpu=True, memory_bytes=memory))
            s, _ = time_pack(cfg, size, 1)
            measured[qubits] = s / size  # seconds per trial-epoch in a pack of `size`
            _say(rows, what="fig8 pack", qubits=qubits, T=size, s_per_epoch=round(s, 3))
        hours = 0.0
        for qubits in range(10, 19):
            lo, hi = (10, 14) if qubits <= 14 else (14, 18)
            w = (qubits - lo) / (hi - lo)
            per = math.exp((1 - w) * math.log(measured[lo]) + w * math.log(measured[hi]))
            hours += 70 * 800 * per / 3600
        _say(rows, what="fig8 projection", gpu_hours=round(hours, 2), trials=630)

    print(f"\n{name}, {time.strftime('%Y-%m-%d')}, {time.perf_counter() - start:.0f} s in all\n")
    print(f"(the paper: {PAPER['10q trial (A100-h)']} A100-hours per 10-qubit trial, "
          f"{PAPER['18q trial (H100-h)']} H100-hours per 18-qubit trial)\n")  # fmt: skip
    print("| what | figures |\n|---|---|")
    for r in rows:
        print(
            f"| {r['what']} | " + ", ".join(f"{k} {v}" for k, v in r.items() if k != "what") + " |"
        )
    print(json.dumps({"device": name, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

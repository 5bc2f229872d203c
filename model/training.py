"""Training heads on fixed embeddings: the trial contract every driver calls.

    from model import fit, fit_packed, TrialConfig
    result = fit(TrialConfig(qubits=10, epochs=800), embedded, on_epoch=print)
    results = fit_packed([cfg.replace(seed=s) for s in range(8)], embedded)  # one model, 8 trials

Adam with weight decay and per-epoch exponential learning-rate decay; the epoch with the
best validation accuracy is kept (ties: the earlier epoch) and the test accuracy is
measured with its weights. Knows nothing of Ray, MLflow or Slurm.

**Packing.** Trials that differ only in :data:`PACKABLE_KEYS` (seed, learning rate, LR
decay, weight decay) train as one model whose weights carry a member axis
(``model.heads.packed``). Every member keeps its own seeded initial weights, data order
and noise stream, its own Adam hyperparameters, best epoch and test accuracy: member t
of a pack computes what ``fit`` computes for that config alone. ``fit`` is a pack of one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import TrialConfig
from model.engine import SafeSteps, StepGraph, use_cuda_graphs
from model.errors import ConfigError
from model.heads import registry
from model.packing import (
    ADJOINT_MIN_QUBITS,
    PACKABLE_KEYS,
    auto_pack_size,
    pack_key,
    use_adjoint,
)
from model.quantum.rng import MemberRNG
from model.types import EmbeddedSplits, TrialResult

__all__ = [
    "fit",
    "fit_packed",
    "PACKABLE_KEYS",
    "pack_key",
    "resolve_device",
    "evaluate",
    "count_parameters",
    "use_adjoint",
    "ADJOINT_MIN_QUBITS",
    "auto_pack_size",
    "use_cuda_graphs",
    "StepGraph",
]

EpochCallback = Callable[[dict[str, Any]], Any]
# Packed callback, once per epoch: {member index: metrics} of the members still training ->
# the member indices to stop now (e.g. by ASHA), or None.
PackCallback = Callable[[dict[int, dict[str, Any]]], Any]


# Largest number of amplitudes (batch x members x 2**qubits) evaluated at once without gradients.
_EVAL_AMPLITUDES = 1 << 22


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU. Asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "trial.device = 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'."
        )
    return torch.device(name)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars (of all members of a packed head)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _seed(seed: int, purpose: int) -> int:
    """A distinct, reproducible seed per purpose (0 init, 1 data order, 2 noise)."""
    return int(np.random.SeedSequence([int(seed), purpose]).generate_state(1)[0])


def fit(
    config: TrialConfig,
    data: EmbeddedSplits,
    on_epoch: EpochCallback | None = None,
) -> TrialResult:
    """Train ``config.head`` on ``data`` and return its validation/test accuracy.

    ``on_epoch`` is called after every epoch with ``{"epoch" (1-based), "train_loss",
    "train_accuracy", "val_loss", "val_accuracy", "lr", "elapsed_s"}``; drivers use it
    to report progress (and may stop the trial by raising).
    """
    data.check_trainable()
    if registry.is_epochless(config.head):
        return registry.load(config.head)(config, data)
    pack_cb = None if on_epoch is None else (lambda by_member: on_epoch(by_member[0]))
    return fit_packed([config], data, on_epoch=pack_cb, stop_on_error=True)[0]


def fit_packed(
    configs: Sequence[TrialConfig],
    data: EmbeddedSplits,
    on_epoch: PackCallback | None = None,
    *,
    stop_on_error: bool = False,
) -> list[TrialResult | Exception]:
    """Train the trials ``configs`` (equal :func:`pack_key`) as one packed model.

    ``on_epoch`` is called once per epoch with ``{member: metrics}`` (the members still
    training; metrics as in :func:`fit`) and may return member indices to stop (their
    result covers the epochs they ran). Returns one entry per config, in order: its
    ``TrialResult``, or the exception that failed that member alone (a non-finite loss).
    ``stop_on_error`` re-raises a member's failure instead (what ``fit`` wants).
    """
    if not configs:
        raise ConfigError("fit_packed needs at least one trial config.")
    first = configs[0]
    for c in configs[1:]:
        if pack_key(c) != pack_key(first):
            diff = sorted(k for (k, v) in set(pack_key(c)) ^ set(pack_key(first)))
            raise ConfigError(
                f"trials in one pack may differ only in {', '.join(PACKABLE_KEYS)}; "
                f"these differ too: {', '.join(dict.fromkeys(diff))}."
            )
    data.check_trainable()
    if registry.is_epochless(first.head):  # fitted once each, nothing to share
        return [registry.load(c.head)(c, data) for c in configs]
    return _PackedTrainer(list(configs), data, on_epoch, stop_on_error).run()


class _PackedTrainer:
    def __init__(self, configs, data, on_epoch, stop_on_error) -> None:
        from model.heads.factory import build_head

        self.start = time.perf_counter()
        self.configs, self.data, self.on_epoch = configs, data, on_epoch
        self.stop_on_error = stop_on_error
        cfg = configs[0]
        self.cfg, self.t = cfg, len(configs)
        self.device = resolve_device(cfg.device)
        seeds = [c.seed for c in configs]
        self.head = build_head(
            cfg, data.dim, seeds=[_seed(s, 0) for s in seeds], adjoint=use_adjoint(cfg)
        ).to(self.device)
        if cfg.is_quantum:
            self.head.set_noise_rng(MemberRNG.seeded([_seed(s, 2) for s in seeds], self.device))
        self.n_params = count_parameters(self.head) // self.t
        self.shuffle = [torch.Generator().manual_seed(_seed(s, 1)) for s in seeds]
        self.optimizer = PackedAdam(
            self.head,
            lr=[c.learning_rate for c in configs],
            weight_decay=[c.weight_decay for c in configs],
            device=self.device,
        )
        self.decay = torch.tensor([c.lr_decay for c in configs], dtype=torch.float64)
        self.lr0 = torch.tensor([c.learning_rate for c in configs], dtype=torch.float64)
        dev = self.device
        self.x_train = torch.as_tensor(data.x_train, dtype=torch.float32, device=dev)
        self.y_train = torch.as_tensor(data.y_train, dtype=torch.long, device=dev)
        self.x_val = torch.as_tensor(data.x_val, dtype=torch.float32, device=dev)
        self.y_val = torch.as_tensor(data.y_val, dtype=torch.long, device=dev)
        graph = StepGraph(self._step) if use_cuda_graphs(cfg, self.device) else None
        # every step goes through here: the fastest path that works (model.engine)
        self.steps = SafeSteps(self._step, self.head, self.optimizer, cfg, self.device, graph=graph)
        per_sample = (1 << cfg.qubits) * max(1, cfg.encoders) * self.t if cfg.is_quantum else 1
        self.eval_batch = max(1, min(cfg.eval_batch_size, _EVAL_AMPLITUDES // per_sample))

    # -- one epoch --------------------------------------------------------------------
    def _orders(self) -> Tensor:
        """``(T, n)`` this epoch's data order of every member (its own generator)."""
        n = len(self.y_train)
        return torch.stack([torch.randperm(n, generator=g) for g in self.shuffle]).to(self.device)

    def _step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One training step of every member: forward, backward, Adam. Returns the
        per-member mean losses ``(T,)`` and the logits ``(b, T, 2)`` (both detached)."""
        logits = self.head(x)  # (b, T, 2)
        losses = (
            F.cross_entropy(logits.reshape(-1, 2), y.reshape(-1), reduction="none")
            .view(y.shape)
            .mean(0)
        )  # (T,)
        self.head.zero_grad(set_to_none=False)
        losses.masked_fill(~self.optimizer.alive, 0.0).sum().backward()
        self.optimizer.step()
        return losses.detach(), logits.detach()

    def _train_epoch(self, lr: Tensor, alive: Tensor) -> tuple[Tensor, Tensor]:
        b = self.cfg.batch_size
        self.head.train()
        orders = self._orders()
        n = orders.shape[1]
        loss_sum = torch.zeros(self.t, device=self.device, dtype=torch.float64)
        correct = torch.zeros(self.t, device=self.device, dtype=torch.long)
        self.optimizer.set_lr(lr, alive)
        for lo in range(0, n, b):
            idx = orders[:, lo : lo + b].T  # (b, T)
            x, y = self.x_train[idx], self.y_train[idx]  # (b, T, d), (b, T)
            # full batches: the captured step (CUDA graphs); the last, smaller batch runs eager
            losses, logits = self.steps(x, y, full=idx.shape[0] == b)
            loss_sum += losses.double() * idx.shape[0]
            correct += (logits.argmax(-1) == y).sum(0)
        return loss_sum / n, correct.double() / n

    @torch.no_grad()
    def _evaluate(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Per-member mean cross-entropy and accuracy ``(T,)`` on the same rows for every member."""
        return evaluate_members(self.head, x, y, self.t, batch_size=self.eval_batch)

    # -- the loop ---------------------------------------------------------------------
    def run(self) -> list[TrialResult | Exception]:
        cfg, t = self.cfg, self.t
        alive = torch.ones(t, dtype=torch.bool, device=self.device)
        errors: list[Exception | None] = [None] * t
        stopped_at = [cfg.epochs] * t
        history: list[list[dict[str, float]]] = [[] for _ in range(t)]
        best_val = [-1.0] * t
        best_epoch = [0] * t
        best = _MemberSnapshot(self.head)
        for epoch in range(1, cfg.epochs + 1):
            if not bool(alive.any()):
                break
            lr = self.lr0 * self.decay ** (epoch - 1)
            train_loss, train_acc = self._train_epoch(lr.to(self.device, torch.float32), alive)
            val_loss, val_acc = self._evaluate(self.x_val, self.y_val)
            elapsed = time.perf_counter() - self.start
            train_loss, train_acc = train_loss.tolist(), train_acc.tolist()
            val_loss, val_acc = val_loss.tolist(), val_acc.tolist()
            improved, reports = [], {}
            for m in range(t):
                if not alive[m]:
                    continue
                if not math.isfinite(train_loss[m]):
                    errors[m] = FloatingPointError(
                        f"training loss of trial {m} (seed {self.configs[m].seed}, learning_rate "
                        f"{self.configs[m].learning_rate}) is not finite at epoch {epoch}."
                    )
                    alive[m] = False
                    stopped_at[m] = epoch
                    if self.stop_on_error:
                        raise errors[m]
                    continue
                metrics = {
                    "epoch": epoch,
                    "train_loss": train_loss[m],
                    "train_accuracy": train_acc[m],
                    "val_loss": val_loss[m],
                    "val_accuracy": val_acc[m],
                    "lr": float(lr[m]),
                    "elapsed_s": elapsed,
                }
                history[m].append(metrics)
                reports[m] = dict(metrics)
                if val_acc[m] > best_val[m]:
                    best_val[m], best_epoch[m] = val_acc[m], epoch
                    improved.append(m)
            best.save(improved)
            if self.on_epoch is not None and reports:
                for m in self.on_epoch(reports) or ():
                    if alive[m]:
                        alive[m] = False
                        stopped_at[m] = epoch

        best.restore()
        x_test = torch.as_tensor(self.data.x_test, dtype=torch.float32, device=self.device)
        y_test = torch.as_tensor(self.data.y_test, dtype=torch.long, device=self.device)
        _, test_acc = self._evaluate(x_test, y_test)
        wall = time.perf_counter() - self.start
        energy = _energy(cfg)
        extra: dict[str, Any] = {"pack_size": t} if t > 1 else {}
        if self.steps.fallback:  # an optimisation failed; the trial ran eager (model.engine)
            extra["engine_fallback"] = self.steps.fallback
        out: list[TrialResult | Exception] = []
        for m, c in enumerate(self.configs):
            if errors[m] is not None:
                out.append(errors[m])
                continue
            out.append(
                TrialResult(
                    val_accuracy=best_val[m],
                    test_accuracy=float(test_acc[m]),
                    best_epoch=best_epoch[m],
                    epochs_run=stopped_at[m],
                    n_params=self.n_params,
                    wall_time_s=wall,
                    device=str(self.device),
                    engine=self.steps.engine,
                    history=history[m],
                    energy=dict(energy),
                    config=c.to_dict(),
                    extra=dict(extra),
                    state=member_state(self.head, m),
                )
            )
        return out


def member_state(head: nn.Module, member: int) -> dict[str, Tensor]:
    """Member ``member`` of a packed head as the state_dict of a one-member head: CPU
    copies with the member axis kept at size 1 (what ``restore_head`` loads)."""
    return {
        k: v.detach().narrow(member_axis(v), member, 1).cpu().clone()
        for k, v in head.state_dict(keep_vars=True).items()  # keep_vars: the axis tags
    }


def member_axis(tensor: Tensor) -> int:
    """The member (trial) axis of a packed head's parameter or buffer (tagged, else 0)."""
    return getattr(tensor, "member_axis", 0)


class _MemberSnapshot:
    """Copies of every member-carrying tensor; members are saved and restored one slice each."""

    def __init__(self, head: nn.Module) -> None:
        self.live = head.state_dict(keep_vars=True)  # the live tensors, axis tags kept
        self.saved = {k: v.detach().clone() for k, v in self.live.items()}

    @torch.no_grad()
    def save(self, members: list[int]) -> None:
        for k, v in self.live.items():
            ax = member_axis(v)
            for m in members:
                self.saved[k].select(ax, m).copy_(v.select(ax, m))

    @torch.no_grad()
    def restore(self) -> None:
        for k, v in self.live.items():
            v.copy_(self.saved[k])


class PackedAdam:
    """Adam (``torch.optim.Adam`` semantics: L2 weight decay added to the gradient) with
    per-member learning rate and weight decay over the stacked parameters of a packed head.

    Members outside ``alive`` are not updated at all (their slices stay as they are).
    """

    def __init__(self, head: nn.Module, *, lr, weight_decay, device, betas=(0.9, 0.999), eps=1e-8):
        self.params = [p for p in head.parameters() if p.requires_grad]
        self.b1, self.b2 = betas
        self.eps = eps
        self.step_count = torch.zeros(
            (), dtype=torch.float32, device=device
        )  # on device: capturable
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        t = len(lr)
        self.lr = torch.tensor(lr, dtype=torch.float32, device=device)
        self.wd = torch.tensor(weight_decay, dtype=torch.float32, device=device)
        self.alive = torch.ones(t, dtype=torch.bool, device=device)
        self.any_wd = any(w != 0 for w in weight_decay)

    def set_lr(self, lr: Tensor, alive: Tensor) -> None:
        self.lr.copy_(lr)
        self.alive.copy_(alive)

    @staticmethod
    def _view(values: Tensor, p: Tensor) -> Tensor:
        shape = [1] * p.dim()
        shape[member_axis(p)] = -1
        return values.view(shape)

    @torch.no_grad()
    def step(self) -> None:
        """One update; tensor-only (no host sync), so a CUDA graph can capture it."""
        self.step_count += 1
        bc1 = 1 - torch.pow(self.b1, self.step_count)
        bc2_sqrt = (1 - torch.pow(self.b2, self.step_count)).sqrt()
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            grad = p.grad
            if self.any_wd:
                grad = grad + self._view(self.wd, p) * p
            m.lerp_(grad, 1 - self.b1)
            v.mul_(self.b2).addcmul_(grad, grad, value=1 - self.b2)
            denom = (v.sqrt() / bc2_sqrt).add_(self.eps)
            update = (m / denom) * self._view(self.lr / bc1, p)
            keep = self._view(self.alive, p)
            p.sub_(torch.where(keep, update, torch.zeros((), dtype=p.dtype, device=p.device)))


@torch.no_grad()
def evaluate_members(
    head: nn.Module, x: Tensor, y: Tensor, members: int, *, batch_size: int = 256
) -> tuple[Tensor, Tensor]:
    """Per-member mean cross-entropy and accuracy ``(T,)``: every member sees rows ``x`` ``(n, d)``."""
    if len(y) == 0:
        nan = torch.full((members,), math.nan, dtype=torch.float64)
        return nan, nan
    head.eval()
    loss_sum = torch.zeros(members, dtype=torch.float64, device=x.device)
    correct = torch.zeros(members, dtype=torch.long, device=x.device)
    for lo in range(0, len(y), batch_size):
        xb = x[lo : lo + batch_size]
        logits = head(xb[:, None].expand(-1, members, -1))  # (b, T, 2)
        target = y[lo : lo + batch_size, None].expand(-1, members)
        loss_sum += (
            F.cross_entropy(logits.reshape(-1, 2), target.reshape(-1), reduction="none")
            .view(target.shape)
            .sum(0)
            .double()
        )
        correct += (logits.argmax(-1) == target).sum(0)
    return (loss_sum / len(y)).cpu(), (correct.double() / len(y)).cpu()


@torch.no_grad()
def evaluate(
    head: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 256
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of a one-member ``head`` in eval mode. x: (n, d), y: (n,)."""
    loss, acc = evaluate_members(head, x, y, getattr(head, "members", 1), batch_size=batch_size)
    return float(loss[0]), float(acc[0])


def _energy(config: TrialConfig) -> dict[str, float]:
    if not config.is_quantum:
        return {}
    from model.energy import inference_energy

    return {k: float(v) for k, v in inference_energy(config).items()}

"""Which path trains a pack, and why a GPU or CPU optimisation never fails a trial.

    steps = SafeSteps(trainer._step, head, optimizer, config, device, graph=StepGraph(...))
    losses, logits = steps(x, y, full=True)      # every training step of the trial
    steps.engine                                 # "cuda-graph" | "cuda-eager" | "cpu-kernel" | "cpu-torch"

A training step runs on one of four paths (:data:`model.types.ENGINES`): on CUDA the step
captured once as a CUDA graph and replayed (:class:`StepGraph`, ``trial.cuda_graphs``) or
eager; on the CPU the circuits in the compiled kernel (:mod:`model.quantum.cpu_kernel`,
``trial.cpu_kernel``) or in torch ops. The optimised paths can fail where eager torch does
not (a capture that a driver or op does not support, a kernel library that does not load
on this node). :class:`SafeSteps` therefore runs the steps until each optimisation in use
has completed one with a copy of the trial's state (weights, buffers, Adam moments and step,
noise generators) taken before: when the step raises, the copy is put back, the unproven
optimisations are turned off, one warning says so, and the same step runs again in eager
torch. The trial then computes what an eager (graphs off) or torch (kernel off) run
computes. ``cuda_graphs: on`` and ``cpu_kernel: on`` make such a failure the trial's error
instead. A step that fails in eager torch too fails the trial with its own error.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from model.config import TrialConfig
from model.errors import ConfigError
from model.quantum.circuits import CircuitRunner
from model.quantum.rng import MemberRNG

__all__ = ["use_cuda_graphs", "StepGraph", "SafeSteps", "engine_name", "noise_generators"]

Step = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def use_cuda_graphs(config: TrialConfig, device: torch.device) -> bool:
    """``trial.cuda_graphs``: auto (on for CUDA) | on | off. CPU stays eager."""
    if config.cuda_graphs == "on" and device.type != "cuda":
        raise ConfigError(
            f"trial.cuda_graphs = 'on' needs a CUDA device, but the trial runs on {device}; "
            "use auto (graphs on CUDA, eager on CPU) or off."
        )
    return device.type == "cuda" and config.cuda_graphs != "off"


def engine_name(device: torch.device, *, graphed: bool, kernel: bool) -> str:
    """The :data:`model.types.ENGINES` entry of a trial: graphed (a captured graph replayed),
    else eager CUDA, else the CPU kernel (when any circuit ran in it) or torch."""
    if graphed:
        return "cuda-graph"
    if device.type == "cuda":
        return "cuda-eager"
    return "cpu-kernel" if kernel else "cpu-torch"


class StepGraph:
    """A training step captured once as a CUDA graph and replayed with new inputs.

    The first :data:`WARMUP` calls run eagerly on a side stream (they are real steps: they
    create the gradient buffers and Adam state the graph will reuse); the next call
    copies its batch into static input buffers, captures ``step(x, y)`` and replays it.
    Every later call copies the batch in and replays. Random draws inside (shot and gate
    noise) come from per-member generators registered with the graph, so every replay
    advances their seeded streams (graph-safe RNG: reproducible, though the numbers
    differ from an eager run's). ``capture`` is replaceable for tests on a CPU.
    """

    WARMUP = 3

    def __init__(self, step: Step) -> None:
        self.step = step
        self.calls = 0
        self.static: tuple[Tensor, Tensor] | None = None
        self.outputs: tuple[Tensor, Tensor] | None = None
        self.replay: Callable[[], None] | None = None

    @property
    def captured(self) -> bool:
        return self.replay is not None

    def run(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        self.calls += 1
        if self.replay is None and self.calls <= self.WARMUP:
            return self._warmup(x, y)
        if self.replay is None:
            self.static = (x.clone(), y.clone())
            self.replay, self.outputs = self.capture(self.step, self.static)
        else:
            self.static[0].copy_(x)
            self.static[1].copy_(y)
        self.replay()
        return self.outputs[0].clone(), self.outputs[1].clone()

    def _warmup(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if x.device.type != "cuda":
            return self.step(x, y)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = self.step(x, y)
        torch.cuda.current_stream().wait_stream(side)
        return out

    @staticmethod
    def capture(step: Step, static: tuple[Tensor, Tensor]):
        """Capture ``step(*static)``; returns (replay function, static outputs)."""
        graph = torch.cuda.CUDAGraph()
        trainer = getattr(step, "__self__", None)  # a trainer's bound _step: its head's noise
        for gen in noise_generators(getattr(trainer, "head", None)):
            graph.register_generator_state(gen)
        with torch.cuda.graph(graph):
            outputs = step(*static)
        return graph.replay, outputs


def noise_generators(head: nn.Module) -> list[torch.Generator]:
    """The per-member noise generators of a head (shot and gate noise), if it has any."""
    rng = getattr(getattr(head, "pqc", None), "noise_rng", None)
    return list(rng.generators) if isinstance(rng, MemberRNG) else []


class SafeSteps:
    """The training steps of one pack, on the fastest path that works (module docstring).

    ``step(x, y) -> (losses, logits)`` is the eager step (forward, backward, Adam);
    ``graph`` its :class:`StepGraph` when CUDA graphs are on; ``optimizer`` a
    ``model.training.PackedAdam`` (its moments and step count are part of the copy).
    """

    def __init__(
        self,
        step: Step,
        head: nn.Module,
        optimizer,
        config: TrialConfig,
        device: torch.device,
        *,
        graph: StepGraph | None = None,
    ) -> None:
        self.step, self.graph, self.device = step, graph, device
        self.runners = [m for m in head.modules() if isinstance(m, CircuitRunner)]
        # the kernel runs CPU circuits only; on CUDA there is nothing of it to prove
        kernel_on = device.type == "cpu" and any(r.cpu_kernel != "off" for r in self.runners)
        self.unproven = {"graph"} if graph is not None else set()
        if kernel_on:
            self.unproven.add("kernel")
        self.strict = {"graph": config.cuda_graphs == "on", "kernel": config.cpu_kernel == "on"}
        self.tensors = [*head.state_dict(keep_vars=True).values(), *optimizer.m, *optimizer.v,
                        optimizer.step_count]  # fmt: skip
        self.generators = noise_generators(head)
        self.fallback = ""  # what failed, and the error, when the trial fell back

    @property
    def engine(self) -> str:
        graphed = self.graph is not None and self.graph.captured
        kernel = any(getattr(r, "ran_kernel", False) for r in self.runners)
        return engine_name(self.device, graphed=graphed, kernel=kernel)

    def __call__(self, x: Tensor, y: Tensor, *, full: bool) -> tuple[Tensor, Tensor]:
        """One step; ``full``: a full batch (the graph's shape; the last, smaller one is eager)."""
        graphed = self.graph is not None and full
        trying = {"graph"} & self.unproven if graphed else set()
        trying |= {"kernel"} & self.unproven
        if not trying:
            return self.graph.run(x, y) if graphed else self.step(x, y)
        saved = self._save()
        try:
            out = self.graph.run(x, y) if graphed else self.step(x, y)
        except Exception as err:
            if any(self.strict[name] for name in trying):
                raise
            self._restore(saved)
            self._turn_off(trying)
            out = self.step(x, y)  # raises when eager torch fails too: the trial's own error
            self._warn(trying, err)
            return out
        self.unproven.discard("kernel")
        if graphed and self.graph.captured:
            self.unproven.discard("graph")
        return out

    @torch.no_grad()
    def _save(self) -> tuple[list[Tensor], list[Tensor]]:
        return [t.detach().clone() for t in self.tensors], [g.get_state() for g in self.generators]

    @torch.no_grad()
    def _restore(self, saved: tuple[list[Tensor], list[Tensor]]) -> None:
        tensors, states = saved
        for live, copy in zip(self.tensors, tensors, strict=True):
            live.copy_(copy)
        for gen, state in zip(self.generators, states, strict=True):
            gen.set_state(state)

    def _turn_off(self, failed: set[str]) -> None:
        if "graph" in failed:
            self.graph = None
        if "kernel" in failed:
            for runner in self.runners:
                runner.cpu_kernel = "off"
                runner.ran_kernel = False
        self.unproven -= failed

    def _warn(self, failed: set[str], err: Exception) -> None:
        names = [("CUDA-graph capture", "cuda_graphs", "graph"),
                 ("the CPU circuit kernel", "cpu_kernel", "kernel")]  # fmt: skip
        what = " or ".join(text for text, _, name in names if name in failed)
        keys = " / ".join(key for _, key, name in names if name in failed)
        self.fallback = f"{what}: {type(err).__name__}: {err}"
        warnings.warn(
            f"qsweep: {what} failed at set-up or at its first step ({type(err).__name__}: "
            f"{err}); this trial goes on in eager torch (engine {self.engine}) and computes "
            f"what an eager run computes. Set trial.{keys}: off to skip the attempt, or on "
            "to make it an error.",
            RuntimeWarning,
            stacklevel=3,
        )

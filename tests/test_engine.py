"""The engine a trial trains on, and the fallback to eager torch (model/engine.py), on the CPU.

CUDA-graph capture is emulated (as in test_packing: record nothing, replay = run the step
on the static inputs); the failures are injected where the real ones would surface: the
capture, the first replay, loading the CPU kernel, and its first forward and backward.
Every fallback run must compute exactly what a run without that optimisation computes.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from model import training
from model.config import TrialConfig
from model.engine import engine_name
from model.quantum import circuits, cpu_kernel
from model.training import fit, fit_packed
from model.types import ENGINES, FINAL_TAGS
from tests.test_packing import _data, _emulated_capture

# shot noise and gate noise on the PQC: the fallback must also put the noise streams back
NOISY = dict(head="quantum", qubits=4, shots=100, noise_p1=0.02, reuploads=2, epochs=3,
             batch_size=8, device="cpu")  # fmt: skip
# noise-free gates, shot noise after the circuits: both circuits run in the CPU kernel
EXACT_GATES = dict(NOISY, noise_p1=0.0)

needs_kernel = pytest.mark.skipif(
    not cpu_kernel.available(4), reason=f"no CPU kernel: {cpu_kernel.build_error(4)}"
)


def _configs(base: dict) -> list[TrialConfig]:
    cfg = TrialConfig(**base)
    return [cfg, cfg.replace(seed=1, learning_rate=0.02)]


def _same(a, b) -> None:
    """Two runs of a trial computed the same numbers (history, best epoch, test, weights)."""

    def numbers(result):  # every epoch's losses and accuracies (not its clock)
        return [{k: v for k, v in h.items() if k != "elapsed_s"} for h in result.history]

    assert numbers(a) == numbers(b)  # exact
    assert (a.best_epoch, a.val_accuracy, a.test_accuracy) == (
        b.best_epoch, b.val_accuracy, b.test_accuracy
    )  # fmt: skip
    assert a.state.keys() == b.state.keys()
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)


def _fallbacks(record) -> list[str]:
    return [str(w.message) for w in record if "goes on in eager torch" in str(w.message)]


def test_engine_names_and_the_result_fields():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert engine_name(cuda, graphed=True, kernel=False) == "cuda-graph"
    assert engine_name(cuda, graphed=False, kernel=False) == "cuda-eager"
    assert engine_name(cpu, graphed=False, kernel=True) == "cpu-kernel"
    assert engine_name(cpu, graphed=False, kernel=False) == "cpu-torch"
    assert set(ENGINES) == {"cuda-graph", "cuda-eager", "cpu-kernel", "cpu-torch"}
    data = _data()
    mlp = fit(TrialConfig(head="mlp", hidden=4, epochs=1, device="cpu"), data)
    assert mlp.engine == "cpu-torch" and mlp.summary()["engine"] == "cpu-torch"
    torch_path = fit(TrialConfig(**dict(EXACT_GATES, epochs=1, cpu_kernel="off")), data)
    assert torch_path.engine == "cpu-torch"
    logreg = fit(TrialConfig(head="logreg"), data)
    assert logreg.engine is None and set(FINAL_TAGS) <= set(logreg.summary())


@needs_kernel
def test_cpu_kernel_trials_say_so():
    result = fit(TrialConfig(**dict(EXACT_GATES, epochs=1)), _data())
    assert result.engine == "cpu-kernel" and "engine_fallback" not in result.extra


@pytest.mark.parametrize("where", ["capture", "first replay"])
def test_graph_failure_falls_back_to_the_eager_results(monkeypatch, where):
    """The emulated capture (or its first replay) runs the whole step -- weights, Adam and the
    noise streams move on -- and then raises: the trial restores its state, warns once, goes
    on eager and ends with the eager run's numbers."""
    data = _data(n_train=37)  # batches of 8: 4 full (graphed), 1 of 5 (eager)
    configs = _configs(NOISY)
    eager = fit_packed(configs, data)
    calls = []

    def failing_capture(step, static):
        calls.append(where)
        if where == "capture":
            step(*static)
            raise RuntimeError("emulated: operation not permitted when stream is capturing")
        replay, outputs = _emulated_capture(step, static)

        def failing_replay():
            replay()
            raise RuntimeError("emulated: replay failed")

        return failing_replay, outputs

    monkeypatch.setattr(training, "use_cuda_graphs", lambda config, device: True)
    monkeypatch.setattr(training.StepGraph, "capture", staticmethod(failing_capture))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fallen = fit_packed(configs, data)
    assert calls == [where]  # tried once, then eager for good
    (message,) = _fallbacks(record)  # one warning for the pack
    assert "CUDA-graph capture failed" in message and "emulated" in message
    for a, b in zip(eager, fallen, strict=True):
        _same(a, b)
        assert b.engine == a.engine  # the CPU's engine, not cuda-graph
        assert b.extra["engine_fallback"].startswith("CUDA-graph capture: RuntimeError")


def test_a_graph_that_works_is_the_engine(monkeypatch):
    monkeypatch.setattr(training, "use_cuda_graphs", lambda config, device: True)
    monkeypatch.setattr(training.StepGraph, "capture", staticmethod(_emulated_capture))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        (result,) = fit_packed(_configs(NOISY)[:1], _data(n_train=37))
    assert result.engine == "cuda-graph" and not _fallbacks(record)


def test_cuda_graphs_on_keeps_a_capture_failure_an_error(monkeypatch):
    def failing_capture(step, static):
        raise RuntimeError("emulated capture failure")

    monkeypatch.setattr(training, "use_cuda_graphs", lambda config, device: True)
    monkeypatch.setattr(training.StepGraph, "capture", staticmethod(failing_capture))
    cfg = TrialConfig(**dict(NOISY, cuda_graphs="on"))
    with pytest.raises(RuntimeError, match="emulated capture failure"):
        fit(cfg, _data(n_train=37))


class _FailingBackward(torch.autograd.Function):
    """Identity forward; the backward raises (a kernel that fails in its adjoint pass)."""

    @staticmethod
    def forward(ctx, out):
        return out.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("emulated: the CPU circuit kernel failed (code 1: out of memory)")


def _break_kernel(monkeypatch, where: str) -> None:
    if where == "set-up":  # the library does not build or load on this node

        def available(n=10):
            raise OSError("emulated: qsweep_kernel_4q.so: cannot open shared object file")

        monkeypatch.setattr(cpu_kernel, "available", available)
    elif where == "forward":

        def run_layers(*args, **kw):
            raise RuntimeError("emulated: the CPU circuit kernel failed (code 2)")

        monkeypatch.setattr(cpu_kernel, "run_layers", run_layers)
    else:  # the forward runs (shot noise is drawn after it), the backward raises
        real = cpu_kernel.run_layers

        def run_layers(*args, **kw):
            return tuple(
                None if t is None else _FailingBackward.apply(t) for t in real(*args, **kw)
            )

        monkeypatch.setattr(cpu_kernel, "run_layers", run_layers)


@needs_kernel
@pytest.mark.parametrize("where", ["set-up", "forward", "backward"])
def test_kernel_failure_falls_back_to_the_torch_results(monkeypatch, where):
    data = _data(n_train=37)
    configs = _configs(EXACT_GATES)
    on_torch = fit_packed([c.replace(cpu_kernel="off") for c in configs], data)
    _break_kernel(monkeypatch, where)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fallen = fit_packed(configs, data)
    (message,) = _fallbacks(record)
    assert "the CPU circuit kernel failed" in message and "emulated" in message
    for a, b in zip(on_torch, fallen, strict=True):
        _same(a, b)
        assert b.engine == "cpu-torch"
        assert b.extra["engine_fallback"].startswith("the CPU circuit kernel: ")


@needs_kernel
def test_cpu_kernel_on_keeps_a_kernel_failure_an_error(monkeypatch):
    _break_kernel(monkeypatch, "forward")
    with pytest.raises(RuntimeError, match="emulated: the CPU circuit kernel failed"):
        fit(TrialConfig(**dict(EXACT_GATES, cpu_kernel="on")), _data())


@needs_kernel
def test_a_step_that_fails_in_torch_too_fails_the_trial(monkeypatch):
    """The fallback does not hide errors of the trial itself: no warning, the torch error."""
    _break_kernel(monkeypatch, "forward")

    def run_steps(*args, **kw):
        raise ValueError("emulated: a bug in the torch path")

    monkeypatch.setattr(circuits, "run_steps", run_steps)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="a bug in the torch path"):
            fit(TrialConfig(**EXACT_GATES), _data())
    assert not _fallbacks(record)


def test_engine_column_and_mlflow_tag(tmp_path):
    """The engine reaches trials.parquet (a column derived from model.types.FINAL_TAGS)
    and the trial's MLflow run (tag qsweep.engine), and reads back from both."""
    import pyarrow.parquet as pq

    from orchestrator.results import RESULT_COLUMNS, ResultsTable, read_trials, trial_row, utc_now
    from orchestrator.tracking import TrialLogger, default_tracking_uri, load_trial_runs

    assert "engine" in RESULT_COLUMNS
    config = TrialConfig(qubits=4).to_dict()
    last = {"val_accuracy": 0.7, "test_accuracy": 0.6, "device": "cpu", "engine": "cpu-kernel"}
    row = trial_row(config, trial_id="p000_s0", point_id="p000", seed=0, status="completed",
                    started_at=utc_now(), last=last)  # fmt: skip
    table = ResultsTable(tmp_path / "trials.parquet", study="s")
    table.add(row)
    table.compact()  # folds the journal into trials.parquet
    assert pq.read_table(table.path).to_pylist()[0]["engine"] == "cpu-kernel"
    assert read_trials(tmp_path)["engine"].tolist() == ["cpu-kernel"]

    # a trial logged call by call, and one written in bulk (short trials, tracking/bulk.py)
    uri = default_tracking_uri(tmp_path)
    logger = TrialLogger(uri, "s")
    api_id = logger.start("p000_s0", point_id="p000", seed=0, params=config)
    logger.finish("p000_s0", row)
    assert logger.can_bulk()
    (bulk_id,) = logger.write_finished([logger.finished_run({**row, "trial_id": "p001_s0"})])
    runs = load_trial_runs(uri, "s").set_index("trial_id")
    assert runs.loc["p000_s0", "engine"] == runs.loc["p001_s0", "engine"] == "cpu-kernel"

    def tags(run_id):  # the final tags, written both ways
        got = logger.client.get_run(run_id).data.tags
        return {k: got[k] for k in ("qsweep.engine", "qsweep.device", "qsweep.status")}

    assert tags(bulk_id) == tags(api_id) == {
        "qsweep.engine": "cpu-kernel", "qsweep.device": "cpu", "qsweep.status": "completed"
    }  # fmt: skip

"""GPU checks (CUDA only): packed trials, CUDA graphs and adjoint gradients on the device.

CI has no GPU: these tests are marked ``gpu`` and skip with that reason on a CPU-only
machine. On the device machine they run with the model code alone (no Ray, MLflow or
Optuna), before ``model.benchmark_gpu``, in one call: ``bash tests/gpu_check.sh``
(docs/development.md, "The GPU check").
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.config import TrialConfig
from model.training import fit, fit_packed
from model.types import EmbeddedSplits

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _data(d=16, n_train=45, n_val=20, n_test=30) -> EmbeddedSplits:
    rng = np.random.default_rng(0)
    w = rng.normal(size=d)

    def split(n):
        x = rng.normal(size=(n, d)).astype(np.float32)
        return x, (x @ w > 0).astype(np.int64)

    return EmbeddedSplits(*split(n_train), *split(n_val), *split(n_test), encoder="synthetic")


BASE = dict(head="quantum", qubits=5, encoder_layers=2, reuploads=2, epochs=3, batch_size=8)


def _losses(result) -> list[float]:
    return [h["train_loss"] for h in result.history]


@pytest.mark.parametrize("extra", [{}, {"gradient": "adjoint"}, {"rotation": "ry"}])
def test_cuda_matches_cpu_without_noise(extra):
    """The same trial on the GPU (CUDA graphs on, the last smaller batch eager) and on the
    CPU: same per-epoch losses to float32 rounding, same best epoch."""
    data = _data()
    cpu = fit(TrialConfig(**BASE, **extra, device="cpu"), data)
    gpu = fit(TrialConfig(**BASE, **extra, device="cuda", cuda_graphs="on"), data)
    np.testing.assert_allclose(_losses(gpu), _losses(cpu), atol=1e-4, rtol=0)
    assert gpu.best_epoch == cpu.best_epoch and gpu.device.startswith("cuda")


def test_graphs_equal_eager_and_packs_equal_separate_fits_on_cuda():
    data = _data()
    configs = [
        TrialConfig(**BASE, device="cuda", seed=s, learning_rate=lr)
        for s, lr in ((0, 0.01), (1, 0.02), (2, 0.005))
    ]
    graphed = fit_packed([c.replace(cuda_graphs="on") for c in configs], data)
    eager = fit_packed([c.replace(cuda_graphs="off") for c in configs], data)
    for a, b, cfg in zip(graphed, eager, configs, strict=True):
        np.testing.assert_allclose(_losses(a), _losses(b), atol=1e-5, rtol=0)
        alone = fit(cfg.replace(cuda_graphs="off"), data)
        np.testing.assert_allclose(_losses(b), _losses(alone), atol=1e-5, rtol=0)


def test_graphed_shot_and_gate_noise_are_seeded():
    """Noise drawn inside a replayed graph: the same seeds give the same run, other seeds
    another; the losses stay finite."""
    data = _data()
    cfg = TrialConfig(**BASE, shots=256, noise_p1=0.01, noise_p2=0.02, device="cuda",
                      cuda_graphs="on")  # fmt: skip
    a, b = fit_packed([cfg, cfg.replace(seed=1)], data)
    a2, _ = fit_packed([cfg, cfg.replace(seed=1)], data)
    assert _losses(a) == _losses(a2)
    assert _losses(a) != _losses(b)
    assert all(np.isfinite(_losses(a)))


def test_adjoint_matches_autograd_at_16_qubits_on_cuda():
    from model.heads.quantum import QuantumHead

    torch.manual_seed(0)
    x = torch.randn(4, 768, device="cuda")
    grads = {}
    for gradient in ("autograd", "adjoint"):
        cfg = TrialConfig(qubits=16, gradient=gradient, seed=0)
        head = QuantumHead(cfg, 768, adjoint=gradient == "adjoint").cuda()
        head(x).square().sum().backward()
        grads[gradient] = torch.cat([p.grad.flatten() for p in head.parameters()])
    np.testing.assert_allclose(
        grads["adjoint"].cpu().numpy(), grads["autograd"].cpu().numpy(), atol=1e-4, rtol=1e-3
    )


def test_engine_is_recorded_on_cuda():
    data = _data()
    cfg = TrialConfig(**BASE, device="cuda")
    assert fit(cfg, data).engine == "cuda-graph"  # auto: graphs on CUDA
    assert fit(cfg.replace(cuda_graphs="off"), data).engine == "cuda-eager"


def test_a_capture_that_cuda_refuses_trains_eager(monkeypatch):
    """A host sync inside the captured step is what CUDA refuses to capture ("operation not
    permitted when stream is capturing"): the trial warns, goes on eager and ends with the
    eager run's losses. Last in this file, in case the failed capture upsets the context."""
    import warnings

    from model import training

    data = _data()
    cfg = TrialConfig(**BASE, device="cuda")
    eager = fit(cfg.replace(cuda_graphs="off"), data)
    real = training.StepGraph.capture

    def capture_with_a_sync(step, static):
        def syncing(x, y):
            losses, logits = step(x, y)
            float(losses.sum())  # a host sync: not capturable
            return losses, logits

        return real(syncing, static)

    monkeypatch.setattr(training.StepGraph, "capture", staticmethod(capture_with_a_sync))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fallen = fit(cfg, data)
    assert [w for w in record if "goes on in eager torch" in str(w.message)]
    assert fallen.engine == "cuda-eager" and "CUDA-graph capture" in fallen.extra["engine_fallback"]
    np.testing.assert_allclose(_losses(fallen), _losses(eager), atol=1e-5, rtol=0)
    assert fallen.best_epoch == eager.best_epoch

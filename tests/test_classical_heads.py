"""MLP heads, the head factory and the scikit-learn baselines on synthetic data."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from model.config import TrialConfig
from model.errors import ConfigError, DataError
from model.heads.baselines import C_GRID, GAMMA_GRID, fit_baseline
from model.heads.classical import MLPHead, mlp_param_count
from model.heads.factory import build_head
from model.types import EmbeddedSplits


def _closed_form(d: int, h: int, bn: bool) -> int:
    if h == 0:
        return d * 2 + 2
    return d * h + h + (2 * h if bn else 0) + 2 * h + 2


@pytest.mark.parametrize("hidden", [0, 48, 96, 144, 192])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_mlp_shapes_and_parameter_count(hidden, batch_norm):
    d = 768
    head = MLPHead(TrialConfig(head="mlp", hidden=hidden, batch_norm=batch_norm), d)
    head.train()
    assert head(torch.randn(5, d)).shape == (5, 2)
    head.eval()
    assert head(torch.randn(1, d)).shape == (1, 2)
    n = sum(p.numel() for p in head.parameters() if p.requires_grad)
    assert n == _closed_form(d, hidden, batch_norm)
    assert mlp_param_count(d, hidden, batch_norm) == n


def test_mlp_structure_order():
    head = MLPHead(TrialConfig(head="mlp", hidden=8, batch_norm=True), 4)
    kinds = [type(m).__name__ for m in head.net]
    assert kinds == ["PackedLinear", "PackedBatchNorm", "ReLU", "PackedLinear"]
    assert [type(m).__name__ for m in MLPHead(TrialConfig(head="mlp", hidden=8), 4).net] == [
        "PackedLinear",
        "ReLU",
        "PackedLinear",
    ]


def test_mlp_rejects_bad_input_dim():
    with pytest.raises(ConfigError, match="input_dim = 0"):
        MLPHead(TrialConfig(head="mlp"), 0)


def _separable(gen: torch.Generator, n: int, w: torch.Tensor, margin: float = 0.3):
    """Gaussian points with |x . w| >= margin (|w| = 1), labelled by the side of the plane."""
    x = torch.randn(3 * n, len(w), generator=gen)
    x = x[(x @ w).abs() >= margin][:n]
    return x, (x @ w > 0).long()


@pytest.mark.parametrize("hidden,batch_norm", [(0, False), (48, True)])
def test_mlp_learns_linearly_separable_problem(hidden, batch_norm):
    gen = torch.Generator().manual_seed(0)
    d = 16
    w = torch.randn(d, generator=gen)
    w = w / w.norm()
    x, y = _separable(gen, 400, w)
    torch.manual_seed(0)
    head = MLPHead(TrialConfig(head="mlp", hidden=hidden, batch_norm=batch_norm), d)
    opt = torch.optim.Adam(head.parameters(), lr=2e-2)
    for _ in range(150):  # full batch
        loss = torch.nn.functional.cross_entropy(head(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    x_new, y_new = _separable(gen, 1000, w)
    with torch.no_grad():
        acc = (head(x_new).argmax(1) == y_new).float().mean().item()
    assert acc > 0.95


def test_build_head_dispatch(monkeypatch):
    assert isinstance(build_head(TrialConfig(head="mlp", hidden=4), 10), MLPHead)

    class FakeQuantumHead(torch.nn.Module):
        def __init__(self, config, input_dim):
            super().__init__()
            self.config, self.input_dim = config, input_dim

    fake = types.ModuleType("model.heads.quantum")
    fake.QuantumHead = FakeQuantumHead
    monkeypatch.setitem(sys.modules, "model.heads.quantum", fake)
    for head in ("quantum", "mlp_encoder"):
        built = build_head(TrialConfig(head=head), 12)
        assert isinstance(built, FakeQuantumHead)
        assert built.config.head == head and built.input_dim == 12
    for head in ("logreg", "svc"):
        with pytest.raises(ConfigError, match="baselines"):
            build_head(TrialConfig(head=head), 12)


# ----------------------------------------------------------------------------- baselines
def _two_gaussians(seed=0, d=20, n_train=200, n_val=60, n_test=400, shift=0.8) -> EmbeddedSplits:
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=d)
    mean *= shift / np.linalg.norm(mean) * 2  # the class means are 2*shift*... apart

    def draw(n):
        y = rng.integers(0, 2, size=n)
        x = rng.normal(size=(n, d)) + np.where(y[:, None] == 1, mean, -mean)
        return x.astype(np.float32), y.astype(np.int64)

    (xtr, ytr), (xva, yva), (xte, yte) = draw(n_train), draw(n_val), draw(n_test)
    return EmbeddedSplits(xtr, ytr, xva, yva, xte, yte, encoder="synthetic")


def _pipeline_val_and_test(model, data):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = make_pipeline(StandardScaler(), model).fit(data.x_train, data.y_train)
    val = float((pipe.predict(data.x_val) == data.y_val).mean())
    test = float((pipe.predict(data.x_test) == data.y_test).mean())
    return pipe, val, test


def test_logreg_baseline_selects_on_validation():
    from sklearn.linear_model import LogisticRegression

    data = _two_gaussians()
    result = fit_baseline(TrialConfig(head="logreg"), data)
    assert result.test_accuracy > 0.9
    assert result.extra["C"] in C_GRID
    assert result.n_params == data.dim + 1
    # independent reference: a Pipeline per grid point, first best validation accuracy wins
    scores = [_pipeline_val_and_test(LogisticRegression(C=c, max_iter=5000), data) for c in C_GRID]
    vals = [s[1] for s in scores]
    best = int(np.argmax(vals))
    assert result.val_accuracy == pytest.approx(max(vals))
    assert result.extra["C"] == C_GRID[best]
    assert result.test_accuracy == pytest.approx(scores[best][2])
    assert result.epochs_run == 0 and result.best_epoch == 0 and result.history == []
    assert result.device == "cpu" and result.wall_time_s > 0
    assert result.config["head"] == "logreg" and result.energy == {}


def test_svc_baseline_fields_and_support_vector_count():
    from sklearn.svm import SVC

    data = _two_gaussians(seed=1)
    result = fit_baseline(TrialConfig(head="svc"), data)
    assert result.test_accuracy > 0.9
    assert result.extra["C"] in C_GRID
    assert result.extra["gamma"] in [str(g) for g in GAMMA_GRID]
    assert result.extra["grid_size"] == len(C_GRID) * len(GAMMA_GRID)
    gamma = result.extra["gamma"]
    gamma = gamma if gamma == "scale" else float(gamma)
    pipe, val, test = _pipeline_val_and_test(SVC(C=result.extra["C"], gamma=gamma), data)
    n_sv = pipe[-1].support_vectors_.shape[0]
    assert result.extra["n_support"] == n_sv
    assert result.n_params == n_sv * (data.dim + 1) + 1
    assert result.val_accuracy == pytest.approx(val)
    assert result.test_accuracy == pytest.approx(test)
    assert 0 <= result.val_accuracy <= 1 and result.epochs_run == 0 and result.device == "cpu"


def test_baseline_errors():
    data = _two_gaussians(n_train=40, n_val=10, n_test=10)
    with pytest.raises(ConfigError, match="'mlp'"):
        fit_baseline(TrialConfig(head="mlp"), data)
    empty_val = EmbeddedSplits(
        data.x_train, data.y_train, data.x_val[:0], data.y_val[:0], data.x_test, data.y_test
    )
    with pytest.raises(DataError, match="val split is empty"):
        fit_baseline(TrialConfig(head="logreg"), empty_val)
    one_class = EmbeddedSplits(
        data.x_train, np.zeros_like(data.y_train), data.x_val, data.y_val, data.x_test, data.y_test
    )
    with pytest.raises(DataError, match="only label"):
        fit_baseline(TrialConfig(head="svc"), one_class)

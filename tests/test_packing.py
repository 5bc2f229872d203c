"""Trial packing: T trials as one model give what T separate fits give."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.config import TrialConfig
from model.errors import ConfigError
from model.training import fit, fit_packed, pack_key
from model.types import EmbeddedSplits


def _data(d=12, n_train=40, n_val=20, n_test=30, seed=0) -> EmbeddedSplits:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d)

    def split(n):
        x = rng.normal(size=(n, d)).astype(np.float32)
        return x, (x @ w > 0).astype(np.int64)

    (xa, ya), (xb, yb), (xc, yc) = split(n_train), split(n_val), split(n_test)
    return EmbeddedSplits(xa, ya, xb, yb, xc, yc, encoder="synthetic")


VARIANTS = [
    [dict(seed=0), dict(seed=1, learning_rate=0.02), dict(seed=2, lr_decay=0.9),
     dict(seed=3, weight_decay=0.01)],
]  # fmt: skip


@pytest.mark.parametrize(
    "base",
    [
        dict(head="quantum", qubits=4, encoders=1, encoder_layers=2, reuploads=2, main_layers=1),
        dict(head="quantum", qubits=3, shots=64, noise_p1=0.01, noise_p2=0.02, reuploads=2,
             encoders=2, encoder_combine="linear"),
        dict(head="quantum", qubits=4, rotation="ry", final_linear=False, gradient="adjoint"),
        dict(head="mlp_encoder", qubits=3, hidden=5, reuploads=2),
        dict(head="quantum", qubits=4, encoder_layers=2, reuploads=2, amplitude_offset=0.5,
             amplitude_offset_trainable=True, sqe_readout="zz", encoders=2),
        dict(head="mlp", hidden=6, batch_norm=True),
        dict(head="mlp", hidden=0),
    ],
)  # fmt: skip
def test_packed_equals_separate_fits(base):
    data = _data()
    common = dict(epochs=4, batch_size=8, learning_rate=0.01, device="cpu", **base)
    configs = [TrialConfig(**{**common, **v}) for v in VARIANTS[0]]
    packed = fit_packed(configs, data)
    for cfg, got in zip(configs, packed, strict=True):
        alone = fit(cfg, data)
        want_losses = [h["train_loss"] for h in alone.history]
        got_losses = [h["train_loss"] for h in got.history]
        np.testing.assert_allclose(got_losses, want_losses, atol=1e-5, rtol=0)
        if base.get("batch_norm"):
            # The bias of the layer before batch norm has a zero gradient in exact arithmetic;
            # Adam scales its rounding noise (1e-9, kernel-dependent) up to lr-sized steps,
            # which the running mean (used in eval mode only) follows. Training losses agree.
            continue
        np.testing.assert_allclose(
            [h["val_loss"] for h in got.history], [h["val_loss"] for h in alone.history], atol=1e-5
        )
        assert got.best_epoch == alone.best_epoch
        assert got.val_accuracy == alone.val_accuracy
        assert got.test_accuracy == alone.test_accuracy
        assert got.n_params == alone.n_params
        assert got.extra["pack_size"] == 4


def test_members_differ_and_seed_reproduces():
    data = _data()
    cfg = TrialConfig(head="quantum", qubits=4, epochs=2, batch_size=8, device="cpu")
    a, b = fit_packed([cfg.replace(seed=0), cfg.replace(seed=1)], data)
    assert a.history[0]["train_loss"] != b.history[0]["train_loss"]
    again = fit(cfg.replace(seed=1), data)
    assert again.history[-1]["train_loss"] == pytest.approx(b.history[-1]["train_loss"], abs=1e-5)


def test_pack_refuses_configs_that_differ_in_architecture():
    data = _data()
    cfg = TrialConfig(head="mlp", epochs=1, device="cpu")
    with pytest.raises(ConfigError, match="differ only in seed.*hidden"):
        fit_packed([cfg, cfg.replace(hidden=4)], data)
    assert pack_key(cfg) == pack_key(cfg.replace(seed=5, learning_rate=0.5))
    assert pack_key(cfg) != pack_key(cfg.replace(batch_size=3))


def test_pack_key_is_every_non_packable_field_of_the_config():
    from model.packing import PACKABLE_KEYS

    cfg = TrialConfig(head="quantum", qubits=12, encoders=2, shots=64, learning_rate=0.01, seed=3)
    reference = sorted((k, v) for k, v in cfg.to_dict().items() if k not in PACKABLE_KEYS)
    assert list(pack_key(cfg)) == reference
    assert {"seed", "learning_rate"} <= set(PACKABLE_KEYS)


def test_a_diverging_member_fails_alone():
    data = _data()
    cfg = TrialConfig(head="mlp", hidden=4, epochs=3, batch_size=8, device="cpu")
    bad = cfg.replace(seed=1, learning_rate=1e38)  # overflows to inf/NaN at once
    good, failed = fit_packed([cfg, bad], data)
    alone = fit(cfg, data)
    assert isinstance(failed, FloatingPointError) and "not finite" in str(failed)
    assert [h["train_loss"] for h in good.history] == pytest.approx(
        [h["train_loss"] for h in alone.history], abs=1e-5
    )
    assert math.isfinite(good.test_accuracy)


def test_stopping_one_member_keeps_the_others_running():
    data = _data()
    cfg = TrialConfig(head="mlp", hidden=4, epochs=5, batch_size=8, device="cpu")
    seen = []

    def on_epoch(by_member):
        seen.extend((member, metrics["epoch"]) for member, metrics in by_member.items())
        return [0] if by_member.get(0, {}).get("epoch") == 2 else None

    a, b = fit_packed([cfg, cfg.replace(seed=3)], data, on_epoch=on_epoch)
    assert a.epochs_run == 2 and len(a.history) == 2
    assert b.epochs_run == 5 and len(b.history) == 5
    assert (0, 3) not in seen and (1, 5) in seen
    assert 1 <= a.best_epoch <= 2


def _emulated_capture(step, static):
    """A CPU stand-in for CUDA graph capture: record nothing, replay = run on the static inputs."""
    x, y = static
    outputs = (torch.empty(y.shape[1]), torch.empty(*y.shape, 2))

    def replay():
        losses, logits = step(x, y)
        outputs[0].copy_(losses)
        outputs[1].copy_(logits)

    return replay, outputs


def test_graph_step_bookkeeping_matches_eager(monkeypatch):
    """Static input buffers, warm-up, the eager last batch and capturable Adam give the
    eager results (the capture itself needs CUDA; here it is emulated)."""
    from model import training

    data = _data(n_train=37)  # batches of 8: 4 full (captured), 1 of 5 (eager)
    cfg = TrialConfig(head="quantum", qubits=4, shots=100, noise_p1=0.02, reuploads=2,
                      epochs=3, batch_size=8, device="cpu")  # fmt: skip
    configs = [cfg, cfg.replace(seed=1, learning_rate=0.02)]
    eager = fit_packed(configs, data)
    calls = []

    def capture(step, static):
        calls.append(static[0].shape)
        return _emulated_capture(step, static)

    monkeypatch.setattr(training, "use_cuda_graphs", lambda config, device: True)
    monkeypatch.setattr(training.StepGraph, "capture", staticmethod(capture))
    graphed = fit_packed(configs, data)
    assert calls == [(8, 2, 12)]  # captured once, for the full-batch shape
    for a, b in zip(eager, graphed, strict=True):
        assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
        assert (a.best_epoch, a.val_accuracy, a.test_accuracy) == (
            b.best_epoch, b.val_accuracy, b.test_accuracy
        )  # fmt: skip


def test_cuda_graphs_on_without_cuda_is_a_config_error():
    cfg = TrialConfig(head="mlp", epochs=1, device="cpu", cuda_graphs="on")
    with pytest.raises(ConfigError, match="cuda_graphs = 'on' needs a CUDA device"):
        fit(cfg, _data())


def test_sklearn_configs_are_fitted_one_by_one():
    data = _data()
    configs = [TrialConfig(head="logreg", seed=s) for s in (0, 1)]
    results = fit_packed(configs, data)
    assert [r.config["seed"] for r in results] == [0, 1]
    assert results[0].val_accuracy == fit(configs[0], data).val_accuracy


@pytest.mark.slow
def test_trials_benchmark_kernel_both_and_parallel_smoke(capsys):
    """model.benchmark_trials runs its kernel comparison and its parallel packs end to end
    (tiny sizes; the figures themselves go in the README, not in asserts)."""
    from model import benchmark_trials

    args = ["--epochs", "2", "--threads", "1", "--pack", "1"]
    benchmark_trials.main([*args, "--kernel", "both"])
    benchmark_trials.main([*args, "--kernel", "off", "--parallel", "2"])
    out = capsys.readouterr().out
    assert "T=  1: kernel on is" in out and "x kernel off" in out
    assert "10 qubits circuit" in out and "10 qubits head" in out  # the step per thread count
    assert out.count("min per trial") == 3 and "2 pack(s) at once" in out

"""scikit-learn baselines of the paper's tables: logistic regression and an RBF SVC.

    result = fit_baseline(TrialConfig(head="svc"), embedded)   # -> TrialResult

Protocol (the same low-data protocol as the trainable heads): features are standardised
with a StandardScaler fitted on the training split only; every grid point is fitted on
the training split and scored on the validation split (no cross-validation); the best
validation accuracy wins, ties going to the earlier grid point (smaller C, then the
gamma order below); the test accuracy is that model's. Grids::

    logreg: C in (0.01, 0.1, 1, 10, 100)                                  5 fits
    svc:    C in (0.01, 0.1, 1, 10, 100) x gamma in ("scale", 0.001, 0.01, 0.1, 1)  25 fits

``n_params`` counts what the fitted classifier stores to predict: logistic regression
d weights + 1 intercept; the SVC n_SV support vectors of d values, n_SV dual
coefficients and 1 intercept, n_SV * (d + 1) + 1. The scaler's 2d statistics are not
counted (data statistics, not trained weights).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from model.config import TrialConfig
from model.errors import ConfigError, DataError
from model.types import EmbeddedSplits, TrialResult

__all__ = ["fit_baseline", "C_GRID", "GAMMA_GRID", "baseline_grid"]

C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
GAMMA_GRID: tuple[str | float, ...] = ("scale", 0.001, 0.01, 0.1, 1.0)
_MAX_ITER = 5000


def baseline_grid(head: str) -> list[dict[str, Any]]:
    """Hyperparameter points tried for ``head`` in order (the tie-break order)."""
    if head == "logreg":
        return [{"C": c} for c in C_GRID]
    if head == "svc":
        return [{"C": c, "gamma": g} for c in C_GRID for g in GAMMA_GRID]
    raise ConfigError(
        f"trial.head = {head!r} is not a scikit-learn baseline; allowed: logreg, svc."
    )


def fit_baseline(config: TrialConfig, data: EmbeddedSplits) -> TrialResult:
    """Grid-search ``config.head`` on the validation split; test accuracy of the chosen model."""
    from sklearn.preprocessing import StandardScaler

    grid = baseline_grid(config.head)
    _check(data)
    start = time.perf_counter()
    scaler = StandardScaler().fit(data.x_train)
    x_train, x_val, x_test = (scaler.transform(x) for x in (data.x_train, data.x_val, data.x_test))

    best_val, best_point, best_model = -1.0, grid[0], None
    for point in grid:
        model = _make(config, point).fit(x_train, data.y_train)
        val_acc = float(np.mean(model.predict(x_val) == data.y_val))
        if val_acc > best_val:
            best_val, best_point, best_model = val_acc, point, model
    assert best_model is not None  # the grid is never empty

    test_acc = (
        float(np.mean(best_model.predict(x_test) == data.y_test))
        if len(data.y_test)
        else float("nan")
    )
    d = data.dim
    extra: dict[str, Any] = {
        "C": float(best_point["C"]),
        "grid_size": len(grid),
        "standardize": True,
    }
    if config.head == "svc":
        n_support = int(best_model.support_vectors_.shape[0])
        n_params = n_support * (d + 1) + 1
        extra["gamma"] = str(best_point["gamma"])
        extra["n_support"] = n_support
    else:
        n_params = d + 1
    return TrialResult(
        val_accuracy=best_val,
        test_accuracy=test_acc,
        best_epoch=0,
        epochs_run=0,
        n_params=n_params,
        wall_time_s=time.perf_counter() - start,
        device="cpu",
        config=config.to_dict(),
        extra=extra,
        state=_pipeline(scaler, best_model),
    )


def _pipeline(scaler, model):
    """The fitted scaler + classifier as one sklearn Pipeline (what a logged model predicts with)."""
    from sklearn.pipeline import Pipeline

    return Pipeline([("scale", scaler), ("classify", model)])


def _make(config: TrialConfig, point: dict[str, Any]):
    if config.head == "logreg":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=point["C"], max_iter=_MAX_ITER, random_state=config.seed)
    from sklearn.svm import SVC

    return SVC(C=point["C"], kernel="rbf", gamma=point["gamma"], random_state=config.seed)


def _check(data: EmbeddedSplits) -> None:
    data.check_trainable()
    labels = np.unique(data.y_train)
    if len(labels) < 2:
        raise DataError(
            f"the training split has only label {labels.tolist()}; a classifier needs both classes."
        )

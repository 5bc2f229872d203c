"""qsweep's orchestration: CLI, study specs, Ray Tune driver, MLflow, Slurm, reports.

Ray code lives in ``tune_driver``, MLflow code in ``tracking``, Slurm code in ``slurm``;
the rest is testable without them.
"""

from __future__ import annotations

__version__ = "0.1.0"

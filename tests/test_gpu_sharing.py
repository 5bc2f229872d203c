"""Trials that share GPUs, without a GPU: ``resources: {gpu: 1/k}`` in the study, the Slurm
job script of ``qsweep slurm submit --gpus-per-node G``, and what a real local Ray gives
each trial when it has logical GPUs (``ray.init(num_gpus=2)``; Ray does not look for
devices behind a logical GPU, it assigns their ids and sets CUDA_VISIBLE_DEVICES)."""

from __future__ import annotations

import io
import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from model.errors import ConfigError
from orchestrator.commands import slurm as slurm_cmd
from orchestrator.slurm import SlurmClient, SlurmOptions, gpu_sharing, render_sbatch
from orchestrator.spec import spec_from_dict, trials_per_gpu
from tests.sweep_fakes import fake_fit, tiny_data
from tests.test_slurm_render import BASE, FakeRunner, _finish, _parse, _start_script

ROOT = Path(__file__).resolve().parents[1]


def _spec(**changes):
    return spec_from_dict({"name": "share", "fixed": {"epochs": 1}, "factors": {}, **changes})


# --- the study ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpu", "stored", "share"),
    [("1/4", 0.25, 4), (0.25, 0.25, 4), ("1/3", 0.3333, 3), (1 / 3, 0.3333, 3), (0.5, 0.5, 2),
     ("1/7", 0.1428, 7), (0, 0.0, 0), (1, 1.0, 1), (2, 2.0, 1)],
)  # fmt: skip
def test_gpu_per_trial_is_zero_whole_gpus_or_one_kth(gpu, stored, share):
    resources = _spec(resources={"cpu": 1, "gpu": gpu}).resources
    assert resources["gpu"] == stored and trials_per_gpu(stored) == share
    assert share * stored <= 1 or stored >= 1  # k of them fit on one GPU (Ray: 0.0001 steps)


@pytest.mark.parametrize("gpu", [0.3, 1.5, -1, "1/0", "2/3", "half", True])
def test_other_gpu_values_are_config_errors(gpu):
    with pytest.raises(ConfigError, match=r"resources\.gpu = .* is not allowed.*1/k"):
        _spec(resources={"gpu": gpu})


def test_auto_packs_of_a_trial_sharing_a_gpu_fit_its_share_of_the_memory():
    from model.config import TrialConfig
    from model.packing import auto_pack_size
    from orchestrator.packing import size_for

    cfg = TrialConfig(qubits=22)  # memory-bound on an 80 GB GPU: 10 members (docs)
    whole = auto_pack_size(cfg, gpu=True, memory_bytes=80 << 30)
    quarter = auto_pack_size(cfg, gpu=True, memory_bytes=80 << 30, share=0.25)
    assert whole == 10 and quarter == 2  # 4 packs on one GPU: each sized for 20 GB
    assert size_for(cfg, 3, gpu=True, share=0.25) == 3  # an explicit size stays


# --- the Slurm job -----------------------------------------------------------------------


def test_sharing_line_counts_gpus_cpus_and_max_concurrent():
    o = SlurmOptions(**BASE, nodes=2, gpus_per_node=4, gpu_per_trial=0.25)
    assert gpu_sharing(o) == (
        "GPU sharing: 4 trials share each GPU (resources.gpu 1/4); up to 16 trials per node, "
        "32 at once"
    )
    assert gpu_sharing(o, 8).endswith(
        "; max_concurrent 8 runs 8 at once (--max-concurrent 32 fills them)"
    )
    shards = SlurmOptions(**BASE, nodes=2, gpus_per_node=4, gpu_per_trial=0.25, array=3)
    assert gpu_sharing(shards).endswith("32 at once in each of the 3 array tasks")
    few_cpus = SlurmOptions(**BASE, gpus_per_node=4, gpu_per_trial=0.25, cpus_per_node=10)
    assert "up to 10 trials per node, 10 at once" in gpu_sharing(few_cpus)
    two = SlurmOptions(**BASE, gpus_per_node=4, gpu_per_trial=2)
    assert "each trial takes 2 GPU(s); up to 2 trials per node" in gpu_sharing(two)
    idle = SlurmOptions(**BASE, gpus_per_node=2)
    assert "asks for no GPU per trial" in gpu_sharing(idle)
    assert gpu_sharing(SlurmOptions(**BASE)) == ""


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"gpu_per_trial": 0.25}, "--gpus-per-node is 0: Ray could never start a trial"),
        ({"gpu_per_trial": 2, "gpus_per_node": 1}, "pass --gpus-per-node 2 or more"),
        ({"cpu_per_trial": 4, "cpus_per_node": 2}, "4 CPUs per trial"),
    ],
)
def test_trials_that_no_node_can_hold_are_config_errors(changes, fragment):
    with pytest.raises(ConfigError, match=fragment):
        SlurmOptions(**{**BASE, **changes})


def test_script_checks_the_step_gpus_and_says_how_they_are_shared():
    script = render_sbatch(SlurmOptions(**BASE, nodes=2, gpus_per_node=2, gpu_per_trial=0.25))
    assert '--num-gpus="$GPUS_PER_NODE"' in script and "GPUS_PER_NODE=2" in script
    assert "#SBATCH --gpus-per-task=2" in script
    assert (
        'srun --nodes="$NUM_NODES" --ntasks="$NUM_NODES" --ntasks-per-node=1 --gpus-per-task=2'
        in script
    )
    assert "log 'GPU sharing: 4 trials share each GPU" in script
    assert "CUDA_VISIBLE_DEVICES" not in render_sbatch(SlurmOptions(**BASE))  # no GPUs: no check


@pytest.mark.parametrize(
    ("visible", "ok", "said"),
    [("0,1", True, "node1: GPUs 0,1"), ("3", False, "sees 1 GPU(s) (CUDA_VISIBLE_DEVICES=3)"),
     ("", False, "sees 0 GPU(s)"), (None, True, "CUDA_VISIBLE_DEVICES is not set")],
)  # fmt: skip
def test_script_runs_with_the_gpus_slurm_binds(tmp_path, visible, ok, said):
    """The job script with fake srun/ray/qsweep: the GPU list of the job step is checked
    against --gpus-per-node before Ray starts; Ray gets --num-gpus, the driver --expect-gpus."""
    extra = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    proc, log, _ = _start_script(tmp_path, "ok", extra, gpus_per_node=2, gpu_per_trial=0.25)
    out = _finish(proc)
    assert said in out, out
    if not ok:
        assert proc.returncode == 4 and not (log / "ray").exists(), out
        return
    assert proc.returncode == 0, out
    assert "--num-gpus=2" in (log / "ray").read_text().split()
    driver = (log / "driver_args").read_text().split()
    assert driver[driver.index("--expect-gpus") + 1] == "2"
    assert "GPU sharing: 4 trials share each GPU" in out


def test_submit_dry_run_and_errors_from_the_study(tmp_path, capsys):
    study = tmp_path / "share.yaml"
    study.write_text("name: share\nfactors: {}\nresources: {cpu: 1, gpu: 1/4}\n")
    args = _parse(["slurm", "submit", str(study), "--gpus-per-node", "2", "--dry-run"])
    assert slurm_cmd.run(args, client=SlurmClient(FakeRunner({}))) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("#!/bin/bash") and "GPU sharing" in captured.out
    assert captured.err.strip().splitlines()[-1] == (  # after the no --time warning
        "GPU sharing: 4 trials share each GPU (resources.gpu 1/4); up to 8 trials per node, "
        "8 at once; max_concurrent 2 runs 2 at once (--max-concurrent 8 fills them)"
    )  # the study's max_concurrent (default 2)
    no_gpus = _parse(["slurm", "submit", str(study), "--dry-run"])
    with pytest.raises(ConfigError, match=r"--gpus-per-node 0\)"):
        slurm_cmd.run(no_gpus, client=SlurmClient(FakeRunner({})))


# --- Ray: what each trial asks for and gets -----------------------------------------------

TRIALS = 8


def probe_fit(config, data, on_epoch=None):
    """fake_fit, after recording what Ray gave this trial and waiting until all TRIALS
    trials have recorded (a barrier: it only opens when they all run at once)."""
    import ray

    probe = Path(os.environ["QSWEEP_GPU_PROBE_DIR"])
    record = {
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "assigned": ray.get_runtime_context().get_assigned_resources(),
    }
    path = probe / f"{config.learning_rate}.json"
    path.with_suffix(".tmp").write_text(json.dumps(record))
    path.with_suffix(".tmp").rename(path)
    deadline = time.monotonic() + 120
    while len(list(probe.glob("*.json"))) < TRIALS and time.monotonic() < deadline:
        time.sleep(0.1)
    record["running_together"] = len(list(probe.glob("*.json")))
    path.write_text(json.dumps(record))
    return fake_fit(config, data, on_epoch)


@pytest.mark.integration
@pytest.mark.slow
def test_ray_runs_eight_quarter_gpu_trials_at_once_on_two_logical_gpus(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from orchestrator.tune_driver import run_study

    if ray.is_initialized():
        ray.shutdown()
    probe = tmp_path / "probe"
    probe.mkdir()
    monkeypatch.setenv("QSWEEP_GPU_PROBE_DIR", str(probe))  # before Ray starts its workers
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    spec = _spec(
        factors={"learning_rate": [0.001 * (i + 1) for i in range(TRIALS)]},
        resources={"cpu": 1, "gpu": "1/4"},
        max_concurrent=TRIALS,
        pack_size=1,
    )
    ray.init(num_cpus=TRIALS, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert ray.cluster_resources()["GPU"] == 2
        outcome = run_study(spec, study_dir=tmp_path / "share", fit=f"{__name__}:probe_fit",
                            data=tiny_data(), stream=io.StringIO())  # fmt: skip
    finally:
        ray.shutdown()
    assert (outcome.ran, outcome.failed) == (TRIALS, 0)
    records = [json.loads(p.read_text()) for p in sorted(probe.glob("*.json"))]
    assert len(records) == TRIALS
    assert all(r["running_together"] == TRIALS for r in records)  # 8 at once on 2 GPUs
    for r in records:  # each trial: a quarter of one GPU, whose id Ray makes visible
        assert r["assigned"]["GPU"] == pytest.approx(0.25) and r["assigned"]["CPU"] == 1
        assert len(r["gpu_ids"]) == 1 and r["cuda_visible_devices"] == r["gpu_ids"][0]
    assert sorted(Counter(r["gpu_ids"][0] for r in records).values()) == [4, 4]

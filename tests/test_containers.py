"""docker/Dockerfile, the one definition of the qsweep image, checked two ways.

Statically (always): its instructions are known, it takes its base as a build argument
(default ``python:3.11-slim-bookworm``), the paths it copies exist and pass the build
context's ``.dockerignore``, the extras, entry point and template it names exist, its
shell bodies parse, and no second image definition (e.g. an Apptainer ``.def``) exists.

Built and run (marker ``containers``, with ``QSWEEP_CONTAINER_TESTS=1``; root, buildah,
podman, debootstrap): the image built on a cached debootstrap'ed Debian 12 with the CPU
torch build, the quickstart run inside it into a results directory on the host, the table
and MLflow runs read from outside, and ``qsweep --help`` and the Slurm job script from
inside. 5 to 10 minutes on 2 cores, so CI does not run it; it is the release check::

    QSWEEP_CONTAINER_TESTS=1 .venv/bin/python -m pytest -m containers tests/test_containers.py
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import require_or_skip

DOCKER_DIR = Path(__file__).resolve().parents[1] / "docker"
REPO = DOCKER_DIR.parent
DOCKERFILE_KEYWORDS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DOCKER_DIR / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", text)  # join continuation lines
    out = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword, rest.strip()))
    return out


def _args(instructions: list[tuple[str, str]]) -> dict[str, str]:
    return dict(r.split("=", 1) for k, r in instructions if k == "ARG" and "=" in r)


def _env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in instructions:
        if keyword == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", rest))
    return env


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether docker's .dockerignore rules (last match wins, '!' re-includes) drop path."""
    ignored = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        if fnmatch.fnmatch(path, pattern.lstrip("!")):
            ignored = not keep
    return ignored


def test_dockerfile_instructions_and_paths_exist() -> None:
    instructions = _dockerfile_instructions()
    assert [k for k, _ in instructions[:2]] == ["ARG", "FROM"]  # the base is a build arg
    assert instructions[0][1] == "BASE=python:3.11-slim-bookworm"
    assert instructions[1][1] == "${BASE}"
    for keyword, _ in instructions:
        assert keyword in DOCKERFILE_KEYWORDS, f"unknown Dockerfile instruction {keyword}"
    rules = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()]
    rules = [ln for ln in rules if ln and not ln.startswith("#")]
    for keyword, rest in instructions:
        if keyword == "COPY":
            *sources, _dest = rest.split()
            for src in sources:
                assert (REPO / src).exists(), f"COPY source {src} missing from the repo"
                assert not _ignored(src, rules), f".dockerignore drops COPY source {src}"
    args = _args(instructions)
    assert args["QSWEEP_EXTRAS"] in set(_pyproject()["project"]["optional-dependencies"])
    assert args["TORCH"] == "cuda"  # GPU nodes by default; TORCH=cpu for CPU nodes
    assert args["TORCH_CPU_INDEX"].startswith("https://download.pytorch.org/whl/cpu")
    entry = next(r for k, r in instructions if k == "ENTRYPOINT")
    assert re.findall(r'"([^"]+)"', entry)[0] in _pyproject()["project"]["scripts"]
    env = _env(instructions)
    template = env["QSWEEP_SLURM_TEMPLATE"]
    assert (REPO / Path(template).relative_to("/opt/qsweep")).is_file()
    assert env["PATH"].startswith(env["VIRTUAL_ENV"] + "/bin:")


def test_dockerfile_shell_parses_and_refuses_torchvision() -> None:
    instructions = _dockerfile_instructions()
    runs = [r for k, r in instructions if k == "RUN"]
    for body in runs:
        proc = subprocess.run(["sh", "-n"], input=body, text=True, capture_output=True)
        assert proc.returncode == 0, f"RUN {body[:60]}...: {proc.stderr}"
    deps = _pyproject()["project"]["dependencies"]
    assert not [d for d in deps if d.lower().startswith("torchvision")]
    assert "pip show torchvision" in " ".join(runs)  # the build fails if it gets in anyway


def test_one_image_definition() -> None:
    """One source of truth: an Apptainer image is converted from the OCI image
    (docs/slurm.md), never built from a second definition that could drift."""
    assert sorted(p.name for p in DOCKER_DIR.iterdir()) == ["Dockerfile"]


def test_torch_pin_reader_reads_the_pin() -> None:
    from tests.containers import torch_pin

    pinned = [d for d in _pyproject()["project"]["dependencies"] if d.startswith("torch==")]
    assert pinned == [f"torch=={torch_pin()}"]


def test_local_torch_wheel_offered_to_the_cpu_build_only(tmp_path, monkeypatch) -> None:
    """A local torch-X+cpu wheel satisfies ``torch==X`` too: the CUDA build must not see it."""
    from tests.containers import local_pip_mounts, torch_pin

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / f"torch-{torch_pin()}+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").touch()
    cert = tmp_path / "ca.pem"
    cert.write_text("CA")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("PIP_CERT", str(cert))
    args, volumes = local_pip_mounts(tmp_path, "cpu")
    assert args == ["--build-arg", "TORCH_CPU_INDEX=https://pypi.org/simple"]
    assert f"{wheels}:{wheels}:ro" in volumes
    assert f"find-links = {wheels}" in (tmp_path / "pip.conf").read_text()
    args, volumes = local_pip_mounts(tmp_path, "cuda")
    assert args == [] and not [v for v in volumes if str(wheels) in v]
    assert f"{cert}:/run/qsweep-build/ca.pem:ro" in volumes  # the CA bundle still goes in
    assert "find-links" not in (tmp_path / "pip.conf").read_text()


def test_debian_mirror_from_both_sources_formats(tmp_path: Path) -> None:
    from tests.containers import DEFAULT_MIRROR, debian_mirror

    (tmp_path / "sources.list.d").mkdir()
    assert debian_mirror(tmp_path) == DEFAULT_MIRROR
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example.org/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n\n"
        "Types: deb\n# a comment\nURIs: http://mirror.example.org/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert debian_mirror(tmp_path) == "http://mirror.example.org/debian"
    (tmp_path / "sources.list").write_text(
        "# deb http://old.example.org/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://ftp.example.net/debian bookworm main\n"
    )
    assert debian_mirror(tmp_path) == "http://ftp.example.net/debian"


# --- the image built and run (buildah; the release check) -------------------------------

CONTAINER_TESTS = os.environ.get("QSWEEP_CONTAINER_TESTS") == "1"


def _in_image(image, *command: str, volumes: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``buildah run`` COMMAND in the test's working container (chroot isolation)."""
    vols = [a for v in volumes for a in ("-v", v)]
    return subprocess.run(
        ["buildah", "run", "--isolation", "chroot", *vols, image.container, "--", *command],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """docker/Dockerfile built (TORCH=cpu) on the cached debootstrap base, and a working
    container of it; both removed afterwards (the base stays cached)."""
    if not CONTAINER_TESTS:
        pytest.skip(
            "builds docker/Dockerfile and runs the quickstart in it (5-10 min on 2 cores, "
            "too long for CI): the release check, run by hand with QSWEEP_CONTAINER_TESTS=1"
        )
    missing = [c for c in ("buildah", "podman", "debootstrap") if not shutil.which(c)]
    require_or_skip(not missing, f"{', '.join(missing)} not installed (apt-get install "
                    "podman buildah debootstrap)")  # fmt: skip
    require_or_skip(os.geteuid() == 0, "debootstrap and buildah's chroot isolation need root")
    from tests import containers

    tmp = tmp_path_factory.mktemp("image")
    tag = f"localhost/qsweep-test:cpu-{os.getpid()}"
    timings: dict[str, float] = {}
    start = time.monotonic()
    base = containers.cached_base()
    timings["base"] = time.monotonic() - start
    start = time.monotonic()
    containers.build_image(base, tag, tmp, torch="cpu")
    timings["build"] = time.monotonic() - start
    try:
        container = containers.buildah("from", "--pull-never", tag).stdout.strip()
        try:
            yield SimpleNamespace(tag=tag, container=container, tmp=tmp, timings=timings,
                                  size=containers.image_size(tag))  # fmt: skip
        finally:
            subprocess.run(["buildah", "rm", container], capture_output=True)
    finally:
        subprocess.run(["buildah", "rmi", tag], capture_output=True)
        print("\ncontainers: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))


@pytest.mark.containers
@pytest.mark.integration
@pytest.mark.slow
def test_image_runs_the_quickstart_into_a_results_dir_on_the_host(image) -> None:
    import pyarrow.parquet as pq
    from mlflow.tracking import MlflowClient

    from orchestrator.spec import load_spec

    results = image.tmp / "results"
    results.mkdir()
    start = time.monotonic()
    done = _in_image(image, "qsweep", "run", "search_spaces/quickstart.yaml",
                     "--results", "/results", volumes=(f"{results}:/results",))  # fmt: skip
    image.timings["quickstart"] = time.monotonic() - start
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    study = results / "quickstart"  # read from outside the container
    rows = pq.read_table(study / "trials.parquet").to_pylist()
    spec = load_spec(REPO / "search_spaces" / "quickstart.yaml")
    assert sorted((r["qubits"], r["learning_rate"]) for r in rows) == sorted(
        (q, lr) for q in spec.factors["qubits"] for lr in spec.factors["learning_rate"]
    )
    assert all(r["status"] == "completed" and 0 <= r["val_accuracy"] <= 1 for r in rows), rows
    client = MlflowClient(tracking_uri=f"sqlite:///{study / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("quickstart")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    (parent,) = [r for r in runs if r.data.tags.get("qsweep.kind") == "study"]
    trials = {r.data.tags["qsweep.trial_id"]: r for r in runs if r is not parent}
    assert sorted(trials) == sorted(r["trial_id"] for r in rows)  # one run per row
    for row in rows:
        run = trials[row["trial_id"]]
        assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == (
            parent.info.run_id
        )
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert any(m.value == pytest.approx(row["val_accuracy"]) for m in history), history
    assert any((study / "mlartifacts").rglob("MLmodel"))  # the logged models, on the host


@pytest.mark.containers
@pytest.mark.integration
@pytest.mark.slow
def test_image_cli_and_its_slurm_job_script(image) -> None:
    from orchestrator.slurm import SlurmOptions, render_sbatch

    done = _in_image(image, "qsweep", "--help")
    assert done.returncode == 0 and re.search(r"\brun\b.*\bslurm\b", done.stdout, re.S), done
    done = _in_image(image, "qsweep", "slurm", "submit", "search_spaces/quickstart.yaml",
                     "--dry-run", "--results", "/results", "--nodes", "2",
                     "--gpus-per-node", "1", "--container", "/images/qsweep.sif")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    # The image's template (QSWEEP_SLURM_TEMPLATE) renders what this checkout renders.
    expected = SlurmOptions(study_file="/opt/qsweep/search_spaces/quickstart.yaml",
                            study_name="quickstart", results_dir="/results", nodes=2,
                            gpus_per_node=1, container="/images/qsweep.sif")  # fmt: skip
    assert done.stdout == render_sbatch(expected)


@pytest.mark.containers
@pytest.mark.integration
@pytest.mark.slow
def test_image_holds_cpu_torch_gcc_and_no_torchvision(image) -> None:
    from tests.containers import torch_pin

    probe = (
        "import importlib.metadata as md, importlib.util as u, json, torch;"
        "print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda,"
        "'torchvision': u.find_spec('torchvision') is not None,"
        "'nvidia': sorted(d.metadata['Name'] for d in md.distributions()"
        " if d.metadata['Name'].lower().startswith(('nvidia', 'triton')))}))"
    )
    done = _in_image(image, "python3", "-c", probe)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {"torch": f"{torch_pin()}+cpu", "cuda": None, "torchvision": False,
                     "nvidia": []}  # fmt: skip
    done = _in_image(image, "python3", "-c", "import sentence_transformers")
    assert done.returncode == 0, done.stderr[-3000:]  # the torchvision trap is absent
    assert _in_image(image, "gcc", "--version").returncode == 0  # builds the CPU kernel
    print(f"\ncontainers: image {image.tag} {image.size / 1e9:.2f} GB")

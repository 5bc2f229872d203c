"""A local Ray started by a study listens on loopback only, keeps its token private and its
files out of other users' reach (issue 24, row 13). A Ray cluster (``--address``, Slurm)
is left as it is.

The integration test starts the real local Ray of ``tune_driver._init_ray`` in a child
process and reads the listening sockets of that child and all its descendants with
``ss -ltnp`` (the kernel's view, not Ray's).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import require_or_skip

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|\[::1\]|\[::ffff:127\.\d+\.\d+\.\d+\]):\d+$")

LOCAL_RAY = r"""
import json, sys
import psutil, ray
from ray._private import ray_constants
from orchestrator.tune_driver import _init_ray

assert _init_ray(None)
assert ray_constants.ENABLE_RAY_CLUSTER, "the one-machine switch outlived ray.init"

@ray.remote
def where():
    return ray.util.get_node_ip_address()

ips = ray.get([where.remote() for _ in range(2)])  # two workers with their own servers
me = psutil.Process()
pids = [me.pid] + [p.pid for p in me.children(recursive=True)]
node = ray.nodes()[0]["NodeManagerAddress"]
print(json.dumps({"pids": pids, "node": node, "worker_ips": ips}), flush=True)
sys.stdin.readline()  # the test reads the sockets now
ray.shutdown()
"""


def _listeners(pids: set[int]) -> list[tuple[str, str]]:
    """(process name, local address) of every TCP socket listening in one of ``pids``."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        for name, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line):
            if int(pid) in pids:
                found.append((name, fields[3]))
    return found


@pytest.mark.integration
def test_a_local_ray_listens_on_loopback_only_with_a_private_token(tmp_path):
    require_or_skip(shutil.which("ss") is not None, "ss (iproute2) is not installed")
    home = tmp_path / "home"
    short = Path(tempfile.mkdtemp(prefix="qr", dir="/tmp"))  # unix sockets: < 108 bytes
    try:
        _check_local_ray(home, short)
    finally:
        shutil.rmtree(short, ignore_errors=True)


def _check_local_ray(home: Path, short: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    env.update(
        HOME=str(home),
        RAY_AUTH_MODE="token",
        RAY_TMPDIR=str(short),
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", LOCAL_RAY],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()[-3000:]
        info = json.loads(line)
        listeners = _listeners(set(info["pids"]))
        proc.stdin.write("done\n")
        proc.stdin.flush()
        assert proc.wait(timeout=120) == 0, proc.stderr.read()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    names = {name for name, _ in listeners}
    assert {"gcs_server", "raylet"} <= names and len(listeners) >= 5, listeners
    exposed = [(name, addr) for name, addr in listeners if not LOOPBACK.match(addr)]
    assert not exposed, f"listening beyond loopback: {exposed} (all: {listeners})"
    assert info["node"] == "127.0.0.1" and set(info["worker_ips"]) == {"127.0.0.1"}

    token = home / ".ray" / "auth_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert re.fullmatch(r"[0-9a-f]{64}", token.read_text())
    private = short / f"qsweep-{os.getuid()}"
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert any((private / "ray").glob("session_*"))  # Ray's files went inside it


# --- the files, without starting Ray ---------------------------------------------------
@pytest.fixture
def ray_files(tmp_path, monkeypatch):
    from orchestrator.tune_driver import _private_ray_files

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    (tmp_path / "tmp").mkdir()
    return _private_ray_files


def test_an_existing_token_is_made_private_and_kept(tmp_path, monkeypatch, ray_files):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    token = tmp_path / "home" / ".ray" / "auth_token"
    token.parent.mkdir(parents=True)
    token.write_text("f" * 64)
    token.chmod(0o644)  # as Ray 2.60 writes it
    ray_files()
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and token.read_text() == "f" * 64


def test_no_token_is_written_when_auth_is_off_or_the_token_is_given(monkeypatch, ray_files):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray_files()
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "a" * 64)  # as a Slurm job passes it
    ray_files()
    assert not (Path(os.environ["HOME"]) / ".ray").exists()


@pytest.mark.skipif(os.getuid() != 0, reason="giving a directory to another user needs root")
def test_a_temp_dir_owned_by_someone_else_is_not_used(tmp_path, ray_files):
    planted = tmp_path / "tmp" / f"qsweep-{os.getuid()}"
    planted.mkdir(mode=0o777)
    os.chown(planted, 4321, 4321)
    temp_dir = Path(ray_files())
    assert temp_dir.parent != planted and temp_dir.parent.parent == tmp_path / "tmp"
    assert stat.S_IMODE(temp_dir.parent.stat().st_mode) == 0o700

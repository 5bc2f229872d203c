"""The study lock under contention: a refused driver names the live holder, never the
dead driver whose PID the lock file still holds (issue 24, row 5).

The race: a new holder's ``flock`` succeeds a moment before it writes its PID; a driver
refused in that moment used to read the dead driver's PID, or an empty file. Many
processes race for one directory whose ``.lock`` names a dead driver, round after round.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from model.errors import ServiceError
from orchestrator.results import StudyLock

ROOT = Path(__file__).resolve().parents[1]

# A contender: on "try DIR" it tries the lock of DIR (and keeps it when it wins); on
# "release" it lets go. It answers every command with one line.
CONTENDER = r"""
import sys
import threading
from pathlib import Path
from model.errors import ServiceError
from orchestrator.results import StudyLock
held = None
for line in sys.stdin:
    command, _, arg = line.strip().partition(" ")
    if command == "try":
        try:
            held = StudyLock(Path(arg)).acquire()
            print("won", flush=True)
        except ServiceError as err:
            print("refused", str(err), flush=True)
    elif command == "release":
        if held is not None:
            held.release()
            held = None
        print("released", flush=True)
"""


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _popen(code: str, *args: str, **kw) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, text=True, **kw)


def test_refused_drivers_name_the_live_holder_not_the_dead_one(tmp_path):
    contenders, rounds = 8, 60
    dead = _dead_pid()
    procs = [
        _popen(CONTENDER, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=1)
        for _ in range(contenders)
    ]
    wrong: list[str] = []
    try:
        for r in range(rounds):
            study = tmp_path / f"round{r}"
            study.mkdir()
            (study / ".lock").write_text(f"{dead}\n")  # left by a killed driver
            for proc in procs:  # all at once: they race for the flock
                proc.stdin.write(f"try {study}\n")
                proc.stdin.flush()
            answers = [proc.stdout.readline().strip() for proc in procs]
            winners = [
                proc.pid for proc, answer in zip(procs, answers, strict=True) if answer == "won"
            ]
            assert len(winners) == 1, answers  # the winner holds it until "release"
            for answer in answers:
                if answer.startswith("refused"):
                    named = re.search(r"is held by (.*?)\. Wait", answer).group(1)
                    if named != f"PID {winners[0]}":
                        wrong.append(f"round {r}: {named} (holder {winners[0]}, dead {dead})")
            for proc in procs:
                proc.stdin.write("release\n")
                proc.stdin.flush()
            assert [proc.stdout.readline().strip() for proc in procs] == ["released"] * contenders
            assert (study / ".lock").read_text() == ""  # released: the file names no one
    finally:
        for proc in procs:
            proc.stdin.close()
            proc.wait(timeout=30)
    assert not wrong, f"{len(wrong)} refusals named the wrong holder: {wrong[:5]}"


HOLD = """
import sys, time
from pathlib import Path
from orchestrator.results import StudyLock
lock = StudyLock(Path(sys.argv[1])).acquire()
print("locked", flush=True)
time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path):
    proc = _popen(HOLD, str(tmp_path), stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    proc.kill()
    proc.wait()


def test_the_holder_writes_its_pid_and_host(tmp_path, holder):
    assert (tmp_path / ".lock").read_text() == f"{holder.pid} {socket.gethostname()}\n"


def test_a_holder_on_another_host_is_named_with_its_host(tmp_path, holder):
    (tmp_path / ".lock").write_text("4242 node-b\n")  # a driver on another node, shared FS
    with pytest.raises(ServiceError, match=r"held by PID 4242 on node-b\. Wait"):
        StudyLock(tmp_path, wait_s=0.2).acquire()


def test_a_lock_held_under_a_dead_pid_says_so_after_waiting(tmp_path, holder):
    """Held (say by a child that inherited the descriptor) while the file names a dead PID."""
    dead = _dead_pid()
    (tmp_path / ".lock").write_text(f"{dead}\n")
    with pytest.raises(ServiceError, match=rf"held by PID {dead}, which has exited"):
        StudyLock(tmp_path, wait_s=0.2).acquire()
    (tmp_path / ".lock").write_text("")
    with pytest.raises(ServiceError, match="held by an unknown process"):
        StudyLock(tmp_path, wait_s=0.2).acquire()


def test_a_lock_released_while_waiting_is_taken(tmp_path, holder):
    """A refused driver tries the lock again while it reads: a holder that ends meanwhile
    hands it over instead of a refusal that names no one."""
    (tmp_path / ".lock").write_text("")  # unsettled: the waiter keeps trying
    killer = threading.Timer(0.3, holder.kill)
    killer.start()
    try:
        with StudyLock(tmp_path, wait_s=30.0):
            assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())
    finally:
        killer.join()

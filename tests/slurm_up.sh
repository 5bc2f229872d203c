#!/bin/bash
# Start a throw-away single-node Slurm on this machine (root; Debian packages
# slurmctld slurmd slurm-client munge) and keep it up until Ctrl-C (or SIGTERM). Then:
#     export SLURM_CONF=<printed path>; qsweep slurm submit search_spaces/quickstart.yaml ...
# The daemons are stopped by PID on exit; state lives in DIR (default a new temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-$(mktemp -d /tmp/qsweep-slurm.XXXXXX)}
exec "${PYTHON:-.venv/bin/python}" - "$DIR" <<'PY'
import signal, sys, time
from pathlib import Path
from tests.slurm_env import SingleNodeSlurm, can_run

ok, why = can_run()
if not ok:
    sys.exit(f"slurm_up: {why}")
cluster = SingleNodeSlurm.start(Path(sys.argv[1]))
print(f"export SLURM_CONF={cluster.conf}", flush=True)
print("Slurm is up (partition debug); Ctrl-C stops it.", flush=True)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
try:
    while True:
        time.sleep(3600)
except (KeyboardInterrupt, SystemExit):
    pass
finally:
    cluster.stop()
    print("Slurm stopped.")
PY

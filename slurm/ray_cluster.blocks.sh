# Optional parts of the qsweep job script. `qsweep slurm submit` (orchestrator/slurm.py,
# render_sbatch) splices the blocks the submit options ask for into the @@NAME@@
# placeholders of ray_cluster.sbatch.tmpl. Edit the job script here and in the template;
# Python only chooses blocks and fills in shell-quoted values (@@...@@ inside a block).
#
# A block runs from its "#@ NAME" line to the next one; trailing blank lines are dropped,
# leading ones kept. This file is never run by itself.

#@ NO_SETUP
# (no modules, no activate command)

#@ MODULE_LOAD
module load @@MODULE@@ || fail 3 @@MODULE_FAILED@@

#@ ACTIVATE
if ! {
    @@ACTIVATE@@
}; then
    fail 3 @@ACTIVATE_FAILED@@
fi

#@ CHECK_CONTAINER
command -v apptainer >/dev/null || fail 3 "apptainer is not on PATH on $(hostname); load it with --module or --activate"
[ -r @@IMAGE@@ ] || fail 3 @@IMAGE_UNREADABLE@@

#@ CHECK_HOST
for cmd in ray qsweep; do
    command -v "$cmd" >/dev/null || fail 3 "'$cmd' is not on PATH on $(hostname); make it available with --activate, --module or --container"
done

#@ RAY_AUTH_DISABLED
# Ray token authentication disabled (--ray-auth disabled): anyone who can reach
# these ports can run code as you.
export RAY_AUTH_MODE=disabled

#@ RAY_AUTH_TOKEN
# A fresh Ray token per job: srun passes the environment to every node, and
# nothing is written to ~/.ray/auth_token (which concurrent jobs would share).
export RAY_AUTH_MODE=token
RAY_AUTH_TOKEN=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
export RAY_AUTH_TOKEN

#@ CHECK_GPUS


# --- GPUs: what a job step sees on each node --------------------------------------
# Ray takes a node's GPU ids from CUDA_VISIBLE_DEVICES in its job step (Slurm sets it for
# --gpus-per-task; `ray start --num-gpus` must match) and gives each trial the id of the
# GPU it runs on: the trial sees that one GPU, as cuda:0. With resources.gpu: 1/k, k
# trials share each GPU.
GPU_LIST=$(srun --nodes="$NUM_NODES" --ntasks="$NUM_NODES" --ntasks-per-node=1@@STEP_GPUS@@ \
    bash -c 'echo "$(hostname) ${CUDA_VISIBLE_DEVICES-unset}"') ||
    fail 4 "srun could not list the GPUs of the job's nodes (see the srun lines above)"
while read -r node devices; do
    if [ "$devices" = unset ]; then
        log "$node: CUDA_VISIBLE_DEVICES is not set in the job step; Ray takes GPUs 0..$(( GPUS_PER_NODE - 1 ))"
        continue
    fi
    count=$(tr ',' '\n' <<<"$devices" | grep -c . || true)
    [ "$count" -eq "$GPUS_PER_NODE" ] ||
        fail 4 "$node: the job step sees $count GPU(s) (CUDA_VISIBLE_DEVICES=$devices), not --gpus-per-node $GPUS_PER_NODE"
    log "$node: GPUs $devices"
done <<<"$GPU_LIST"
log @@GPU_SHARING@@

#@ NO_WORKERS
# (single node: no Ray workers to start)

#@ START_WORKERS

# --- Ray workers on the other nodes --------------------------------------------
srun --nodes=@@N@@ --ntasks=@@N@@ --ntasks-per-node=1 --cpus-per-task="$CPUS_PER_NODE"@@STEP_GPUS@@ --exclude="$HEAD_NODE" "${CONTAINER[@]}" \
    ray start --address="$HEAD_IP:$RAY_PORT" "${RAY_NODE_ARGS[@]}" &
WORKERS_STEP_PID=$!
log "started Ray workers on @@N@@ more node(s)"

#@ LAUNCH_MLFLOW


# --- MLflow tracking server on the head (sqlite in the study dir) -------------
# Started before Ray so that both come up together; awaited after the Ray head. It
# listens on the head's address, so every node of the job (and the login node through
# an ssh tunnel) reaches it; only the driver logs to it.
mkdir -p "$STUDY_DIR/slurm"
MLFLOW_LOG="$STUDY_DIR/slurm/mlflow-server-$SLURM_JOB_ID.log"
"${CONTAINER[@]}" mlflow server --backend-store-uri "sqlite:///$STUDY_DIR/mlflow.db" \
    --artifacts-destination "$STUDY_DIR/mlartifacts" \
    --host "$HEAD_IP" --port "$MLFLOW_PORT" --workers 1 \
    --allowed-hosts "$HEAD_IP:$MLFLOW_PORT,$HEAD_NODE:$MLFLOW_PORT,localhost:5000" \
    >"$MLFLOW_LOG" 2>&1 &
MLFLOW_PID=$!
MLFLOW_URI="http://$HEAD_IP:$MLFLOW_PORT"

#@ AWAIT_MLFLOW

deadline=$(( SECONDS + 180 ))
until (exec 3<>"/dev/tcp/$HEAD_IP/$MLFLOW_PORT") 2>/dev/null; do
    kill -0 "$MLFLOW_PID" 2>/dev/null || fail 5 "mlflow server exited; see $MLFLOW_LOG"
    (( SECONDS < deadline )) ||
        fail 5 "mlflow server at $MLFLOW_URI did not answer within 180s; see $MLFLOW_LOG"
    sleep 1
done
log "MLflow tracking server at $MLFLOW_URI (from a login node: ssh -L 5000:$HEAD_IP:$MLFLOW_PORT $HEAD_NODE)"

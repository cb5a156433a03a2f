#!/bin/bash
# Submit a search to Slurm: a storage proxy job, then an array of TASKS workers that stops it when they are done.
#   deploy/slurm/submit.sh SPACE STUDY TRIALS TASKS [harness search flags, and sbatch's in SBATCH_* variables]
# HARNESS_STORAGE (the PostgreSQL URL, with its password) and HARNESS_TRACKING_URI (an MLflow server, or a store every
# node reaches) come from the environment; each task gets HARNESS_GPUS_PER_TASK GPUs (default 1; 0 on CPUs) and
# HARNESS_CPUS_PER_TASK CPU cores (default 4).
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: $0 SPACE STUDY TRIALS TASKS [harness search flags]" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
export HARNESS_SPACE=$1 HARNESS_STUDY=$2 HARNESS_TRIALS=$3
tasks=$4
shift 4
: "${HARNESS_STORAGE:?set HARNESS_STORAGE to the URL of the study database}"
: "${HARNESS_TRACKING_URI:?set HARNESS_TRACKING_URI to an MLflow server every node reaches}"
mkdir -p harness-slurm
HARNESS_PROXY_FILE=$PWD/harness-slurm/proxy-$HARNESS_STUDY-$(date +%Y%m%d-%H%M%S)-$$.address
export HARNESS_PROXY_FILE
proxy=$(sbatch --parsable "$here/proxy.sbatch")
gpus=${HARNESS_GPUS_PER_TASK:-1}
[ "$gpus" = 0 ] && gpu_request=() || gpu_request=(--gpus-per-task="$gpus")
array=$(sbatch --parsable --array="0-$((tasks - 1))" --cpus-per-task="${HARNESS_CPUS_PER_TASK:-4}" "${gpu_request[@]}" \
    "$here/search.sbatch" "$@")
sbatch --parsable --job-name=harness-proxy-stop --dependency="afterany:$array" --output=/dev/null \
    --wrap "scancel $proxy" >/dev/null
echo "storage proxy: job $proxy; workers: array job $array ($tasks tasks); the proxy stops when they are done"

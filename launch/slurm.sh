#!/usr/bin/env bash
# SLURM, one or more GPU nodes: writes an sbatch script and submits it.
#
# One task per node; each task is one JAX process that drives all GPUs of its node. The job
# script exports what jax.distributed.initialize() needs, explicitly rather than through
# jax's SLURM auto-detection (which, with one task per node, would give each process only
# GPU 0, because it maps SLURM_LOCALID to a single local device):
#   JAX_COORDINATOR_ADDRESS  first node of the job : port   (read by jax itself)
#   JAX_NUM_PROCESSES        number of nodes
#   JAX_PROCESS_ID           SLURM_PROCID of the task        (set per task inside srun)
#   JAX_LOCAL_DEVICE_IDS     0,...,gpus_per_node-1           (read by jax itself)
# The code and venv must sit on a filesystem all nodes share; make the venv once with
#   launch/gpu_node.sh --step install --venv /shared/okdhp_venv
set -euo pipefail

readonly REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  cat <<'EOF'
Usage: launch/slurm.sh --nodes N --gpus-per-node G --config PATH --workdir DIR [options]
                       [-- MAIN_ARGS...]

Writes DIR/slurm_job.sbatch and submits it with sbatch; SLURM's log goes to DIR/slurm-<id>.out.
Relative paths are resolved from the current directory (the job starts there).

Options:
  --nodes N                 number of nodes, one JAX process each (required).
  --gpus-per-node G         GPUs per node (required).
  --config PATH             config file, e.g. configs/hg4.py (required).
  --workdir DIR             output folder on a shared filesystem (required).
  --data DIR                folder of TFRecords from data_prep (default: the config's).
  --eval-annotations PATH   evaluation annotations (default: DATA/gt_valid.mat).
  --partition NAME          SLURM partition (default: the cluster's).
  --time D-HH:MM:SS         time limit (default: the partition's).
  --account NAME            SLURM account to charge.
  --cpus-per-task C         CPU cores per node for the input pipeline.
  --job-name NAME           job name (default: okdhp).
  --venv DIR                virtual environment on the shared filesystem (default: <repo>/.venv).
  --port P                  coordinator port (default: 61440 + job id % 4096).
  --dry-run                 Print the sbatch script and the commands (`+ ` lines), submit nothing.
  -h, --help                Show this help.

Arguments after `--` go to okdhp_jax.main unchanged, e.g. -- --config.train.batch_size=128
EOF
}

SCRIPT_NAME=slurm.sh
# shellcheck source=launch/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

nodes='' gpus_per_node='' config='' workdir='' data='' eval_annotations='' partition=''
time_limit='' account='' cpus_per_task='' job_name='okdhp' venv="$REPO_ROOT/.venv" port=''
main_args=()

while (( $# )); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) dry_run=1 ;;
    --nodes|--gpus-per-node|--config|--workdir|--data|--eval-annotations|--partition|--time|\
    --account|--cpus-per-task|--job-name|--venv|--port)
      (( $# >= 2 )) || die_usage "$1 needs a value"
      case "$1" in
        --nodes) nodes="$2" ;;
        --gpus-per-node) gpus_per_node="$2" ;;
        --config) config="$2" ;;
        --workdir) workdir="$2" ;;
        --data) data="$2" ;;
        --eval-annotations) eval_annotations="$2" ;;
        --partition) partition="$2" ;;
        --time) time_limit="$2" ;;
        --account) account="$2" ;;
        --cpus-per-task) cpus_per_task="$2" ;;
        --job-name) job_name="$2" ;;
        --venv) venv="$2" ;;
        --port) port="$2" ;;
      esac
      shift ;;
    --) shift; main_args=("$@"); break ;;
    *) die_usage "unknown option $1" ;;
  esac
  shift
done

positive_int() {  # positive_int VALUE OPTION
  [[ -n "$1" ]] || die_usage "$2 is required"
  [[ "$1" =~ ^[1-9][0-9]*$ ]] || die_usage "$2 must be a positive integer, got '$1'"
}
positive_int "$nodes" --nodes
positive_int "$gpus_per_node" --gpus-per-node
[[ -n "$config" ]] || die_usage "--config is required"
[[ -n "$workdir" ]] || die_usage "--workdir is required"
[[ "$workdir" != *://* ]] || die_usage "--workdir must be on a shared filesystem, got '$workdir'"
[[ -z "$cpus_per_task" ]] || positive_int "$cpus_per_task" --cpus-per-task
[[ -z "$port" ]] || positive_int "$port" --port

# Absolute paths: the job script must not depend on where sbatch is called from later.
absolute() { if [[ "$1" == /* ]]; then echo "$1"; else echo "$PWD/$1"; fi; }
workdir="$(absolute "${workdir%/}")"
venv="$(absolute "$venv")"
script_path="$workdir/slurm_job.sbatch"

# #SBATCH lines are not read by a shell, so their values cannot be quoted: refuse blanks.
no_blanks() {  # no_blanks VALUE WHAT
  [[ "$1" != *[[:space:]]* ]] || die_usage "$2 must not contain blanks (it goes into #SBATCH lines), got '$1'"
}
no_blanks "$job_name" --job-name
no_blanks "$partition" --partition
no_blanks "$time_limit" --time
no_blanks "$account" --account
no_blanks "$workdir" --workdir
no_blanks "$PWD" "the current directory"

main_cmd=("$venv/bin/python" -m okdhp_jax.main --config "$config" --workdir "$workdir")
if [[ -n "$data" ]]; then
  main_cmd+=("--config.data.records_dir=${data%/}"
             "--config.data.eval_annotations=${eval_annotations:-${data%/}/gt_valid.mat}")
elif [[ -n "$eval_annotations" ]]; then
  main_cmd+=("--config.data.eval_annotations=$eval_annotations")
fi
main_cmd+=(${main_args[@]+"${main_args[@]}"})

if [[ -n "$port" ]]; then
  port_expr="$port"
else
  port_expr='$(( 61440 + SLURM_JOB_ID % 4096 ))'  # the range jax's own SLURM detection uses
fi

job_script() {
  echo '#!/bin/bash'
  echo "#SBATCH --job-name=$job_name"
  echo "#SBATCH --nodes=$nodes"
  echo '#SBATCH --ntasks-per-node=1'
  echo "#SBATCH --gpus-per-node=$gpus_per_node"
  [[ -z "$cpus_per_task" ]] || echo "#SBATCH --cpus-per-task=$cpus_per_task"
  [[ -z "$partition" ]] || echo "#SBATCH --partition=$partition"
  [[ -z "$time_limit" ]] || echo "#SBATCH --time=$time_limit"
  [[ -z "$account" ]] || echo "#SBATCH --account=$account"
  echo "#SBATCH --chdir=$PWD"
  echo "#SBATCH --output=$workdir/slurm-%j.out"
  echo '# Written by launch/slurm.sh: one JAX process per node, each using all its GPUs.'
  echo 'set -euo pipefail'
  echo 'head_node="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"'
  echo "export JAX_COORDINATOR_ADDRESS=\"\${head_node}:$port_expr\""
  echo 'export JAX_NUM_PROCESSES="$SLURM_NNODES"'
  echo "export JAX_LOCAL_DEVICE_IDS=$(seq -s, 0 $(( gpus_per_node - 1 )))"
  echo 'echo "okdhp: ${JAX_NUM_PROCESSES} processes, coordinator ${JAX_COORDINATOR_ADDRESS}"'
  # JAX_PROCESS_ID differs per task, so it is set inside the task; "$@" keeps the quoting.
  echo "srun --nodes=\"\$SLURM_NNODES\" --ntasks-per-node=1 --gpus-per-node=$gpus_per_node" \
    "--kill-on-bad-exit=1 \\"
  echo "  bash -c 'export JAX_PROCESS_ID=\"\$SLURM_PROCID\"; exec \"\$@\"' okdhp_task \\"
  echo "  $(quote_all "${main_cmd[@]}")"
}

if (( dry_run )); then
  echo "#### sbatch script $script_path"
  job_script
  echo "#### end of sbatch script"
  run mkdir -p "$workdir"
  run sbatch "$script_path"
else
  run mkdir -p "$workdir"
  job_script > "$script_path"
  echo "slurm.sh: wrote $script_path" >&2
  run sbatch "$script_path"
fi

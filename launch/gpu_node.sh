#!/usr/bin/env bash
# One machine with one or more NVIDIA GPUs: install okdhp_jax into a venv, then train.
#
# A single process drives all visible GPUs (the `data` mesh axis spans them), so no
# jax.distributed setup is needed here; for several machines use launch/slurm.sh.
set -euo pipefail

readonly REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  cat <<'EOF'
Usage: launch/gpu_node.sh [--step install|run|all] [options] [-- MAIN_ARGS...]

Steps: install (make the venv, pip install the repository and jax for CUDA), run (train;
the default), all (install then run).

Options:
  --gpus N                  run: use GPUs 0..N-1 (sets CUDA_VISIBLE_DEVICES; default: all).
  --config PATH             run: config file, e.g. configs/hg4.py (required by run).
  --workdir DIR             run: output folder for logs and checkpoints (required by run).
  --data DIR                run: folder of TFRecords from data_prep (default: the config's).
  --eval-annotations PATH   run: evaluation annotations (default: DATA/gt_valid.mat).
  --venv DIR                virtual environment (default: <repo>/.venv).
  --python BIN              install: Python >= 3.11 that creates the venv (default: python3).
  --cuda 12|13              install: CUDA major version of the jax wheels (default: 13).
  --dry-run                 Print the commands, one per line prefixed by `+ `, run nothing.
  -h, --help                Show this help.

Arguments after `--` go to okdhp_jax.main unchanged, e.g. -- --config.train.batch_size=64
EOF
}

SCRIPT_NAME=gpu_node.sh
# shellcheck source=launch/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

step='run' gpus='' config='' workdir='' data='' eval_annotations=''
venv="$REPO_ROOT/.venv" python_bin='python3' cuda='13'
main_args=()

while (( $# )); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) dry_run=1 ;;
    --step|--gpus|--config|--workdir|--data|--eval-annotations|--venv|--python|--cuda)
      (( $# >= 2 )) || die_usage "$1 needs a value"
      case "$1" in
        --step) step="$2" ;;
        --gpus) gpus="$2" ;;
        --config) config="$2" ;;
        --workdir) workdir="$2" ;;
        --data) data="$2" ;;
        --eval-annotations) eval_annotations="$2" ;;
        --venv) venv="$2" ;;
        --python) python_bin="$2" ;;
        --cuda) cuda="$2" ;;
      esac
      shift ;;
    --) shift; main_args=("$@"); break ;;
    *) die_usage "unknown option $1" ;;
  esac
  shift
done

case "$step" in
  install) steps=(install) ;;
  run) steps=(run) ;;
  all) steps=(install run) ;;
  *) die_usage "--step must be install, run or all, got '$step'" ;;
esac
[[ "$cuda" == 12 || "$cuda" == 13 ]] || die_usage "--cuda must be 12 or 13, got '$cuda'"
if [[ " ${steps[*]} " == *" run "* ]]; then
  [[ -n "$config" ]] || die_usage "--config is required by step run"
  [[ -n "$workdir" ]] || die_usage "--workdir is required by step run"
  if [[ -n "$gpus" ]] && ! [[ "$gpus" =~ ^[1-9][0-9]*$ ]]; then
    die_usage "--gpus must be a positive integer, got '$gpus'"
  fi
fi

step_install() {
  run "$python_bin" -m venv "$venv"
  run "$venv/bin/python" -m pip install --upgrade pip
  run "$venv/bin/python" -m pip install -e "$REPO_ROOT" "jax[cuda${cuda}]"
}

step_run() {
  if (( ! dry_run )) && [[ ! -x "$venv/bin/python" ]]; then
    die_usage "--venv $venv has no bin/python; run with --step install first"
  fi
  local cmd=(env)
  if [[ -n "$gpus" ]]; then
    cmd+=("CUDA_VISIBLE_DEVICES=$(seq -s, 0 $(( gpus - 1 )))")
  fi
  cmd+=("$venv/bin/python" -m okdhp_jax.main --config "$config" --workdir "$workdir")
  if [[ -n "$data" ]]; then
    cmd+=("--config.data.records_dir=${data%/}"
          "--config.data.eval_annotations=${eval_annotations:-${data%/}/gt_valid.mat}")
  elif [[ -n "$eval_annotations" ]]; then
    cmd+=("--config.data.eval_annotations=$eval_annotations")
  fi
  run "${cmd[@]}" "${main_args[@]}"
}

for s in "${steps[@]}"; do
  "step_$s"
done

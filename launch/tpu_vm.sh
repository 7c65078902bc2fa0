#!/usr/bin/env bash
# Cloud TPU VM lifecycle for okdhp_jax: create, install, copy data, run, delete.
#
# Every remote step runs on all workers of the slice (`--worker=all`); on a multi-host slice
# each worker runs the same `python -m okdhp_jax.main --distributed=on`, and
# jax.distributed.initialize() finds the other hosts by itself on Cloud TPU (from the VM
# metadata), so nothing about the topology is passed here.
#
# Remote layout (relative to each worker's home directory):
#   okdhp_jax/    the code (scp'd from --source or cloned from --repo-url)
#   okdhp_venv/   a Python >= 3.11 virtual environment made with uv (the TPU images ship 3.10,
#                 which current jax no longer supports)
#   okdhp_data/   the TFRecords copied from --bucket
set -euo pipefail

readonly ALL_STEPS=(create install copy-data run delete)
readonly REMOTE_CODE='"$HOME"/okdhp_jax'
readonly REMOTE_VENV='"$HOME"/okdhp_venv'
readonly REMOTE_DATA='"$HOME"/okdhp_data'
readonly REMOTE_TARBALL='okdhp_jax_src.tar.gz'

usage() {
  cat <<'EOF'
Usage: launch/tpu_vm.sh --step STEPS --name NAME --zone ZONE [options] [-- MAIN_ARGS...]

STEPS is a comma-separated list of: create, install, copy-data, run, delete, or `all`
(= create,install,copy-data,run,delete, in that order).

Options:
  --name NAME               TPU VM name (required).
  --zone ZONE               GCE zone, e.g. us-central2-b (required).
  --project PROJECT         GCP project (default: gcloud's configured project).
  --accelerator-type TYPE   e.g. v4-8, v4-32, v5litepod-16 (required by create).
  --version VERSION         TPU software version (default: tpu-ubuntu2204-base, for v4;
                            v2-alpha-tpuv5-lite for v5e, v2-alpha-tpuv5 for v5p,
                            v2-alpha-tpuv6e for v6e).
  --spot                    Create a Spot VM (cheaper, can be preempted).
  --slices N                N slices of --accelerator-type joined by the data-centre network
                            (Multislice): created as one queued resource of N nodes NAME-0 ..
                            NAME-(N-1); the step is data parallel within and across them
                            (default: 1, one TPU VM named NAME).
  --no-compile-check        Skip the compile check below.
  --source DIR              install: copy this local checkout to every worker (scp).
  --repo-url URL            install: git clone URL on every worker instead of --source.
  --ref REF                 install: branch or tag to clone with --repo-url.
  --python-version X.Y      install: Python for the remote venv (default: 3.12).
  --bucket GS_URL           copy-data: gs:// folder holding the TFRecords and gt_valid.mat.
  --config PATH             run: config file, relative to the repository root (required by run).
  --workdir DIR             run: output folder; use gs://... on a multi-host slice so every
                            host writes the same checkpoint (required by run).
  --data DIR                run: records folder (default: $HOME/okdhp_data on each worker,
                            where copy-data puts it; may be gs://...).
  --eval-annotations PATH   run: evaluation annotations (default: DATA/gt_valid.mat).
  --background              run: detach the job with nohup (log: ~/okdhp_run.log on each worker).
  --dry-run                 Print the commands, one per line prefixed by `+ `, run nothing.
  -h, --help                Show this help.

Arguments after `--` go to okdhp_jax.main unchanged, e.g. -- --config.train.num_epochs=10

Compile check: before create or run (with --dry-run too), the train step of --config (with the
--config.* arguments after `--`) is compiled here for the slice --accelerator-type names
(python -m okdhp_jax.tools.tpu_program --check; needs the tpu-aot extra, no TPU). A global
batch that does not divide over the chips or does not fit their memory is refused in one line
that names the batch that fits, before any VM exists. Without libtpu the check is skipped
with a note. $OKDHP_PYTHON picks the Python (default: python3).
EOF
}

SCRIPT_NAME=tpu_vm.sh
# shellcheck source=launch/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need() {  # need VALUE OPTION STEP
  [[ -n "$1" ]] || die_usage "$2 is required by step $3"
}

steps_arg='' name='' zone='' project='' accelerator_type='' version='tpu-ubuntu2204-base'
spot=0 slices=1 compile_check=1 source_dir='' repo_url='' ref='' python_version='3.12' bucket='' config='' workdir=''
data='' eval_annotations='' background=0
main_args=()

while (( $# )); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) dry_run=1 ;;
    --spot) spot=1 ;;
    --background) background=1 ;;
    --no-compile-check) compile_check=0 ;;
    --step|--name|--zone|--project|--accelerator-type|--version|--source|--repo-url|--ref|\
    --python-version|--bucket|--config|--workdir|--data|--eval-annotations|--slices)
      (( $# >= 2 )) || die_usage "$1 needs a value"
      case "$1" in
        --step) steps_arg="$2" ;;
        --name) name="$2" ;;
        --zone) zone="$2" ;;
        --project) project="$2" ;;
        --accelerator-type) accelerator_type="$2" ;;
        --version) version="$2" ;;
        --source) source_dir="$2" ;;
        --repo-url) repo_url="$2" ;;
        --ref) ref="$2" ;;
        --python-version) python_version="$2" ;;
        --bucket) bucket="$2" ;;
        --config) config="$2" ;;
        --workdir) workdir="$2" ;;
        --data) data="$2" ;;
        --eval-annotations) eval_annotations="$2" ;;
        --slices) slices="$2" ;;
      esac
      shift ;;
    --) shift; main_args=("$@"); break ;;
    *) die_usage "unknown option $1" ;;
  esac
  shift
done

# ---------------------------------------------------------------- validation
[[ -n "$steps_arg" ]] || die_usage "--step is required (create, install, copy-data, run, delete or all)"
need "$name" --name "${steps_arg}"
need "$zone" --zone "${steps_arg}"

steps=()
IFS=',' read -r -a requested <<< "$steps_arg"
for step in "${requested[@]}"; do
  case "$step" in
    all) steps+=("${ALL_STEPS[@]}") ;;
    create|install|copy-data|run|delete) steps+=("$step") ;;
    *) die_usage "--step: unknown step '$step' (create, install, copy-data, run, delete, all)" ;;
  esac
done
has_step() { local s; for s in "${steps[@]}"; do [[ "$s" == "$1" ]] && return 0; done; return 1; }

if has_step create; then
  need "$accelerator_type" --accelerator-type create
  need "$version" --version create
fi
if has_step install; then
  if [[ -z "$source_dir" && -z "$repo_url" ]]; then
    die_usage "--source or --repo-url is required by step install"
  fi
  if [[ -n "$source_dir" && -n "$repo_url" ]]; then
    die_usage "--source and --repo-url exclude each other"
  fi
  if [[ -n "$source_dir" && ! -f "$source_dir/pyproject.toml" ]]; then
    die_usage "--source $source_dir is not an okdhp_jax checkout (no pyproject.toml)"
  fi
fi
if has_step copy-data; then
  need "$bucket" --bucket copy-data
  [[ "$bucket" == gs://* ]] || die_usage "--bucket must be a gs:// URL, got '$bucket'"
fi
if has_step run; then
  need "$config" --config run
  need "$workdir" --workdir run
  if (( background )) && has_step delete; then
    die_usage "--background with step delete would delete the VM while the job runs"
  fi
fi

[[ "$slices" =~ ^[1-9][0-9]*$ ]] || die_usage "--slices must be a positive whole number, got '$slices'"

gcloud_scope=(--zone="$zone")
[[ -n "$project" ]] && gcloud_scope+=(--project="$project")

# The TPU VMs: NAME, or the queued resource's nodes NAME-0 .. NAME-(N-1) with --slices N.
nodes() {
  if (( slices == 1 )); then echo "$name"; else local i; for (( i = 0; i < slices; i++ )); do
    echo "$name-$i"; done; fi
}

on_all_workers() {  # on_all_workers REMOTE_COMMAND_STRING
  local node
  for node in $(nodes); do
    run gcloud compute tpus tpu-vm ssh "$node" "${gcloud_scope[@]}" --worker=all --command="$1"
  done
}

# Compiles the step for the slice here and refuses a batch that does not divide or fit.
check_compiles() {
  (( compile_check )) && [[ -n "$accelerator_type" && -n "$config" ]] || return 0
  local python="${OKDHP_PYTHON:-python3}"
  if ! "$python" -c 'import libtpu' 2>/dev/null; then
    echo "$SCRIPT_NAME: note: compile check skipped: $python has no libtpu" \
      "(pip install 'okdhp_jax[tpu-aot]'; --no-compile-check silences this)" >&2
    return 0
  fi
  local overrides=() arg verdict errors
  for arg in "${main_args[@]}"; do [[ "$arg" == --config.* ]] && overrides+=("$arg"); done
  echo "$SCRIPT_NAME: compiling $config for $slices x $accelerator_type (tools/tpu_program)..." >&2
  errors="$(mktemp)"
  # The verdict is the tool's last line on stdout; libtpu's notices go to stderr, kept for an
  # error, where the search for a batch that fits also says each compile (minutes each): those
  # lines are shown as they come.
  local status=0
  verdict="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && "$python" -m okdhp_jax.tools.tpu_program \
      --check --accelerator-type "$accelerator_type" --slices "$slices" --config "$config" \
      "${overrides[@]}" 2> >(tee "$errors" | grep --line-buffered '^  batch ' >&2))" || status=$?
  if (( status )); then
    [[ -n "$verdict" ]] || verdict="$(grep -v -E '^(WARNING|[IWE][0-9]{4} )' "$errors")"
    rm -f "$errors"
    echo "$SCRIPT_NAME: error: $(tail -n 1 <<< "$verdict")" >&2
    exit 1
  fi
  rm -f "$errors"
  echo "$SCRIPT_NAME: $(tail -n 1 <<< "$verdict")" >&2
}

# ---------------------------------------------------------------- steps
step_create() {
  local cmd=(gcloud compute tpus tpu-vm create "$name" "${gcloud_scope[@]}"
             --accelerator-type="$accelerator_type" --version="$version")
  if (( slices > 1 )); then  # Multislice: one queued resource, its nodes named NAME-i.
    cmd=(gcloud compute tpus queued-resources create "$name" "${gcloud_scope[@]}"
         --accelerator-type="$accelerator_type" --runtime-version="$version"
         --node-count="$slices" --node-prefix="$name")
  fi
  (( spot )) && cmd+=(--spot)
  run "${cmd[@]}"
}

step_install() {
  if [[ -n "$source_dir" ]]; then
    local tarball="${TMPDIR:-/tmp}/okdhp_jax_src_${name}.tar.gz"
    # Local edits travel too (unlike `git archive`); build outputs and envs stay behind.
    local source_abs
    source_abs="$(cd "$source_dir" && pwd)"
    run tar -czf "$tarball" --exclude=.git --exclude=.venv --exclude=venv \
      --exclude=__pycache__ --exclude='*.egg-info' --exclude=.pytest_cache \
      -C "$source_abs" .
    local node
    for node in $(nodes); do
      run gcloud compute tpus tpu-vm scp "$tarball" "$node:$REMOTE_TARBALL" \
        "${gcloud_scope[@]}" --worker=all
    done
    on_all_workers "rm -rf $REMOTE_CODE && mkdir -p $REMOTE_CODE && tar -xzf $REMOTE_TARBALL -C $REMOTE_CODE && rm $REMOTE_TARBALL"
  else
    local clone=(git clone --depth 1)
    [[ -n "$ref" ]] && clone+=(--branch "$ref")
    on_all_workers "rm -rf $REMOTE_CODE && $(quote_all "${clone[@]}" "$repo_url") $REMOTE_CODE"
  fi
  # uv brings its own Python build, so the image's Python version does not matter. Old pip
  # ignores PIP_BREAK_SYSTEM_PACKAGES; new pip needs it on images with an externally managed
  # system Python.
  on_all_workers "PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --user --upgrade uv \
&& python3 -m uv venv --seed --allow-existing --python $(quote_all "$python_version") $REMOTE_VENV \
&& cd $REMOTE_CODE && python3 -m uv pip install --python $REMOTE_VENV/bin/python -e . 'jax[tpu]'"
}

step_copy_data() {
  on_all_workers "mkdir -p $REMOTE_DATA && gcloud storage rsync --recursive $(quote_all "${bucket%/}") $REMOTE_DATA"
}

step_run() {
  local records annotations
  if [[ -n "$data" ]]; then records="$(quote_all "${data%/}")"; else records="$REMOTE_DATA"; fi
  if [[ -n "$eval_annotations" ]]; then
    annotations="$(quote_all "$eval_annotations")"
  else
    annotations="$records/gt_valid.mat"
  fi
  # --distributed=on: jax finds the slice's hosts through the TPU metadata server, which the
  # main program cannot see from the environment of an ssh session.
  local train="$REMOTE_VENV/bin/python -m okdhp_jax.main $(quote_all --config "$config" \
    --workdir "$workdir" --distributed=on)"
  train+=" --config.data.records_dir=$records --config.data.eval_annotations=$annotations"
  (( ${#main_args[@]} )) && train+=" $(quote_all "${main_args[@]}")"
  if (( background )); then
    train="nohup $train > \"\$HOME\"/okdhp_run.log 2>&1 < /dev/null &"
  fi
  on_all_workers "cd $REMOTE_CODE && $train"
}

step_delete() {
  if (( slices > 1 )); then
    run gcloud compute tpus queued-resources delete "$name" "${gcloud_scope[@]}" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$name" "${gcloud_scope[@]}" --quiet
  fi
}

if has_step run && [[ "$workdir" != gs://* ]]; then
  echo "tpu_vm.sh: note: --workdir is not gs://; on a multi-host slice every host needs the" \
    "same workdir for checkpoints, so prefer gs://BUCKET/..." >&2
fi

if has_step create || has_step run; then
  check_compiles
fi

for step in "${steps[@]}"; do
  case "$step" in
    create) step_create ;;
    install) step_install ;;
    copy-data) step_copy_data ;;
    run) step_run ;;
    delete) step_delete ;;
  esac
done

#!/usr/bin/env bash
# A lent GPU's benchmark (issue 35), in priority order within a time budget: bench_step rows,
# one profiled run, the released PyTorch networks, the GPU's own compiled program; one folder.
#
# Each step runs in its own process and keeps what it measured as soon as it finishes, so a
# step skipped for lack of time, or killed when the budget ends, leaves earlier results intact.
# Back on a CPU machine: python -m okdhp_jax.tools.gpu_report RESULTS --readme README.md
set -uo pipefail

readonly REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The best XLA flag set from counting the GPU program on a CPU (README, "The GPU program,
# counted on a CPU"; issue 35): every kernel goes into a CUDA graph, 1,067 host launches per
# OKDHP-HG4 step instead of 1,542 on the H100 description. Change it when a better set is found.
BEST_XLA_FLAGS='--xla_gpu_graph_min_graph_size=1'
# Keeps CUDA graphs on while the profiler traces: XLA otherwise runs them op by op then, and a
# profile overstates an unprofiled step's launches.
PROFILE_XLA_FLAGS='--xla_enable_command_buffers_during_profiling=true'
# Python packages a lent GPU lacks, carried as wheels in .whl/ (see --help). TensorFlow is too
# large to carry and nothing measured here imports it: the pipeline and the training loop load
# it on first use.
WHEELS='ml_collections==1.1.0 clu==0.0.12 pycocotools==2.0.11'

# Seconds each step is expected to take on an H100 or H200: starting Python and JAX, building
# the state, the first call (trace, compile, cuDNN autotuning; H200, 2026-11-27: 158 s for
# OKDHP-HG4 and 69 s for HG4 at batch 64), then the timed steps. Once the first row has run,
# later estimates are scaled by how long it took against its estimate.
declare -A ESTIMATE=([okdhp_b64]=200 [okdhp_b64_convs]=200 [okdhp_b64_flags]=200
                     [hg4_b64]=110 [okdhp_b128]=240 [profile]=220 [torch_bf16]=90
                     [torch_f32]=90 [program]=200 [okdhp_b64_keep]=200)
STEPS=(okdhp_b64 okdhp_b64_convs okdhp_b64_flags hg4_b64 okdhp_b128 profile torch_bf16
       torch_f32 program okdhp_b64_keep)
# Seconds kept back at the end for the report and the trace's archive, and expected for the
# first look at the machine (importing JAX, PyTorch and the library).
RESERVE=20 ENV_ESTIMATE=20

usage() {
  cat <<EOF
Usage: launch/gpu_benchmark.sh [--budget SECONDS] [--out DIR] [--only STEP,...] [--dry-run]
                               [--estimate STEP=SECONDS ...] [--cpu-smoke] [--python BIN]

Measures, each step in its own process and in this order while the budget lasts (a step whose
estimate does not fit in the time left is skipped with a line saying so; a running step is
stopped when the budget ends):
  okdhp_b64        bench_step: OKDHP-HG4 (configs/hg4.py) bfloat16, global batch 64
  okdhp_b64_convs  the same as the program was before its GPU choices: branches one by one,
                   1x1 convs as cuDNN convolutions, inputs of convolutions kept, the state per
                   array (config.model.hourglass.fuse_branches, .pointwise_matmul, .remat and
                   config.train.flat_state=never): whether those defaults are faster
  okdhp_b64_flags  the same with XLA_FLAGS=$BEST_XLA_FLAGS
  hg4_b64          bench_step: HG4 (configs/hg4_baseline.py) bfloat16, global batch 64
  okdhp_b128       bench_step: OKDHP-HG4 bfloat16, global batch 128
  profile          OKDHP-HG4 bfloat16 b64 profiled, CUDA graphs kept on while tracing
                   ($PROFILE_XLA_FLAGS), then profile_summary
  torch_bf16       bench_torch: the released PyTorch networks under bfloat16 autocast with
                   channels_last, global batch 64 (JAX's times from okdhp_b64 and hg4_b64)
  torch_f32        bench_torch: the same in float32
  program          gpu_program --gpu local: OKDHP-HG4 bfloat16 b64 compiled for this GPU
  okdhp_b64_keep   bench_step: OKDHP-HG4 bfloat16 b64 with bottlenecks that keep their
                   convolutions' inputs (config.model.hourglass.remat=never): what the default's
                   7 GiB less memory costs in time

Everything goes into one folder: log.txt (all output), run.jsonl (the machine, then each
step's status and seconds), rows.jsonl (bench_step rows), torch.jsonl, program_local.json,
profile_summary.txt and trace.tar.gz (the trace, when under 15 MiB). A folder that holds
rows.jsonl already keeps those rows: bench_step does not measure them again.

Options:
  --budget SECONDS   time for all steps (default 480: with a machine's start, 9 minutes).
  --out DIR          the results folder (default: \$OUT when set, else ./gpu_results).
  --only STEP,...    run only these steps (still in the order above).
  --estimate STEP=SECONDS  what a step is expected to take (repeatable; defaults at the top
                     of this script, e.g. from an earlier lease's run.jsonl).
  --dry-run          print each step with its estimate, the time left and its commands
                     (\`+ cmd\`, shell-quoted), assuming each step takes its estimate; run nothing.
  --cpu-smoke        the same pipeline on this CPU with tiny configs (hg2 at runlocal size,
                     batch 8, 1-2 steps; the program for the described H100) to test the
                     plumbing.
  --python BIN       the Python that runs everything (default: python3).
  -h, --help         show this help.

A lent GPU lacks $WHEELS.
Once, here, in the repository's root (Python 3.12 wheels, x86-64):
  echo /.whl/ >> .git/info/exclude
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \\
    --platform manylinux2014_x86_64 -d .whl $WHEELS
The script installs whatever .whl/ holds (pip install --no-index --target) before it starts.
EOF
}

SCRIPT_NAME=gpu_benchmark.sh
# shellcheck source=launch/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

budget=480 out="${OUT:-}" only='' cpu_smoke=0 python_bin='python3' estimates=()
while (( $# )); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) dry_run=1 ;;
    --cpu-smoke) cpu_smoke=1 ;;
    --budget|--out|--only|--python|--estimate)
      (( $# >= 2 )) || die_usage "$1 needs a value"
      case "$1" in
        --budget) budget="$2" ;;
        --estimate) estimates+=("$2") ;;
        --out) out="$2" ;;
        --only) only="$2" ;;
        --python) python_bin="$2" ;;
      esac
      shift ;;
    *) die_usage "unknown option $1" ;;
  esac
  shift
done
[[ "$budget" =~ ^[0-9]+$ ]] || die_usage "--budget must be a whole number of seconds, got '$budget'"
if [[ -n "$only" ]]; then
  IFS=',' read -r -a chosen <<<"$only"
  for name in "${chosen[@]}"; do
    [[ -n "${ESTIMATE[$name]:-}" ]] || die_usage "--only: no step '$name' (steps: ${STEPS[*]})"
  done
  STEPS=($(for name in "${STEPS[@]}"; do [[ ",$only," == *",$name,"* ]] && echo "$name"; done))
fi
out="${out:-gpu_results}"
[[ "$out" == /* ]] || out="$PWD/$out"

# What the steps measure: full size on a GPU, tiny on this CPU for --cpu-smoke.
if (( cpu_smoke )); then
  okdhp='configs/hg2.py:runlocal' hg4='configs/hg2_baseline.py:runlocal'
  okdhp_convs='configs/hg2.py:runlocal,fuse_branches=never,pointwise_matmul=never,remat=never,flat_state=never'
  okdhp_keep='configs/hg2.py:runlocal,remat=never'
  batch=8 big_batch=16 steps=2 warmup=1 torch_steps=1 torch_warmup=1
  torch_device=cpu program_gpu=h100
  for name in "${!ESTIMATE[@]}"; do ESTIMATE[$name]=60; done
  ESTIMATE[torch_bf16]=30 ESTIMATE[torch_f32]=30
  export JAX_PLATFORMS=cpu
else
  okdhp='configs/hg4.py' hg4='configs/hg4_baseline.py'
  okdhp_convs='configs/hg4.py:fuse_branches=never,pointwise_matmul=never,remat=never,flat_state=never'
  okdhp_keep='configs/hg4.py:remat=never'
  batch=64 big_batch=128 steps=20 warmup=3 torch_steps=20 torch_warmup=5
  torch_device=cuda program_gpu=local
fi
for item in "${estimates[@]}"; do
  name="${item%%=*}" seconds="${item#*=}"
  [[ -n "${ESTIMATE[$name]:-}" ]] || die_usage "--estimate $item: no step '$name' (steps: ${STEPS[*]})"
  [[ "$seconds" =~ ^[0-9]+$ ]] || die_usage "--estimate $item: seconds must be a whole number"
  ESTIMATE[$name]=$seconds
done
export PYTHONUNBUFFERED=1
cd "$REPO_ROOT" || exit 1

if (( dry_run )); then
  tmp="${TMPDIR:-/tmp}/okdhp_gpu_benchmark.DRYRUN"
else
  mkdir -p "$out" || die_usage "--out $out cannot be made"
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/okdhp_gpu_benchmark.XXXXXX")"
fi
log="$out/log.txt" run_record="$out/run.jsonl" rows="$out/rows.jsonl"
start=$SECONDS simulated=0 scale_pct=100 failures=0 dry_prefix=''

say() {
  if (( dry_run )); then echo "$*"; else echo "[gpu_benchmark $(( SECONDS - start ))s] $*" | tee -a "$log"; fi
}

# Seconds left for steps (the budget less what has gone, less the reserve).
time_left() {
  local spent=$(( dry_run ? simulated : SECONDS - start ))
  echo $(( budget - spent - RESERVE ))
}

# cmd [--save FILE] ARGV...: prints `+ argv`; unless --dry-run, runs it under a timeout at the
# budget's end (or after $fixed_limit seconds) with its output in the log (and in FILE).
# Returns its status (124: timed out).
cmd() {
  local save=''
  if [[ "$1" == --save ]]; then save="$2"; shift 2; fi
  if (( dry_run )); then
    echo "${dry_prefix}+ $(quote_all "$@")${save:+ > $(quote_all "$save")}"
    return 0
  fi
  local limit="${fixed_limit:-$(time_left)}"
  echo "+ $(quote_all "$@")" | tee -a "$log" >&2
  if (( limit < 5 )); then
    say "no time left for this command"
    return 124
  fi
  if [[ -n "$save" ]]; then
    timeout -k 10 "$limit" "$@" 2>>"$log" | tee "$save" | tee -a "$log"
  else
    timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$log"
  fi
  return "${PIPESTATUS[0]}"
}

# record STEP STATUS SECONDS ESTIMATE NOTE: one line of run.jsonl.
record() {
  (( dry_run )) && return 0
  printf '{"step": "%s", "status": "%s", "seconds": %d, "estimate": %d, "note": "%s"}\n' \
    "$1" "$2" "$3" "$4" "${5//\"/\'}" >>"$run_record"
}

bench() {  # bench XLA_FLAGS CONFIG BATCH [bench_step args...]
  local flags="$1" config="$2" rows_batch="$3"; shift 3
  cmd env "XLA_FLAGS=$flags" "$python_bin" -m okdhp_jax.tools.bench_step --config "$config" \
    --dtype bfloat16 --batch "$rows_batch" --steps "$steps" --warmup "$warmup" \
    --results "$rows" "$@"
}

step_okdhp_b64() { bench '' "$okdhp" "$batch"; }
step_okdhp_b64_convs() { bench '' "$okdhp_convs" "$batch"; }
step_okdhp_b64_keep() { bench '' "$okdhp_keep" "$batch"; }
step_okdhp_b64_flags() { bench "$BEST_XLA_FLAGS" "$okdhp" "$batch"; }
step_hg4_b64() { bench '' "$hg4" "$batch"; }
step_okdhp_b128() { bench '' "$okdhp" "$big_batch"; }

step_profile() {
  # Few timed steps: the row's point is the trace (bench_step traces 3 steps after them).
  cmd env "XLA_FLAGS=$PROFILE_XLA_FLAGS" "$python_bin" -m okdhp_jax.tools.bench_step \
    --config "$okdhp" --dtype bfloat16 --batch "$batch" --steps 5 --warmup 2 \
    --profile "$tmp/profile" --results "$rows" || return
  cmd --save "$out/profile_summary.txt" "$python_bin" -m okdhp_jax.tools.profile_summary \
    "$tmp/profile" --steps 3 || return
  cmd tar -czf "$out/trace.tar.gz" -C "$tmp" profile || return
  (( dry_run )) && return 0
  # What comes back from a lent GPU is at most 16 MiB a file.
  if (( $(stat -c %s "$out/trace.tar.gz") > 15 * 1024 * 1024 )); then
    say "trace.tar.gz is over 15 MiB and is left out (the summary is in profile_summary.txt)"
    rm -f "$out/trace.tar.gz"
  fi
}

torch_rows() {  # torch_rows DTYPE [bench_torch args...]
  local dtype="$1"; shift
  local jax_results=()
  if (( dry_run )) || [[ -f "$rows" ]]; then jax_results=(--jax-results "$rows"); fi
  # JAX is imported there, never started; were it started, it must leave the GPU to PyTorch.
  cmd env XLA_FLAGS= XLA_PYTHON_CLIENT_PREALLOCATE=false "$python_bin" \
    -m okdhp_jax.tools.bench_torch --device "$torch_device" --config "$okdhp" --config "$hg4" \
    --batch "$batch" --dtype "$dtype" --steps "$torch_steps" --warmup "$torch_warmup" \
    --torch-only "${jax_results[@]}" --json "$out/torch.jsonl" "$@"
}

step_torch_bf16() { torch_rows bfloat16 --channels-last; }
step_torch_f32() { torch_rows float32; }

step_program() {
  cmd env XLA_FLAGS= "$python_bin" -m okdhp_jax.tools.gpu_program --config "$okdhp" \
    --batch "$batch" --dtype bfloat16 --gpu "$program_gpu" --json "$out/program_local.json"
}

# Wheels from .whl/ (not for --cpu-smoke: they are for the lent GPU's Python), and the
# TensorFlow stand-in where TensorFlow is missing (always for --cpu-smoke, as on a lent GPU).
prepare_python() {
  local wheels=("$REPO_ROOT"/.whl/*.whl)
  if [[ -e "${wheels[0]}" ]] && (( ! cpu_smoke )); then
    cmd "$python_bin" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target "$tmp/site" "${wheels[@]}" || return
    export PYTHONPATH="$tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
}

say "budget ${budget}s, results in $out$( (( cpu_smoke )) && echo ' (CPU smoke)')"
prepare_python || { say "error: the wheels in .whl/ could not be installed"; exit 1; }
(( ! dry_run )) && [[ -n "${PYTHONPATH:-}" ]] && say "PYTHONPATH=$PYTHONPATH"
cmd "$python_bin" launch/gpu_benchmark_env.py "$run_record"
status=$? simulated=$ENV_ESTIMATE
if (( status )); then
  say "error: the benchmarks cannot start here (above); nothing was measured"
  exit 1
fi

total=${#STEPS[@]} number=0
for name in "${STEPS[@]}"; do
  number=$(( number + 1 ))
  estimate=$(( ESTIMATE[$name] * scale_pct / 100 ))
  (( estimate < 1 )) && estimate=1
  left=$(time_left)
  label="step $number/$total $name"
  if (( estimate > left || left < 5 )); then
    say "$label: skipped: needs ~${estimate}s, ${left}s left"
    record "$name" skipped 0 "$estimate" "needs ~${estimate}s, ${left}s left"
    if (( dry_run )); then  # what it would have run, commented out
      dry_prefix='# ' "step_$name"
    fi
    continue
  fi
  say "$label: ~${estimate}s of ${left}s left"
  began=$SECONDS
  "step_$name"
  status=$?
  took=$(( SECONDS - began ))
  if (( dry_run )); then
    simulated=$(( simulated + estimate ))
    continue
  fi
  if (( status == 0 )); then
    result=ran
    # OKDHP-HG4's first row sets the pace: how long this machine takes against the estimate.
    if [[ "$name" == okdhp_b64 ]]; then
      scale_pct=$(( took * 100 / estimate ))
      (( scale_pct < 40 )) && scale_pct=40
      (( scale_pct > 250 )) && scale_pct=250
    fi
  elif (( status == 124 || status == 137 )); then
    result=timeout
  else
    result=failed failures=$(( failures + 1 ))
  fi
  say "$label: $result after ${took}s$( (( status )) && echo " (exit $status)")"
  record "$name" "$result" "$took" "$estimate" "$( (( status )) && echo "exit $status")"
done

if (( dry_run )); then
  cmd "$python_bin" -m okdhp_jax.tools.gpu_report "$out"
  exit 0
fi
say "all steps done after $(( SECONDS - start ))s; the report:"
fixed_limit=$RESERVE cmd "$python_bin" -m okdhp_jax.tools.gpu_report "$out"
rm -rf "$tmp"
(( failures == 0 ))

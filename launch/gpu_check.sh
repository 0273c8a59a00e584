#!/usr/bin/env bash
# GPU box check, one command, one JSON, at most --budget seconds (default 600):
#
#   launch/gpu_check.sh [--out DIR] [--skip-install] [--budget SECONDS] [--max-steps N] [--n N]
#                       [--vllm-venv DIR] [--only STEP,...] [--dry-run]
#
# Steps (each ok / failed / skipped in the JSON, with its seconds, commands, error tail, figures):
#   install_torch_cuda  PyPI's torch==<requirements.txt pin> (the CUDA build) over the CPU wheel
#                       (nothing to do when torch already is a CUDA build)
#   install_gpu_extra   the `gpu` extra of pyproject.toml (flash-attn, deepspeed), --no-build-isolation
#   install_vllm        vllm==<requirements-gpu.txt pin> in its own venv (--vllm-venv, default .venv-vllm)
#   setup_run           a synthetic run dir as demo.yml's first stages: dataset_builders synth ->
#                       aireadi cohort -> eval.classifier -> dataset_builders pairs
#   model_8b            a random-init model of the Llama-3.1-8B architecture (bf16, ~16 GB) with the
#                       real Llama-3.1 tokenizer (python -m launch.gpu_check model; reused when present)
#   train_qlora         recipes/llama31.yml through launch.train on it: QLoRA NF4, --max-steps (10);
#                       peak GPU memory (torch.cuda.max_memory_allocated, nvidia-smi) and tokens/s
#                       (all token slots, and trained tokens only)
#   generate_hf         --n (50) CFs, eval.generate --backend hf --device cuda with the adapter
#   generate_vllm       the same through launch/vllm_serve.sh + eval.generate --backend openai
#                       (s/CF, parse rate, validity for both)
# A failed step does not stop the check; a step whose input failed is skipped, and so is every
# step once the budget is spent. --only runs the steps named (the others are skipped and taken
# as done: e.g. --only generate_hf,generate_vllm again on the same DIR). The install steps take
# minutes (downloads; flash-attn compiles from source when no prebuilt wheel matches torch): give
# a first run a larger --budget, or run again with --skip-install.
#
# Writes (DIR: --out, else $OUT, else runs/gpu_check): DIR/gpu_check.json (the summary),
# DIR/steps/<step>.json, DIR/logs/<step>.log, DIR/run/ (the run dir), DIR/models/llama31-8b/.
# Exit code 0 when no step failed, 1 otherwise, 2 for bad arguments. --dry-run prints each
# step's commands and runs nothing.
#
# Environment: PYTHON (default .venv/bin/python), INSTALLER (uv when .venv/bin/uv exists, else pip),
# VLLM_ARGS (extra `vllm serve` arguments, default --enforce-eager: a shorter start),
# WANDB_MODE (default disabled), HF_HUB_OFFLINE (default 1: every model here is a local folder).
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
REPO=$(cd "$(dirname "$SELF")/.." && pwd)

STEPS=(install_torch_cuda install_gpu_extra install_vllm setup_run model_8b train_qlora generate_hf generate_vllm)
# Seconds each step may take at most (and never more than the budget left).
declare -A CAP=([install_torch_cuda]=300 [install_gpu_extra]=300 [install_vllm]=300 [setup_run]=120
                [model_8b]=180 [train_qlora]=300 [generate_hf]=180 [generate_vllm]=300)
declare -A NEEDS=([train_qlora]="setup_run model_8b" [generate_hf]="train_qlora" [generate_vllm]="train_qlora")
GPU_STEPS=" model_8b train_qlora generate_hf generate_vllm "
MIN_STEP=30  # a step is not started with less budget left
RESERVE=40   # seconds of the budget kept for killing a step at its limit, the records and the summary

usage() { sed -n '2,/^set -euo pipefail/p' "$SELF" | sed '$d' | sed -E 's/^# ?//'; }

# --- helpers (the parent and the step processes) ----------------------------------------------
q() {  # the words, quoted for a shell where needed ('...', as Python's shlex.quote)
  local w out=() sq="'" esc="'\"'\"'"
  for w in "$@"; do
    if [[ -n $w && $w =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
      out+=("$w")
    else
      out+=("'${w//$sq/$esc}'")
    fi
  done
  echo "${out[*]}"
}

x() {  # print a command (the log's `+ ` lines are the step's commands in the JSON); run it unless dry
  echo "+ $(q "$@")"
  [[ $GC_DRY_RUN == 1 ]] || "$@"
}

pip_install() {  # PYTHON ARGS...: install into PYTHON's environment with uv or pip
  local py=$1
  shift
  if [[ $GC_INSTALLER == uv ]]; then
    x "$GC_UV" pip install --python "$py" "$@"
  else
    x "$py" -m pip install "$@"
  fi
}

now_us() {
  local t=$EPOCHREALTIME
  echo "${t//[.,]/}"
}

since() {  # START_US -> seconds since, 3 decimals
  local us=$(($(now_us) - $1))
  printf '%d.%03d' $((us / 1000000)) $(((us / 1000) % 1000))
}

phase() {  # NAME START_US: a timed part of the step, read back by `launch.gpu_check record`
  [[ $GC_DRY_RUN == 1 ]] && return 0
  echo "$1 $(since "$2")" >>"$GC_OUT/logs/$GC_STEP.phases"
}

# --- the steps (each runs in its own bash, under `timeout`, output to DIR/logs/<step>.log) -----
step_install_torch_cuda() {
  if [[ $GC_DRY_RUN != 1 ]] && "$GC_PY" -m launch.gpu_check cuda --build-only; then
    echo "torch is a CUDA build already: nothing to install"
  else
    [[ $GC_DRY_RUN != 1 ]] || echo "# only when torch is not a CUDA build yet:"
    if [[ $GC_INSTALLER == uv ]]; then
      x "$GC_UV" pip install --python "$GC_PY" --reinstall-package torch "torch==$GC_TORCH_VERSION" -c "$GC_CONSTRAINTS"
    else  # torch 2.13.0+cpu satisfies ==2.13.0: remove it first, or pip keeps it
      x "$GC_PY" -m pip uninstall -y torch
      x "$GC_PY" -m pip install "torch==$GC_TORCH_VERSION" -c "$GC_CONSTRAINTS"
    fi
  fi
  x "$GC_PY" -m launch.gpu_check cuda
}

step_install_gpu_extra() {
  local reqs
  mapfile -t reqs < <("$GC_PY" -m launch.gpu_check extra gpu || true)
  ((${#reqs[@]})) || { echo "error: no requirements in the gpu extra of pyproject.toml" >&2; return 1; }
  # flash-attn and deepspeed import torch to build: build them here (--no-build-isolation), with
  # their build tools present; -c keeps every other pin of requirements.txt (extras removed: pip
  # refuses them in a constraints file).
  pip_install "$GC_PY" -c "$GC_CONSTRAINTS" packaging psutil ninja wheel setuptools
  pip_install "$GC_PY" --no-build-isolation -c "$GC_CONSTRAINTS" "${reqs[@]}"
  x "$GC_PY" -m launch.gpu_check imports flash_attn deepspeed
}

step_install_vllm() {
  if [[ $GC_DRY_RUN == 1 || ! -x $GC_VLLM_VENV/bin/python ]]; then
    x "$GC_PY" -m venv "$GC_VLLM_VENV"
  fi
  pip_install "$GC_VLLM_VENV/bin/python" "vllm==$GC_VLLM_VERSION"
  x "$GC_VLLM_VENV/bin/vllm" --version
}

step_setup_run() {
  x rm -rf "$GC_RUN"
  x "$GC_PY" -m dataset_builders synth --participants 160 --days 2 --seed 0 --out "$GC_RUN/release" --force
  x "$GC_PY" -m dataset_builders aireadi --root "$GC_RUN/release" --out "$GC_RUN/cohort" \
    --demographics "$GC_RUN/release/controlled/demographics.tsv"
  x "$GC_PY" -m eval.classifier --run "$GC_RUN" --seed 0
  x "$GC_PY" -m dataset_builders pairs --run "$GC_RUN" --max-pairs 400 --seed 0
}

step_model_8b() {
  x "$GC_PY" -m launch.gpu_check model --out "$GC_MODEL"
}

step_train_qlora() {
  # paper.yml's finetune_llama31 with the stand-in as base model, NF4 spelled out, a few steps
  # logged one by one (Axolotl logs and resets the CUDA memory peak at each logging step).
  x "$GC_PY" -m launch.train recipes/llama31.yml --run "$GC_RUN" --accelerate-config launch/accelerate/single_gpu.yaml \
    --set "base_model=$GC_MODEL" --set adapter=qlora --set load_in_4bit=true \
    --set "bnb_config_kwargs={bnb_4bit_quant_type: nf4, bnb_4bit_use_double_quant: true}" \
    --set logging_steps=1 --max-steps "$GC_MAX_STEPS"
}

step_generate_hf() {
  local started
  started=$(now_us)
  x "$GC_PY" -m eval.generate --run "$GC_RUN" --backend hf --method llama31_ft_hf --protocol sensecf --n "$GC_N" \
    --seed 0 --model "$GC_MODEL" --adapter "$GC_ADAPTER" --device cuda --batch-size 32 --overwrite --quiet
  phase generate_command "$started"
}

SERVER_PID=
stop_server() {
  [[ -n $SERVER_PID ]] || return 0
  kill -TERM -- "-$SERVER_PID" 2>/dev/null || true
  local _
  for _ in $(seq 30); do
    kill -0 -- "-$SERVER_PID" 2>/dev/null || break
    sleep 1
  done
  kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

step_generate_vllm() {
  local vllm=$GC_VLLM_VENV/bin/vllm port started vargs
  read -ra vargs <<<"$GC_VLLM_ARGS"
  if [[ $GC_DRY_RUN == 1 ]]; then
    port=PORT
  else
    if [[ ! -x $vllm ]]; then
      echo "error: no vLLM at $vllm (run without --skip-install, or name --vllm-venv)" >&2
      return 1
    fi
    port=$("$GC_PY" -m launch.gpu_check free-port)
    VLLM_API_KEY=$("$GC_PY" -m launch.gpu_check api-key)
    export VLLM_API_KEY  # launch/vllm_serve.sh demands one; eval.generate sends it (--api-key-env)
    trap stop_server EXIT
    trap 'exit 143' TERM INT
  fi
  started=$(now_us)
  # in its own process group (setsid), so stopping it takes vLLM's engine processes along
  echo "+ $(q setsid env "VLLM_BIN=$vllm" "PORT=$port" launch/vllm_serve.sh "$GC_MODEL" "$GC_ADAPTER" --host 127.0.0.1 \
    "${vargs[@]}") >$(q "$GC_OUT/logs/vllm_server.log") 2>&1 &"
  if [[ $GC_DRY_RUN == 1 ]]; then
    SERVER_PID=SERVER_PID
  else
    setsid env "VLLM_BIN=$vllm" "PORT=$port" launch/vllm_serve.sh "$GC_MODEL" "$GC_ADAPTER" --host 127.0.0.1 \
      "${vargs[@]}" >"$GC_OUT/logs/vllm_server.log" 2>&1 &
    SERVER_PID=$!
    echo "$SERVER_PID" >"$GC_OUT/logs/vllm_server.pgid"
  fi
  x "$GC_PY" -m launch.gpu_check wait-http "http://127.0.0.1:$port/v1/models" --pid "$SERVER_PID" --timeout 400 \
    || { echo "--- tail of $GC_OUT/logs/vllm_server.log"; tail -n 40 "$GC_OUT/logs/vllm_server.log"; return 1; }
  phase vllm_server_start "$started"
  started=$(now_us)
  x "$GC_PY" -m eval.generate --run "$GC_RUN" --backend openai --method llama31_ft_vllm --protocol sensecf --n "$GC_N" \
    --seed 0 --base-url "http://127.0.0.1:$port/v1" --api-key-env VLLM_API_KEY --api-model sensecf --constraint regex \
    --concurrency 64 --overwrite --quiet
  phase generate_command "$started"
  [[ $GC_DRY_RUN == 1 ]] || echo "server log: $GC_OUT/logs/vllm_server.log"
}

# --- the parent: run each step, record it, then the summary -------------------------------------
record_args() {  # STEP -> REC: where `launch.gpu_check record` finds the step's figures
  REC=()
  case $1 in
    install_torch_cuda) REC=(--installed-python "$GC_PY" --packages torch) ;;
    install_gpu_extra) REC=(--installed-python "$GC_PY" --packages flash-attn,deepspeed,torch) ;;
    install_vllm)
      [[ ! -x $GC_VLLM_VENV/bin/python ]] || REC=(--installed-python "$GC_VLLM_VENV/bin/python"
                                                  --packages vllm,torch,transformers,xgrammar) ;;
    setup_run) REC=(--sft-dir "$GC_RUN/sft") ;;
    model_8b) REC=(--model-dir "$GC_MODEL") ;;
    train_qlora) REC=(--train-dir "$GC_ADAPTER") ;;
    generate_hf) REC=(--cfs "$GC_RUN/cfs/llama31_ft_hf+grammar.jsonl") ;;
    generate_vllm) REC=(--cfs "$GC_RUN/cfs/llama31_ft_vllm+grammar.jsonl") ;;
  esac
  [[ $GPU_STEPS != *" $1 "* ]] || REC+=(--smi "$GC_OUT/logs/$1.smi.csv")
  REC+=(--phases "$GC_OUT/logs/$1.phases")
}

record() {  # STEP STATUS [record options...]
  local name=$1 status=$2
  shift 2
  record_args "$name"
  "$GC_PY" -m launch.gpu_check record --out "$GC_OUT" --step "$name" --status "$status" "${REC[@]}" "$@" \
    || echo "warning: could not record step $name (the summary will count it as failed)" >&2
}

SMI_PID=
smi_start() {
  command -v nvidia-smi >/dev/null 2>&1 || return 0
  nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits -lms 500 >"$1" 2>/dev/null &
  SMI_PID=$!
}

smi_stop() {
  [[ -n $SMI_PID ]] || return 0
  kill "$SMI_PID" 2>/dev/null || true
  wait "$SMI_PID" 2>/dev/null || true
  SMI_PID=
}

cleanup_server() {  # a vLLM server a killed step left behind
  local file=$GC_OUT/logs/vllm_server.pgid
  [[ -f $file ]] || return 0
  kill -KILL -- "-$(cat "$file")" 2>/dev/null || true
  rm -f "$file"
}

STEP_PID=
on_signal() {
  echo "interrupted: stopping the running step" >&2
  [[ -z $STEP_PID ]] || kill -TERM -- "-$STEP_PID" 2>/dev/null || true
  sleep 2
  [[ -z $STEP_PID ]] || kill -KILL -- "-$STEP_PID" 2>/dev/null || true
  smi_stop
  cleanup_server
  summary || true
  exit 130
}

selected() { [[ -z $GC_ONLY || ",$GC_ONLY," == *",$1,"* ]]; }

declare -A STATUS=()
run_step() {
  local name=$1 log=$GC_OUT/logs/$1.log reason="" dep remaining limit start secs rc=0
  if ! selected "$name"; then
    reason="not in --only"
  elif [[ $GC_SKIP_INSTALL == 1 && $name == install_* ]]; then
    reason="--skip-install"
  fi
  for dep in ${NEEDS[$name]:-}; do
    if [[ -z $reason && ${STATUS[$dep]:-} != ok ]] && selected "$dep"; then
      reason="needs step $dep, which ${STATUS[$dep]:-did not run}"
    fi
  done
  remaining=$((GC_BUDGET - RESERVE - SECONDS))
  if [[ -z $reason && $remaining -lt $MIN_STEP ]]; then
    reason="budget spent: $((GC_BUDGET - SECONDS)) s of $GC_BUDGET s left"
  fi
  if [[ -n $reason ]]; then
    STATUS[$name]=skipped
    echo "== $name: skipped ($reason)"
    record "$name" skipped --reason "$reason"
    return 0
  fi
  limit=${CAP[$name]}
  ((limit <= remaining)) || limit=$remaining
  echo "== $name (at most $limit s) -> $log"
  rm -f "$GC_OUT/logs/$name".{phases,smi.csv}
  [[ $GPU_STEPS != *" $name "* ]] || smi_start "$GC_OUT/logs/$name.smi.csv"
  start=$(now_us)
  # timeout puts the step in its own process group and kills all of it at the limit
  GC_STEP=$name timeout --kill-after=20 "$limit" bash "$SELF" __step "$name" >"$log" 2>&1 &
  STEP_PID=$!
  wait "$STEP_PID" || rc=$?
  STEP_PID=
  secs=$(since "$start")
  smi_stop
  cleanup_server
  if ((rc == 0)); then STATUS[$name]=ok; else STATUS[$name]=failed; fi
  record "$name" "${STATUS[$name]}" --seconds "$secs" --exit-code "$rc" --limit-seconds "$limit" --log "$log"
  if ((rc != 0)); then
    tail -n 5 "$log" | sed 's/^/   | /'
  fi
}

summary() {
  local IFS=,
  "$GC_PY" -m launch.gpu_check summary --out "$GC_OUT" --steps "${STEPS[*]}" --started "$GC_STARTED" \
    --wall-seconds "$SECONDS" --option "budget_seconds=$GC_BUDGET" --option "max_steps=$GC_MAX_STEPS" \
    --option "n=$GC_N" --option "skip_install=$GC_SKIP_INSTALL" --option "only=$GC_ONLY" \
    --option "installer=$GC_INSTALLER" --option "python=$GC_PY" --option "vllm_venv=$GC_VLLM_VENV" \
    --option "vllm_args=$GC_VLLM_ARGS" --option "model=$GC_MODEL" --option "run=$GC_RUN"
}

# --- entry points ---------------------------------------------------------------------------------
if [[ ${1:-} == __step ]]; then  # one step, in its own process (set -e holds inside it)
  cd "$REPO"
  "step_$2"
  exit 0
fi

out=${OUT:-}
skip_install=0 dry_run=0 budget=600 max_steps=10 n=50 vllm_venv=$REPO/.venv-vllm only=""
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --out) out=${2:?--out needs a folder}; shift ;;
    --skip-install) skip_install=1 ;;
    --dry-run) dry_run=1 ;;
    --budget) budget=${2:?--budget needs seconds}; shift ;;
    --max-steps) max_steps=${2:?--max-steps needs a number}; shift ;;
    --n) n=${2:?--n needs a number}; shift ;;
    --vllm-venv) vllm_venv=${2:?--vllm-venv needs a folder}; shift ;;
    --only) only=${2:?--only needs step names}; shift ;;
    *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for v in budget max_steps n; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "error: --${v//_/-} must be a whole number, got '${!v}'" >&2; exit 2; }
done
for name in ${only//,/ }; do
  if [[ " ${STEPS[*]} " != *" $name "* ]]; then
    echo "error: --only: unknown step '$name' (steps: ${STEPS[*]})" >&2
    exit 2
  fi
done
out=${out:-$REPO/runs/gpu_check}
[[ $out == /* ]] || out=$PWD/$out
out=$(realpath -m "$out")
[[ $out != / ]] || { echo "error: --out /: name a folder of its own (it gets DIR/run, DIR/models)" >&2; exit 2; }
[[ $vllm_venv == /* ]] || vllm_venv=$PWD/$vllm_venv
cd "$REPO"

export GC_OUT=$out GC_RUN=$out/run GC_MODEL=$out/models/llama31-8b GC_DRY_RUN=$dry_run GC_SKIP_INSTALL=$skip_install
export GC_ONLY=$only GC_ADAPTER=$GC_RUN/checkpoints/llama31 GC_BUDGET=$budget GC_MAX_STEPS=$max_steps GC_N=$n
export GC_VLLM_VENV=$vllm_venv GC_CONSTRAINTS=$out/constraints.txt
export GC_PY=${PYTHON:-$REPO/.venv/bin/python} GC_UV=${UV:-$REPO/.venv/bin/uv} GC_VLLM_ARGS=${VLLM_ARGS---enforce-eager}
GC_INSTALLER=${INSTALLER:-}
[[ -n $GC_INSTALLER ]] || if [[ -x $GC_UV ]]; then GC_INSTALLER=uv; else GC_INSTALLER=pip; fi
GC_TORCH_VERSION=$(sed -n 's/^torch==\([^ #]*\).*/\1/p' requirements.txt | head -n1)
GC_VLLM_VERSION=$(sed -n 's/.*vllm==\([0-9][0-9A-Za-z.]*\).*/\1/p' requirements-gpu.txt | head -n1)
GC_STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
export GC_INSTALLER GC_TORCH_VERSION GC_VLLM_VERSION GC_STARTED
export AXOLOTL_DO_NOT_TRACK=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=${WANDB_MODE:-disabled}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
if [[ -z $GC_TORCH_VERSION || -z $GC_VLLM_VERSION ]]; then
  echo "error: no torch pin in requirements.txt or no vllm pin in requirements-gpu.txt" >&2
  exit 2
fi
[[ -x $GC_PY ]] || { echo "error: $GC_PY: no Python (make setup, or PYTHON=...)" >&2; exit 2; }

if [[ $GC_DRY_RUN == 1 ]]; then
  echo "gpu_check dry run: out $GC_OUT, budget $GC_BUDGET s, installer $GC_INSTALLER; nothing is run"
  for name in "${STEPS[@]}"; do
    if ! selected "$name"; then
      echo "== $name: skipped (not in --only)"
      continue
    fi
    if [[ $GC_SKIP_INSTALL == 1 && $name == install_* ]]; then
      echo "== $name: skipped (--skip-install)"
      continue
    fi
    echo "== $name (at most ${CAP[$name]} s${NEEDS[$name]:+; needs ${NEEDS[$name]}})"
    GC_STEP=$name "step_$name"
  done
  exit 0
fi

mkdir -p "$GC_OUT/logs" "$GC_OUT/steps"
rm -f "$GC_OUT"/steps/*.json "$GC_OUT/gpu_check.json"
"$GC_PY" -m launch.gpu_check constraints "$GC_CONSTRAINTS"  # the install steps' -c file
trap on_signal INT TERM
echo "gpu_check: out $GC_OUT, budget $GC_BUDGET s, installer $GC_INSTALLER"
for name in "${STEPS[@]}"; do
  run_step "$name"
done
rc=0
summary || rc=$?
exit "$rc"

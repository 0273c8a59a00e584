#!/usr/bin/env bash
# The plain path: `accelerate launch -m axolotl.cli.train RECIPE` with the project's environment
# (venv on PATH, Axolotl telemetry off). The recipe is used as written, with its runs/demo/
# paths; `python -m launch.train RECIPE --run RUN` resolves another run's paths instead.
#
#   launch/train.sh recipes/llama31.yml
#   launch/train.sh recipes/smollm2-cpu.yml --max_steps=5          # extra args: Axolotl overrides
#   ACCELERATE_CONFIG=launch/accelerate/multi_gpu_zero2.yaml \
#     launch/train.sh recipes/biomistral.yml --deepspeed=recipes/deepspeed/zero2.json
#
# Run it from the repository root (the recipes' paths are relative to it).
set -euo pipefail
recipe=${1:?usage: launch/train.sh RECIPE [--key=value ...]}
shift
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv_bin=${VENV_BIN:-$repo/.venv/bin}
export PATH="$venv_bin:$PATH" AXOLOTL_DO_NOT_TRACK=1

overrides=()
# The CPU recipe names the embedded model as ~/.cache/sensecf/...; $SENSECF_CACHE wins.
base=$(sed -n 's/^base_model: *//p' "$recipe" | head -n1)
prefix='~/.cache/sensecf/'
if [[ $base == "$prefix"* ]]; then
  dir="${SENSECF_CACHE:-$HOME/.cache/sensecf}/${base#"$prefix"}"
  [[ -f $dir/config.json ]] || "$venv_bin/python" -m sensecf.models setup --only smollm2
  overrides+=("--base_model=$dir")
  export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
fi

launcher=(accelerate launch)
if [[ -n ${ACCELERATE_CONFIG:-} ]]; then
  launcher+=(--config_file "$ACCELERATE_CONFIG")
fi
exec "${launcher[@]}" -m axolotl.cli.train "$recipe" "${overrides[@]}" "$@"

#!/usr/bin/env bash
# Merge a trained LoRA/QLoRA adapter into its base model: a plain HF folder for serving without
# LoRA support or for export. Uses the resolved recipe launch.train wrote next to the adapter.
#
#   launch/merge_lora.sh runs/demo/checkpoints/smollm2-cpu        # -> .../smollm2-cpu/merged/
#   launch/merge_lora.sh runs/exp1/checkpoints/llama31             # QLoRA: merged into 16-bit weights
#
# Axolotl's merge-lora reloads the base model unquantised (load_in_4bit off) before merging.
# vLLM can serve the adapter directly instead (--enable-lora); merging is optional.
set -euo pipefail
checkpoint=${1:?usage: launch/merge_lora.sh CHECKPOINT_DIR [extra axolotl merge-lora args]}
shift
recipe="$checkpoint/recipe.yml"
if [[ ! -f $recipe || ! -f $checkpoint/adapter_config.json ]]; then
  echo "error: $checkpoint needs recipe.yml and adapter_config.json (train with python -m launch.train)" >&2
  exit 1
fi
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="${VENV_BIN:-$repo/.venv/bin}:$PATH" AXOLOTL_DO_NOT_TRACK=1
if [[ -d $(sed -n 's/^base_model: *//p' "$recipe" | head -n1) ]]; then
  export HF_HUB_OFFLINE=1   # local base model: never wait on the hub
fi
exec axolotl merge-lora "$recipe" --lora-model-dir "$checkpoint" "$@"

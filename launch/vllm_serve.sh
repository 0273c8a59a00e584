#!/usr/bin/env bash
# Serve a fine-tuned LoRA adapter behind an OpenAI-compatible endpoint with vLLM, so
# `eval.generate --backend openai --constraint regex` can generate at scale across GPUs/nodes.
# vLLM pins its own torch: run it from its own environment (see requirements-gpu.txt).
#
#   launch/vllm_serve.sh meta-llama/Llama-3.1-8B-Instruct runs/demo/checkpoints/llama31
#   TP=2 DP=4 launch/vllm_serve.sh BioMistral/BioMistral-7B runs/demo/checkpoints/biomistral
#
# then, from the SenseCF environment (the served model name is the LoRA name, "sensecf"):
#   OPENAI_API_KEY=$VLLM_API_KEY python -m eval.generate --run runs/demo --backend openai \
#     --method llama31_ft --base-url http://HOST:8000/v1 --api-model sensecf --constraint regex \
#     --concurrency 64 [--allow-external-api for a real cohort on a remote host]
#
# Each request carries our whole-block regex as extra_body={"structured_outputs": {"regex": ...}}
# (the request-level guided_* fields were removed in vLLM 0.12). The structured-outputs backend
# is chosen per server, not per request: xgrammar here (vLLM's lm-format-enforcer backend fails
# with lm-format-enforcer 0.11.3 on vLLM >= 0.26; reference/constrained-decoding-notes.md B1).
#
# Environment: TP (tensor-parallel GPUs per replica, default 1), DP (data-parallel replicas,
# default 1), PORT (8000), VLLM_API_KEY (required: the key clients must send),
# VLLM_BIN (vllm executable, default: vllm on PATH), MAX_LORA_RANK (16 = lora_r of the recipes).
# Extra arguments go to `vllm serve` unchanged (e.g. --data-parallel-address for several nodes).
set -euo pipefail
base=${1:?usage: launch/vllm_serve.sh BASE_MODEL ADAPTER_DIR [vllm serve args...]}
adapter=${2:?usage: launch/vllm_serve.sh BASE_MODEL ADAPTER_DIR [vllm serve args...]}
shift 2
[[ -f $adapter/adapter_config.json ]] || { echo "$adapter: no adapter_config.json (not a PEFT adapter)" >&2; exit 2; }
: "${VLLM_API_KEY:?set VLLM_API_KEY: the endpoint must not be open to anyone who can reach it}"
export VLLM_API_KEY  # vllm serve reads it from the environment (kept out of the process list)

exec "${VLLM_BIN:-vllm}" serve "$base" \
  --enable-lora \
  --lora-modules "sensecf=$adapter" \
  --max-lora-rank "${MAX_LORA_RANK:-16}" \
  --structured-outputs-config.backend xgrammar \
  --tensor-parallel-size "${TP:-1}" \
  --data-parallel-size "${DP:-1}" \
  --max-model-len 1024 \
  --generation-config vllm \
  --seed 0 \
  --port "${PORT:-8000}" \
  "$@"

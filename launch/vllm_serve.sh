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
# Chat template: the one the adapter was trained with, not the base model's. Axolotl applies the
# recipe's `chat_template:` (llama3, mistral_v1, or the tokenizer's own for tokenizer_default) and
# saves the tokenizer into output_dir = ADAPTER_DIR, where transformers writes the template as
# ADAPTER_DIR/chat_template.jinja (older transformers: the "chat_template" string in
# ADAPTER_DIR/tokenizer_config.json). That file is what the hf backend renders with (sensecf.models
# loads the tokenizer from the adapter folder), so it goes to --chat-template here, with
# --chat-template-content-format string: the template gets each message's text as the hf path
# gives it. Found by prompts.render.chat_template_text (the same lookup); CHAT_TEMPLATE=FILE
# overrides it. With no template found the script stops: vLLM would otherwise render with the base
# model's template (BioMistral's rejects a system turn; Llama-3.1's adds a date header).
# A template without a system role (prompts.render.served_template_has_system_role ADAPTER_DIR is
# False) needs the client to fold the system text into the first user turn, as the hf backend
# does: OpenAIConfig(system_role=False). Axolotl's llama3, mistral_v1 and SmolLM2's ChatML all
# render a system turn (mistral_v1 folds it itself), so the messages go as they are.
#
# Environment: TP (tensor-parallel GPUs per replica, default 1), DP (data-parallel replicas,
# default 1), PORT (8000), VLLM_API_KEY (required: the key clients must send),
# VLLM_BIN (vllm executable, default: vllm on PATH), MAX_LORA_RANK (16 = lora_r of the recipes),
# CHAT_TEMPLATE (a template file instead of the adapter's).
# Extra arguments go to `vllm serve` unchanged (e.g. --data-parallel-address for several nodes).
set -euo pipefail
base=${1:?usage: launch/vllm_serve.sh BASE_MODEL ADAPTER_DIR [vllm serve args...]}
adapter=${2:?usage: launch/vllm_serve.sh BASE_MODEL ADAPTER_DIR [vllm serve args...]}
shift 2
[[ -f $adapter/adapter_config.json ]] || { echo "$adapter: no adapter_config.json (not a PEFT adapter)" >&2; exit 2; }
: "${VLLM_API_KEY:?set VLLM_API_KEY: the endpoint must not be open to anyone who can reach it}"
export VLLM_API_KEY  # vllm serve reads it from the environment (kept out of the process list)

if [[ -n ${CHAT_TEMPLATE:-} ]]; then
  template=$CHAT_TEMPLATE
  [[ -f $template ]] || { echo "CHAT_TEMPLATE=$template: no such file" >&2; exit 2; }
elif [[ -f $adapter/chat_template.jinja ]]; then
  template=$adapter/chat_template.jinja
elif [[ -f $adapter/tokenizer_config.json ]] && grep -q '"chat_template"' "$adapter/tokenizer_config.json"; then
  # Older transformers kept the template inside tokenizer_config.json: write it out as a file.
  template=$(mktemp "${TMPDIR:-/tmp}/sensecf-chat-template.XXXXXX")
  python3 -c 'import json, sys; sys.stdout.write(json.load(open(sys.argv[1]))["chat_template"])' \
    "$adapter/tokenizer_config.json" >"$template"
else
  echo "$adapter: no chat_template.jinja and no chat_template in tokenizer_config.json: cannot serve the" \
    "template the adapter was trained with (set CHAT_TEMPLATE=FILE)" >&2
  exit 2
fi
echo "chat template: $template" >&2

exec "${VLLM_BIN:-vllm}" serve "$base" \
  --enable-lora \
  --lora-modules "sensecf=$adapter" \
  --chat-template "$template" \
  --chat-template-content-format string \
  --max-lora-rank "${MAX_LORA_RANK:-16}" \
  --structured-outputs-config.backend xgrammar \
  --tensor-parallel-size "${TP:-1}" \
  --data-parallel-size "${DP:-1}" \
  --max-model-len 1024 \
  --generation-config vllm \
  --seed 0 \
  --port "${PORT:-8000}" \
  "$@"

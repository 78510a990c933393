#!/usr/bin/env bash
# Serve Qwen3-VL-32B-Instruct with vLLM for `t2iverw caption` (OpenAI API on http://HOST:PORT/v1).
#
#   pipelines/serve_vllm.sh [fp8|bf16] [PORT]
#
#   fp8   (default) one H100 80 GB: the FP8 checkpoint Qwen/Qwen3-VL-32B-Instruct-FP8.
#   bf16  two H100s, tensor parallel: the BF16 checkpoint Qwen/Qwen3-VL-32B-Instruct
#         (use CUDA_VISIBLE_DEVICES to pick the pair).
#
# Flags follow vLLM's Qwen3-VL recipe (docs.vllm.ai/projects/recipes, Qwen/Qwen3-VL):
# images only (no video) frees the memory the video profiler would reserve; a crop of at
# most 512x512 pixels is <= 256 vision tokens, the prompt ~300 and the caption <= 256, so
# 8192 tokens of context is ample. Each checkpoint is served under its own name (the FP8
# one as Qwen/Qwen3-VL-32B-Instruct-FP8), so caption records name the model that wrote them.
#
# Environment overrides: MODEL, SERVED_NAME (MODEL), HOST (127.0.0.1), MAX_MODEL_LEN (8192),
# GPU_MEMORY_UTILIZATION (0.90), MAX_NUM_SEQS (256). Needs `pip install "vllm>=0.11"`.
# Several servers (one per GPU or node): see pipelines/README.md.
set -euo pipefail

precision="${1:-fp8}"
port="${2:-8000}"
case "$precision" in
  fp8)  model="${MODEL:-Qwen/Qwen3-VL-32B-Instruct-FP8}"; tp=1 ;;
  bf16) model="${MODEL:-Qwen/Qwen3-VL-32B-Instruct}"; tp=2 ;;
  *) echo "usage: $0 [fp8|bf16] [PORT]" >&2; exit 2 ;;
esac

exec vllm serve "$model" \
  --served-model-name "${SERVED_NAME:-$model}" \
  --host "${HOST:-127.0.0.1}" --port "$port" \
  --tensor-parallel-size "$tp" \
  --max-model-len "${MAX_MODEL_LEN:-8192}" \
  --limit-mm-per-prompt '{"image": 1, "video": 0}' \
  --gpu-memory-utilization "${GPU_MEMORY_UTILIZATION:-0.90}" \
  --max-num-seqs "${MAX_NUM_SEQS:-256}"

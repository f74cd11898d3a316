#!/usr/bin/env bash
# GPU checks of hf_dpo, in one go (planned at about 8 minutes on one H100-class GPU, 15 at most: each step has its
# own timeout):
#   1. the CUDA 4-bit path on SmolLM2-135M's shape (random weights): NF4 on the GPU, LoRA grads, adapters-off reference;
#   2. the bench at >= 1B parameters: a Llama-style 1.07B model (scripts/gpu/llama-1b.json, random weights) on
#      pairs of several hundred prompt and a few hundred answer tokens (scripts/gpu/long_pairs.py), hf_dpo vs TRL
#      as is vs TRL with a precomputed reference, one process each: pairs/s, peak memory, first loss, ratios;
#   3. the 8B proof: recipes/llama3.1-8b-qlora.yaml on a random-weight Llama-3.1-8B (scripts/gpu/llama-3.1-8b.json)
#      under a 24 GB cap (scripts/gpu/capped_train.py), a few steps, the measured peak beside `hf-dpo plan`'s.
# Needs the project installed (`make install`) and a CUDA GPU; never part of `make test`. Without CUDA it stops at
# once with exit status 3. DRY_RUN=1 prints the commands instead of running them (checks the wiring on any machine).
#
#   OUT=/tmp/gpu_out bash scripts/gpu/run_checks.sh [CONFIG_DIR]
#
# CONFIG_DIR: SmolLM2-135M-Instruct's config and tokenizer (default: the demo alias's cache); its tokenizer serves
# every model here. Results land in $OUT: env.txt, check4bit.txt, bench.{txt,json}, train_8b.txt.
set -o pipefail
OUT=${OUT:-/tmp/gpu_out}
PY=${PY:-python3}
WORK=${WORK:-/tmp/hf_dpo_gpu_check}
RUN=${DRY_RUN:+echo}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TQDM_DISABLE=1
export HF_DPO_CACHE=${HF_DPO_CACHE:-$WORK/cache}
if [ -z "${DRY_RUN:-}" ] && ! $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "error: make gpu-check needs a CUDA GPU, and torch.cuda.is_available() is False here." >&2
  exit 3
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/env.txt"
failed=0
step() {  # step NAME TIMEOUT_S LOG COMMAND...: run with a timeout, log to $OUT/LOG, say how it ended
  local name=$1 limit=$2 log=$3; shift 3
  echo "== $name"
  if [ -n "${DRY_RUN:-}" ]; then echo "timeout $limit $*"; return 0; fi
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$log"
  local rc=$?
  [ $rc -eq 124 ] && echo "$name: timed out after ${limit}s"
  [ $rc -ne 0 ] && { echo "$name: FAILED (exit $rc)"; failed=1; }
  return 0
}

step "random models (135M, 1B, 8B) and long pairs" 240 env_models.txt bash -c "
  $PY scripts/gpu/make_random_model.py $WORK/smollm2-random ${1:-} --init-device cuda &&
  $PY scripts/gpu/make_random_model.py $WORK/llama-1b-random ${1:-} --config scripts/gpu/llama-1b.json --init-device cuda &&
  $PY scripts/gpu/make_random_model.py $WORK/llama-8b-random ${1:-} --config scripts/gpu/llama-3.1-8b.json --init-device cuda &&
  $PY scripts/gpu/long_pairs.py $WORK/long_pairs --train 64 --test 8"

step "CUDA 4-bit path" 90 check4bit.txt $PY scripts/gpu/check_4bit_cuda.py "$WORK/smollm2-random"

step "bench, 1.07B Llama, long pairs: hf_dpo vs TRL vs TRL precompute" "${BENCH_T:-270}" bench.txt \
  $PY -m hf_dpo.cli bench --model "$WORK/llama-1b-random" --data-sets "$WORK/long_pairs/train.jsonl" \
  --batch-size "${BENCH_BATCH:-4}" --steps 8 --warmup 2 --max-length 1024 --lines trl trl_precompute hf_dpo \
  --out "$OUT/bench.json"
$RUN $PY scripts/gpu/summarize_bench.py "$OUT/bench.json"

step "8B recipe under a 24 GB cap: measured peak vs plan" "${TRAIN_8B_T:-300}" train_8b.txt \
  $PY scripts/gpu/capped_train.py --cap-gb 24 recipes/llama3.1-8b-qlora.yaml \
  --model_name_or_path "$WORK/llama-8b-random" --dataset_name "$WORK/long_pairs" \
  --dataset_train_split train --dataset_test_split test --max_eval_samples 8 \
  --max_steps 4 --gradient_accumulation_steps 1 --logging_steps 1 --eval_strategy no --save_strategy no \
  --eval_num_generations 0 --output_dir "$WORK/run_8b"
exit $failed

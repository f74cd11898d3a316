#!/usr/bin/env bash
# GPU checks of hf_dpo, in one go (about 8 minutes on one H100): the CUDA 4-bit path, a real `hf-dpo train` of
# the demo recipe with its `hf-dpo plan` beside it, then `hf-dpo bench` on CUDA (bf16). Needs the project
# installed (`make install`) and a CUDA GPU; never part of `make test`.
#
#   OUT=/tmp/gpu_out bash scripts/gpu/run_checks.sh [CONFIG_DIR]
#
# CONFIG_DIR: a directory with SmolLM2-135M-Instruct's config and tokenizer (default: the demo alias's cache).
# The model is random-init from it (scripts/gpu/make_random_model.py). Results land in $OUT.
OUT=${OUT:-/tmp/gpu_out}
PY=${PY:-python3}
M=${MODEL_DIR:-/tmp/smollm2-random}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TQDM_DISABLE=1
export HF_DPO_CACHE=${HF_DPO_CACHE:-/tmp/hfdpo_cache}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/env.txt"
$PY scripts/gpu/make_random_model.py "$M" ${1:-} 2>&1 | tee -a "$OUT/env.txt" || exit 4
echo "== CUDA 4-bit path"
timeout 90 $PY scripts/gpu/check_4bit_cuda.py "$M" 2>&1 | tee "$OUT/check4bit.txt"
echo "== hf-dpo train (demo recipe, 16 steps) and its plan"
timeout "${TRAIN_T:-150}" $PY -m hf_dpo.cli train recipes/demo.yaml --model_name_or_path "$M" --max_steps 16 \
  --output_dir /tmp/gpu_run --eval_num_generations 8 > "$OUT/train.txt" 2>&1
echo "train rc=$?"; tail -12 "$OUT/train.txt"
cp /tmp/gpu_run/run_info.json "$OUT/" 2>/dev/null
$PY -m hf_dpo.cli plan recipes/demo.yaml --model_name_or_path "$M" > "$OUT/plan.txt" 2>&1; tail -16 "$OUT/plan.txt"
$PY -c "import json; print('measured', json.load(open('$OUT/run_info.json'))['peak_memory'])"
echo "== hf-dpo bench on CUDA"
timeout "${BENCH_T:-380}" $PY -m hf_dpo.cli bench --model "$M" --steps 10 --warmup 2 --batch-size 8 \
  --data-sets ${BENCH_SETS:-demo long_prompt} --lines trl trl_precompute hf_dpo hf_dpo_warm_cache \
  ${BENCH_ARGS:-} --out "$OUT/bench.json" 2>&1 | tee "$OUT/bench.txt"

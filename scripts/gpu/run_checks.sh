#!/usr/bin/env bash
# GPU checks of hf_dpo in one go, within BUDGET_S seconds (default 550) on one H100/H200-class GPU. Each step has
# its own timeout, cut to what is left of the budget, and writes its results into $OUT as it goes:
#   1. random-weight models and long pairs: SmolLM2-135M's shape, a Llama-style 1.07B (scripts/gpu/llama-1b.json),
#      pairs of ~500 prompt and 100-200 answer tokens (scripts/gpu/long_pairs.py);
#   2. the CUDA 4-bit path on the 135M shape: NF4 on the GPU, LoRA grads, adapters-off reference;
#   3. the bench at 1.07B (scripts/gpu/bench_lines.py, one process per line, 4-bit, bf16): TRL's default (gradient
#      checkpointing on), TRL's default with a precomputed reference, hf_dpo with and without checkpointing; then
#      scripts/gpu/summarize_bench.py's verdict: hf_dpo >= 1.3x TRL-pre pairs/s at <= TRL default's peak memory;
#   4. the 8B proof: a random-weight Llama-3.1-8B (scripts/gpu/llama-3.1-8b.json), then recipes/llama3.1-8b-qlora.yaml
#      on it under a 24 GB cap (scripts/gpu/capped_train.py), a few steps, the measured peak beside `hf-dpo plan`'s.
# $OUT gets at most 8 files: env.txt models.txt check4bit.txt bench.txt bench.json bench_summary.txt train_8b.txt
# steps.txt (one line per step: how it ended, seconds). Exit status 0 when every step passed.
# Planned on an H200 (never timed there yet): setup and models ~1 min, 4-bit ~0.5 min, the bench what is left
# but RESERVE_8B_S (230 s) for the 8B model (16 GB bf16 written to $WORK, ~1 min) and its run (~2 min); a bench
# line that cannot start in time is skipped (hf_dpo without checkpointing, last, goes first).
#
# A GPU machine without network (the device tool copies the working tree and up to 8 carried ignored paths):
#   here, first:   make gpu-bundle    (.gpu_bundle/: the wheels that machine lacks + SmolLM2's tokenizer, ~48 MiB)
#   device call:   command "bash scripts/gpu/run_checks.sh", carry [".gpu_bundle"], timeout_s 600
# There it installs .gpu_bundle/wheels with `pip install --no-index --no-deps --target /tmp/site` (no index, no
# `make install`), runs hf_dpo from the checkout (PYTHONPATH=/tmp/site:REPO) and takes the bundle's tokenizer.
# With the project installed and a CUDA GPU: `make gpu-check` (the bundle is used only where trl, bitsandbytes,
# datasets or evaluate do not import). Without CUDA it stops at once with exit status 3, unless:
#   REHEARSAL=1   every step for real on the CPU at tiny sizes (scripts/gpu/llama-tiny.json for the 1B and 8B
#                 models, 16 pairs, 2 steps, no cap); tests/scripts/test_gpu_scripts.py runs it
#   DRY_RUN=1     prints the commands instead of running them
#
#   OUT=/tmp/gpu_out bash scripts/gpu/run_checks.sh [CONFIG_DIR]
#
# CONFIG_DIR: SmolLM2-135M-Instruct's config and tokenizer (default: .gpu_bundle/smollm2-135m-instruct if there,
# else the demo alias's cache); its tokenizer serves every model here.
set -o pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO" || exit 2
OUT=${OUT:-/tmp/gpu_out}
PY=${PY:-python3}
WORK=${WORK:-/tmp/hf_dpo_gpu_check}
BUNDLE=${BUNDLE:-$REPO/.gpu_bundle}
SITE=${SITE:-/tmp/site}
BUDGET_S=${BUDGET_S:-$([ -n "${REHEARSAL:-}" ] && echo 1800 || echo 550)}
RESERVE_8B_S=${RESERVE_8B_S:-$([ -n "${REHEARSAL:-}" ] && echo 60 || echo 230)}  # the bench leaves it to the 8B steps
BENCH_LINES=${BENCH_LINES:-trl_ckpt trl_precompute_ckpt hf_dpo_ckpt hf_dpo}
START=$SECONDS
mkdir -p "$OUT" "$WORK"
for f in env.txt models.txt check4bit.txt bench.txt bench.json bench_summary.txt train_8b.txt steps.txt; do
  rm -f "${OUT:?}/$f"  # this run's results only (each step appends to its file)
done
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TQDM_DISABLE=1
export TOKENIZERS_PARALLELISM=false OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
export HF_DPO_CACHE=${HF_DPO_CACHE:-$WORK/cache}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"  # hf_dpo from this checkout, installed or not
failed=0

left() { echo $((BUDGET_S - (SECONDS - START))); }
record() { echo "$*" | tee -a "$OUT/steps.txt"; }
step() {  # step NAME LIMIT_S LOG COMMAND...: run within min(LIMIT_S, budget left), append to $OUT/LOG, record it
  local name=$1 limit=$2 log=$3 t0=$SECONDS rc
  shift 3
  echo "== $name"
  if [ -n "${DRY_RUN:-}" ]; then echo "timeout $limit $*"; return 0; fi
  [ "$(left)" -lt "$limit" ] && limit=$(left)
  if [ "$limit" -lt 15 ]; then
    record "$name: SKIPPED (${limit}s of the ${BUDGET_S}s budget left)"
    failed=1
    return 0
  fi
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$OUT/$log"
  rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    record "$name: TIMED OUT after ${limit}s"
    failed=1
  elif [ $rc -ne 0 ]; then
    record "$name: FAILED (exit $rc, $((SECONDS - t0))s)"
    failed=1
  else
    record "$name: ok ($((SECONDS - t0))s)"
  fi
  return 0
}

# --- setup: the bundle's wheels where the packages are missing (a machine without network), the environment
USE_BUNDLE=${USE_BUNDLE:-auto}
HAVE_PACKAGES=0
$PY -c "import trl, bitsandbytes, datasets, evaluate" 2>/dev/null && HAVE_PACKAGES=1
if [ "$USE_BUNDLE" = auto ]; then
  USE_BUNDLE=0
  [ -d "$BUNDLE/wheels" ] && [ $HAVE_PACKAGES = 0 ] && USE_BUNDLE=1
fi
if [ "$USE_BUNDLE" != 1 ] && [ $HAVE_PACKAGES = 0 ] && [ -z "${DRY_RUN:-}" ]; then
  echo "error: $PY cannot import trl, bitsandbytes, datasets and evaluate, and there is no $BUNDLE/wheels to" \
    "install them from: make install, or (no network) make gpu-bundle and copy .gpu_bundle with the repo." | tee -a "$OUT/env.txt" >&2
  exit 4
fi
if [ "$USE_BUNDLE" = 1 ]; then  # pip --target, no index, no deps; without pip, the wheels unzipped (what --target does)
  export PYTHONPATH="$SITE:$PYTHONPATH"
  if [ -n "${DRY_RUN:-}" ]; then
    echo "pip install --no-index --no-deps --target $SITE $BUNDLE/wheels/*.whl"
  elif cmp -s "$BUNDLE/versions.txt" "$SITE/.bundle_versions.txt"; then
    record "bundle: already installed in $SITE"
  else
    t0=$SECONDS
    mkdir -p "$SITE"
    if $PY -m pip --version >/dev/null 2>&1; then
      timeout -k 10 180 $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$BUNDLE"/wheels/*.whl 2>&1 | tee -a "$OUT/env.txt"
      rc=$?
    else
      echo "no pip for $PY: unzipping the wheels into $SITE" | tee -a "$OUT/env.txt"
      timeout -k 10 180 $PY -c "import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]" \
        "$SITE" "$BUNDLE"/wheels/*.whl 2>&1 | tee -a "$OUT/env.txt"
      rc=$?
    fi
    if [ $rc -eq 0 ]; then
      cp "$BUNDLE/versions.txt" "$SITE/.bundle_versions.txt"
      record "bundle: $(wc -l <"$BUNDLE/versions.txt") wheels installed into $SITE ($((SECONDS - t0))s)"
    else
      record "bundle: install into $SITE FAILED ($((SECONDS - t0))s)"
      failed=1
    fi
  fi
fi
CONFIG_DIR=${1:-}
[ -z "$CONFIG_DIR" ] && [ -f "$BUNDLE/smollm2-135m-instruct/tokenizer.json" ] && CONFIG_DIR=$BUNDLE/smollm2-135m-instruct

CUDA=$($PY -c "import torch; print(int(torch.cuda.is_available()))" 2>>"$OUT/env.txt")
if [ "$CUDA" != 1 ] && [ -z "${REHEARSAL:-}" ] && [ -z "${DRY_RUN:-}" ]; then
  echo "error: the GPU check needs a CUDA GPU, and torch.cuda.is_available() is False here (REHEARSAL=1: on the CPU)." >&2
  exit 3
fi
{
  echo "python $PY: $($PY -c 'import sys; print(sys.version.split()[0], sys.executable)')"
  echo "bundle: $([ "$USE_BUNDLE" = 1 ] && echo "$BUNDLE -> $SITE" || echo "not used") | config + tokenizer: ${CONFIG_DIR:-from the demo alias}"
  echo "PYTHONPATH=$PYTHONPATH | rehearsal: ${REHEARSAL:-no} | budget ${BUDGET_S}s"
  $PY - <<'EOF'
import importlib
for name in ("torch", "transformers", "peft", "trl", "datasets", "evaluate", "accelerate", "bitsandbytes",
             "huggingface_hub", "tokenizers", "safetensors", "triton"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')} {getattr(module, '__file__', '')}")
    except Exception as err:  # reported: the step that needs it fails with its own message
        print(f"{name} NOT IMPORTABLE: {type(err).__name__}: {err}")
EOF
  echo "C compiler (triton builds its launcher with one): $(command -v cc gcc | head -1)"
  df -h "$WORK" | tail -1
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
} 2>&1 | tee -a "$OUT/env.txt"

# --- sizes: the real ones on a GPU; tiny on the CPU rehearsal (every step still runs, through the same code)
if [ -n "${REHEARSAL:-}" ]; then  # one tiny Llama stands in for the 135M, 1.07B and 8B models
  SMOLLM=$WORK/tiny-random MODEL_1B=$WORK/tiny-random MODEL_8B=$WORK/tiny-random
  MODELS="$PY scripts/gpu/make_random_model.py $WORK/tiny-random $CONFIG_DIR --config scripts/gpu/llama-tiny.json"
  PAIRS="--train 16 --test 4 --reports 1" BENCH="--batch-size 2 --steps 2 --warmup 0 --max-length 512"
  TRAIN_8B="--max_steps 2 --max_length 512 --max_prompt_length 256"
else
  SMOLLM=$WORK/smollm2-random MODEL_1B=$WORK/llama-1b-random MODEL_8B=$WORK/llama-8b-random
  MODELS="$PY scripts/gpu/make_random_model.py $SMOLLM $CONFIG_DIR --init-device cuda &&
    $PY scripts/gpu/make_random_model.py $MODEL_1B $CONFIG_DIR --config scripts/gpu/llama-1b.json --init-device cuda"
  PAIRS="--train 64 --test 8" BENCH="--batch-size 4 --steps 8 --warmup 2 --max-length 1024" TRAIN_8B="--max_steps 4"
fi

step "random models and long pairs" 120 models.txt bash -c "$MODELS && $PY scripts/gpu/long_pairs.py $WORK/long_pairs $PAIRS"

step "4-bit path$([ "$CUDA" = 1 ] && echo ' on CUDA' || echo ' (CPU rehearsal)')" 90 check4bit.txt \
  $PY scripts/gpu/check_4bit_cuda.py "$SMOLLM"

bench_budget=$(($(left) - RESERVE_8B_S))
BENCH_T=${BENCH_T:-$([ -n "${REHEARSAL:-}" ] && echo 1200 || echo 330)}
[ "$bench_budget" -gt "$BENCH_T" ] && bench_budget=$BENCH_T
# shellcheck disable=SC2086  # BENCH_LINES and BENCH are word lists
step "bench, $(basename "$MODEL_1B"), long pairs: $BENCH_LINES" $((bench_budget + 30)) bench.txt \
  $PY scripts/gpu/bench_lines.py --model "$MODEL_1B" --data-set "$WORK/long_pairs/train.jsonl" \
  --lines $BENCH_LINES $BENCH --budget-s "$bench_budget" --out "$OUT/bench.json"
step "bench verdict" 30 bench_summary.txt $PY scripts/gpu/summarize_bench.py "$OUT/bench.json"

if [ -z "${REHEARSAL:-}" ]; then
  step "random Llama-3.1-8B" 150 models.txt \
    $PY scripts/gpu/make_random_model.py "$MODEL_8B" $CONFIG_DIR --config scripts/gpu/llama-3.1-8b.json --init-device cuda
fi
# shellcheck disable=SC2086
step "8B recipe under a 24 GB cap: measured peak vs plan" "${TRAIN_8B_T:-300}" train_8b.txt \
  $PY scripts/gpu/capped_train.py --cap-gb 24 recipes/llama3.1-8b-qlora.yaml \
  --model_name_or_path "$MODEL_8B" --dataset_name "$WORK/long_pairs" \
  --dataset_train_split train --dataset_test_split test --max_eval_samples 8 \
  $TRAIN_8B --gradient_accumulation_steps 1 --logging_steps 1 --eval_strategy no --save_strategy no \
  --eval_num_generations 0 --output_dir "$WORK/run_8b"

echo "== done in $((SECONDS - START))s of ${BUDGET_S}s; results in $OUT:"
[ -f "$OUT/steps.txt" ] && cat "$OUT/steps.txt"
[ -f "$OUT/bench_summary.txt" ] && tail -6 "$OUT/bench_summary.txt"
[ -f "$OUT/train_8b.txt" ] && grep -E "^(cap|no cap) " "$OUT/train_8b.txt"
exit $failed

"""`hf-dpo bench`: hf_dpo against TRL's DPOTrainer, end to end, on data of several shapes.

    hf-dpo bench                                  # every data set, both regimes, 4-bit, 4 steps of 4 pairs
    hf-dpo bench --quick                          # demo pairs, no checkpointing: TRL, TRL-pre, hf_dpo (cold, warm)
    hf-dpo bench --data-sets long_prompt multi_turn --lines trl hf_dpo --steps 4
    hf-dpo bench --quick --lines trl trl_precompute hf_dpo hf_dpo_warm_cache hf_dpo_bf16   # + bf16 autocast

The headline is the wall time of a whole run: from building the trainer to the end of `train()`, tokenization,
the reference pre-pass and hf_dpo's prefix-sharing self-check included, with a cold reference cache (a
warm-cache line beside it). A second table says where the time goes: the reference pre-pass (seconds, per pair
over a training step's per pair) and the achieved FLOP/s of the pass and of the steps against this machine's
fp32 and bf16 matmul rates (`table.format_compute_table`). Each line is one process (so peak RSS is its own); both trainers get the same
model, LoRA, pairs, batch size and max_length, and the same checkpointing regime: TRL and hf_dpo without
activation checkpointing, then both with it on every layer (TRL's default). Per-step medians stay as a
secondary column.

    lines.py        the lines (trainer + options + regime) and the targets
    data_shapes.py  the data sets: demo pairs, long prompts, long answers, multi-turn (generated, seeded)
    worker.py       one line in its own process: the clock, the result
    table.py        ratios within (data set, quantization, regime), verdicts, the printed table
    runner.py       run_bench: every line in a fresh process, the report and its JSON

Needs TRL (`pip install 'hf-dpo[bench]'`).
"""

from hf_dpo.bench.lines import DEFAULT_LINES, LINES, QUICK_LINES, TARGETS, BenchError
from hf_dpo.bench.runner import run_bench

__all__ = ["BenchError", "DEFAULT_LINES", "LINES", "QUICK_LINES", "TARGETS", "run_bench"]

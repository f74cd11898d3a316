"""`hf-dpo bench` on one data set, line by line under a time budget, its JSON rewritten after every line: a check
cut short keeps each line it finished, and a line that cannot start in time is recorded as skipped. Exit status 1
when a line failed, 0 when every line finished or was cut by the budget (the summary names which).

    python scripts/gpu/bench_lines.py --model DIR --data-set PAIRS.jsonl --out bench.json \\
        --lines trl_ckpt trl_precompute_ckpt hf_dpo_ckpt hf_dpo [--budget-s 240] [--batch-size 4 --steps 8 ...]

The same pieces as `hf-dpo bench` (hf_dpo.bench.runner): each line in a fresh worker process, the same trainer
options, ratios within a checkpointing regime, the same table and JSON layout; `scripts/gpu/summarize_bench.py`
then compares every hf_dpo line with TRL as its users run it (TRL's default: checkpointing every layer)."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from hf_dpo.bench.data_shapes import load_data_set
from hf_dpo.bench.lines import LINES, check_lines
from hf_dpo.bench.runner import (
    build_report,
    line_specs,
    machine_summary,
    recipe_settings,
    require_trl,
    run_line,
    write_report,
)
from hf_dpo.bench.table import add_ratios


def budget_cut(result: dict) -> bool:
    """Skipped, or timed out: a line's timeout is what was left of the budget when it started."""
    return result.get("error", "").startswith(("skipped:", "timed out after"))


def report_of(machine: dict, setup: dict, lines: list[str], results: list[dict]) -> dict:
    add_ratios(results)
    machine["load_average_end"] = os.getloadavg()
    return build_report(machine, setup, lines, results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model directory (or alias)")
    parser.add_argument("--data-set", required=True, help="a .jsonl of pairs, or a generated set's name")
    parser.add_argument("--lines", nargs="+", required=True, help=f"in run order; from {', '.join(LINES)}")
    parser.add_argument("--out", required=True, help="JSON results file, rewritten after each line")
    parser.add_argument("--budget-s", type=float, default=1800, help="all lines together, in seconds")
    parser.add_argument("--min-line-s", type=float, default=30, help="a line needs this much budget to start")
    parser.add_argument("--quantization", default="4bit")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    deadline = time.time() + args.budget_s
    require_trl()
    lines = check_lines(args.lines)
    lora, demo_path, recipe = recipe_settings(None)
    n_pairs = args.batch_size * args.steps
    rows, source = load_data_set(args.data_set, n_pairs, args.seed, demo_path)
    machine = machine_summary()
    shared = dict(
        model=args.model,
        batch_size=args.batch_size,
        steps=args.steps,
        warmup=args.warmup,
        max_length=args.max_length,
        lora=lora,
        seed=args.seed,
    )
    setup = {**shared, "recipe": recipe, "pairs": len(rows), "data_sets": {args.data_set: source}}
    print(
        f"bench: {args.model}, {len(rows)} pairs of {args.data_set}, batch {args.batch_size}, {args.steps} steps, "
        f"max_length {args.max_length}, {args.quantization}; lines {' '.join(lines)}; budget {args.budget_s:.0f} s",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="hf_dpo_bench_"))
    specs = line_specs(lines, args.data_set, args.quantization, {**shared, "rows": rows}, work)
    results: list[dict] = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        left = deadline - time.time()
        if left < args.min_line_s:
            keys = ("name", "data_set", "quantization", "regime")
            result = {**{k: spec[k] for k in keys}, "error": f"skipped: {left:.0f} s of the budget left"}
            print(f"  {spec['name']:<24}{result['error']}", flush=True)
        else:
            result = run_line(spec, int(left), lambda msg: print(msg, flush=True))
        results.append(result)
        out.write_text(json.dumps(report_of(machine, setup, lines, results), indent=2))
    write_report(report_of(machine, setup, lines, results), str(out), print)
    cut = [r["name"] for r in results if budget_cut(r)]
    broken = [r["name"] for r in results if "error" in r and not budget_cut(r)]
    done = len(results) - len(cut) - len(broken)
    print(
        f"lines finished: {done} of {len(results)}"
        + (f"; cut by the budget: {', '.join(cut)}" if cut else "")
        + (f"; FAILED: {', '.join(broken)}" if broken else "")
    )
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())

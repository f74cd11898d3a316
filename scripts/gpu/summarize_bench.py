"""One line per bench line of a `hf-dpo bench` JSON: pairs/s (end to end and per step), peak GPU memory
(`max_memory_allocated`) and peak RSS, first loss, and the ratios to TRL as is and to TRL with a precomputed
reference (speed: end to end; memory: GPU on a GPU, RSS on CPU).

    python scripts/gpu/summarize_bench.py runs/gpu_check/bench.json"""

import json
import sys


def main(path: str) -> None:
    report = json.load(open(path))
    print(
        f"{'line':<16} {'pairs/s':>8} {'step':>8} {'peak GPU MB':>12} {'peak RSS MB':>12} {'loss@1':>8}  ratios"
    )
    for r in report["results"]:
        if "error" in r:
            print(f"{r.get('name', '?'):<16} error: {r['error'][:200]}")
            continue
        ratios = " ".join(
            f"{key}={r[key]:.2f}"
            for key in (
                "speed_vs_trl",
                "speed_vs_trl_precompute",
                "memory_vs_trl",
                "memory_vs_trl_precompute",
            )
            if key in r
        )
        print(
            f"{r['name']:<16} {r['pairs_per_s']:>8.2f} {r['step_pairs_per_s']:>8.2f} "
            f"{r['peak_cuda_mb'] or 0:>12.0f} {r['peak_rss_mb']:>12.0f} {r['loss_first']:>8.4f}  {ratios}"
        )


if __name__ == "__main__":
    main(sys.argv[1])

"""The GPU check's bench verdict, from a bench JSON (scripts/gpu/bench_lines.py or `hf-dpo bench`): every line's
pairs/s (end to end and per step), peak memory (GPU `max_memory_allocated` on a GPU, peak RSS on CPU) and first
loss, each hf_dpo line against TRL as its users run it, whatever the hf_dpo line's own checkpointing:

    TRL default  TRL 1.16's DPOConfig defaults: gradient checkpointing on every layer (line trl_ckpt)
    TRL-pre      the same with precompute_ref_log_probs=True (line trl_precompute_ckpt)

Goal: hf_dpo >= 1.3x TRL-pre's pairs/s (end to end) at <= TRL default's peak memory, with the same first loss
(log 2 on every line: the LoRA starts at zero; bf16 rounding allowed).

    python scripts/gpu/summarize_bench.py runs/gpu_check/bench.json

Exit status 0 once the goal could be judged (met or not; the last line says which), 1 when it could not (a TRL
line or every hf_dpo line failed or is missing)."""

from __future__ import annotations

import json
import math
import sys

GOAL_SPEED_VS_TRL_PRE = 1.3
GOAL_MEMORY_VS_TRL_DEFAULT = 1.0
LOSS_TOLERANCE = 0.01  # absolute, on the first logged loss (log 2 = 0.6931)


def memory_mb(r: dict) -> float:
    return r.get("peak_cuda_mb") or r["peak_rss_mb"]


def is_trl_default_regime(r: dict) -> bool:
    """A TRL line with DPOConfig's default checkpointing and no bench-only option."""
    options = r.get("options") or {}
    return (
        r.get("impl") == "trl"
        and bool(r.get("gradient_checkpointing"))
        and not any(k.startswith("_") for k in options)
        and options.get("gradient_checkpointing_kwargs", {}).get("every_n_layers", 1) == 1
    )


def baselines(results: list[dict]) -> tuple[dict | None, dict | None]:
    """(TRL default, TRL-pre): the first finished TRL line of each kind in the default checkpointing regime."""
    ok = [r for r in results if "error" not in r and is_trl_default_regime(r)]
    default = next((r for r in ok if not r["options"].get("precompute_ref_log_probs")), None)
    pre = next((r for r in ok if r["options"].get("precompute_ref_log_probs")), None)
    return default, pre


def compare(r: dict, default: dict, pre: dict) -> dict:
    speed_pre = r["pairs_per_s"] / pre["pairs_per_s"]
    memory = memory_mb(r) / memory_mb(default)
    loss_delta = abs(r["loss_first"] - default["loss_first"])
    return {
        "speed_vs_trl_default": r["pairs_per_s"] / default["pairs_per_s"],
        "speed_vs_trl_pre": speed_pre,
        "step_speed_vs_trl_pre": r["step_pairs_per_s"] / pre["step_pairs_per_s"],
        "memory_vs_trl_default": memory,
        "loss_delta": loss_delta,
        "meets": speed_pre >= GOAL_SPEED_VS_TRL_PRE
        and memory <= GOAL_MEMORY_VS_TRL_DEFAULT
        and loss_delta <= LOSS_TOLERANCE,
    }


def sharing(r: dict) -> str:
    """How an hf_dpo line batched: prefix sharing held or fell back to the plain layout, and its padding."""
    if "prefix_sharing_used" not in r:
        return ""
    pad = f", {100 * r['pad_share']:.0f}% padding" if r.get("pad_share") is not None else ""
    how = f" via {r['prefix_sharing_attention']}" if r.get("prefix_sharing_attention") else ""
    return f" (prefix sharing {'on' + how if r['prefix_sharing_used'] else 'OFF'}{pad})"


def summarize(report: dict) -> tuple[list[str], bool | None]:
    """(printed lines, goal met: True / False, None when it cannot be judged)."""
    results = report["results"]
    gpu = any(r.get("peak_cuda_mb") for r in results if "error" not in r)
    out = [
        f"{'line':<24}{'ckpt':>5}{'pairs/s':>9}{'step p/s':>9}{'peak MB':>9}{'loss@1':>8}"
        f"{'x TRL-def':>10}{'x TRL-pre':>10}{'mem/TRL-def':>12}   ({'GPU allocated' if gpu else 'CPU RSS'})"
    ]
    default, pre = baselines(results)
    candidates = []
    for r in results:
        if "error" in r:
            out.append(f"{r.get('name', '?'):<24} error: {r['error'][:300]}")
            continue
        cmp = compare(r, default, pre) if default and pre else None
        ratios = (
            f"{cmp['speed_vs_trl_default']:>10.2f}{cmp['speed_vs_trl_pre']:>10.2f}{cmp['memory_vs_trl_default']:>12.2f}"
            if cmp
            else f"{'-':>10}{'-':>10}{'-':>12}"
        )
        out.append(
            f"{r['name']:<24}{'yes' if r.get('gradient_checkpointing') else 'no':>5}{r['pairs_per_s']:>9.2f}"
            f"{r['step_pairs_per_s']:>9.2f}{memory_mb(r):>9.0f}{r['loss_first']:>8.4f}{ratios}"
        )
        if cmp and r.get("impl") == "hf_dpo" and not r.get("warm_cache_of"):
            candidates.append((r, cmp))
    out.append("")
    out.append(
        f"Goal: >= {GOAL_SPEED_VS_TRL_PRE:g}x TRL-pre pairs/s (end to end) at <= {GOAL_MEMORY_VS_TRL_DEFAULT:g}x "
        f"TRL default's peak memory, first loss within {LOSS_TOLERANCE:g} of TRL default's"
    )
    if not (default and pre):
        missing = [
            n
            for n, b in (("TRL default (trl_ckpt)", default), ("TRL-pre (trl_precompute_ckpt)", pre))
            if not b
        ]
        out.append(f"cannot judge: no finished {' or '.join(missing)} line")
        return out, None
    if not candidates:
        out.append("cannot judge: no finished cold-cache hf_dpo line")
        return out, None
    for r, cmp in candidates:
        why = []
        if cmp["speed_vs_trl_pre"] < GOAL_SPEED_VS_TRL_PRE:
            why.append("too slow")
        if cmp["memory_vs_trl_default"] > GOAL_MEMORY_VS_TRL_DEFAULT:
            why.append("too much memory")
        if cmp["loss_delta"] > LOSS_TOLERANCE or math.isnan(cmp["loss_delta"]):
            why.append("first loss differs")
        out.append(
            f"  {r['name']:<22} {cmp['speed_vs_trl_pre']:.2f}x TRL-pre ({cmp['step_speed_vs_trl_pre']:.2f}x per "
            f"step), {cmp['speed_vs_trl_default']:.2f}x TRL default, {cmp['memory_vs_trl_default']:.2f}x TRL "
            f"default's memory, first loss {r['loss_first']:.4f} vs {default['loss_first']:.4f}{sharing(r)}: "
            + ("meets" if cmp["meets"] else "misses (" + ", ".join(why) + ")")
        )
    met = [r["name"] for r, cmp in candidates if cmp["meets"]]
    out.append(f"GOAL MET by {', '.join(met)}" if met else "GOAL NOT MET by any hf_dpo line")
    return out, bool(met)


def main(path: str) -> int:
    with open(path) as fh:
        lines, met = summarize(json.load(fh))
    print("\n".join(lines))
    return 1 if met is None else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

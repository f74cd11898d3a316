"""Ratios, the verdict against the targets, and the printed table.

Lines are compared within a group: same data set, quantization and regime. `x TRL` is TRL's end-to-end wall
time over the line's (so higher is faster), `mem/TRL` the line's peak memory over TRL's; `step x TRL` the same
speed ratio from per-step medians (setup and the reference pre-pass left out). The first step's loss is log 2
on every line (the LoRA starts at zero); its log-probs are not compared, the two trainers batch pairs in
different orders.
"""

from __future__ import annotations

import math

from hf_dpo.bench.lines import TARGETS

BASELINES = ("trl", "trl_precompute")


def _memory(r: dict) -> float:
    return r.get("peak_cuda_mb") or r["peak_rss_mb"]


def group_key(r: dict) -> tuple[str, str, str]:
    return r.get("data_set", "-"), r["quantization"], r.get("regime", "-")


def add_ratios(results: list[dict]) -> None:
    """Speed and memory of each line relative to its group's TRL and TRL-precompute lines."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        if "error" not in r:
            groups.setdefault(group_key(r), []).append(r)
    for members in groups.values():
        base = {r["baseline"]: r for r in members if r.get("baseline")}
        for r in members:
            for name, b in base.items():
                r[f"speed_vs_{name}"] = b["end_to_end_s"] / r["end_to_end_s"]
                r[f"step_speed_vs_{name}"] = r["step_pairs_per_s"] / b["step_pairs_per_s"]
                r[f"memory_vs_{name}"] = _memory(r) / _memory(b)


def meets_targets(r: dict) -> bool:
    return (
        r["speed_vs_trl"] >= TARGETS["speed_vs_trl"]
        and r["speed_vs_trl_precompute"] >= TARGETS["speed_vs_trl_precompute"]
        and r["memory_vs_trl"] <= TARGETS["memory_vs_trl"]
    )


def verdicts(results: list[dict]) -> list[dict]:
    """One verdict per cold-cache hf_dpo line that has both TRL lines in its group."""
    out = []
    for r in results:
        if r.get("impl") != "hf_dpo" or "error" in r or r.get("warm_cache_of"):
            continue
        if not all(k in r for k in TARGETS):
            continue
        data_set, quant, regime = group_key(r)
        out.append(
            {
                "line": r["name"],
                "data_set": data_set,
                "quantization": quant,
                "regime": regime,
                **{k: r[k] for k in TARGETS},
                "meets_targets": meets_targets(r),
            }
        )
    return out


def format_verdicts(found: list[dict]) -> str:
    head = (
        f"End to end, cold reference cache, each regime on both sides alike; targets >= "
        f"{TARGETS['speed_vs_trl']:g}x TRL, >= {TARGETS['speed_vs_trl_precompute']:g}x TRL-pre, "
        f"<= {TARGETS['memory_vs_trl']:g}x TRL's peak memory:"
    )
    lines = [head]
    for v in found:
        lines.append(
            f"  {v['data_set']:<12}{v['quantization']:>5}  {v['regime']:<26} {v['line']:<12}"
            f"{v['speed_vs_trl']:>6.2f}x TRL {v['speed_vs_trl_precompute']:>6.2f}x TRL-pre "
            f"{v['memory_vs_trl']:>5.2f}x memory  {'meets' if v['meets_targets'] else 'MISSES'}"
        )
    return "\n".join(lines)


def _num(value, fmt: str, width: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{'-':>{width}}"
    return f"{value:>{width}{fmt}}"


def describe_data_set(members: list[dict]) -> str:
    r = next((m for m in members if "error" not in m), None)
    if r is None:
        return ""
    return (
        f"{r['pairs']} pairs, {r['tokens_per_pair']:.0f} tokens per pair (prompt+chosen + prompt+rejected): "
        f"prompt {100 * r['prompt_share']:.0f}%, completions {100 * r['completion_share']:.0f}%"
    )


HEADER = (
    f"{'line':<24}{'end-to-end s':>13}{'setup s':>8}{'peak MB':>9}{'loss@1':>8}"
    f"{'x TRL':>7}{'x TRL-pre':>10}{'mem/TRL':>8}{'step x TRL':>11}{'pad %':>6}"
)


def format_row(r: dict) -> str:
    if "error" in r:
        return f"{r['name']:<24}  failed: {r['error']}"
    pad = 100 * r["pad_share"] if r.get("pad_share") is not None else None
    return (
        f"{r['name']:<24}{r['end_to_end_s']:>13.1f}{r['setup_s']:>8.1f}{_memory(r):>9.0f}"
        f"{r['loss_first']:>8.4f}"
        f"{_num(r.get('speed_vs_trl'), '.2f', 7)}{_num(r.get('speed_vs_trl_precompute'), '.2f', 10)}"
        f"{_num(r.get('memory_vs_trl'), '.2f', 8)}{_num(r.get('step_speed_vs_trl'), '.2f', 11)}"
        f"{_num(pad, '.0f', 6)}"
    )


def format_table(results: list[dict]) -> str:
    """One block per data set and quantization, one sub-block per regime."""
    blocks: dict[tuple, list[dict]] = {}
    for r in results:
        blocks.setdefault((r.get("data_set", "-"), r["quantization"]), []).append(r)
    out = []
    for (data_set, quant), members in blocks.items():
        out += ["", f"{data_set} ({quant}): {describe_data_set(members)}", HEADER, "-" * len(HEADER)]
        regimes = list(dict.fromkeys(m.get("regime", "-") for m in members))
        for regime in regimes:
            out.append(f"  {regime}")
            out += [format_row(m) for m in members if m.get("regime", "-") == regime]
    return "\n".join(out).lstrip("\n")


COMPUTE_HEADER = (
    f"{'line':<24}{'ref s':>7}{'ref ms/pair':>12}{'ref/step':>9}{'ref GFLOP/s':>12}{'of fp32':>8}{'of bf16':>8}"
    f"{'step GFLOP/s':>13}{'of fp32':>8}{'of bf16':>8}{'logps@1':>9}"
)


def _share(value, rate) -> str:
    return _num(None if value is None or not rate else 100 * value / rate, ".0f", 7) + "%"


def format_compute_table(results: list[dict], rates: dict[str, float]) -> str:
    """Where the time goes, per line: the reference pre-pass (seconds, per pair, per pair over a training step's),
    and the achieved FLOP/s of the pass and of the training steps against the measured matmul rates (`rates`,
    GFLOP/s by dtype name). A LoRA step on a frozen base counts ~4·N FLOPs a token, a forward ~2·N, the tokens as
    the line's layout computes them (`hf_dpo.bench.worker.pass_flops`)."""
    out = [
        f"compute: matmul floor (512 x 2048) @ (2048 x 2048) fp32 {rates['float32']:.0f} GFLOP/s, bf16 "
        f"{rates['bfloat16']:.0f} GFLOP/s; ref/step = reference pass per pair over a training step per pair",
        COMPUTE_HEADER,
        "-" * len(COMPUTE_HEADER),
    ]
    for r in results:
        if "error" in r or "train_gflops_per_s" not in r:
            continue
        ref_s = r.get("ref_pass_s") or None
        out.append(
            f"{r['name'] + (' (bf16)' if r.get('bf16') else ''):<24}{_num(ref_s, '.1f', 7)}"
            f"{_num(ref_s and 1000 * ref_s / r['pairs'], '.0f', 12)}"
            f"{_num(r.get('ref_pass_over_step_per_pair'), '.2f', 9)}{_num(r.get('ref_gflops_per_s'), '.1f', 12)}"
            f"{_share(r.get('ref_gflops_per_s'), rates['float32'])}{_share(r.get('ref_gflops_per_s'), rates['bfloat16'])}"
            f"{_num(r.get('train_gflops_per_s'), '.1f', 13)}{_share(r.get('train_gflops_per_s'), rates['float32'])}"
            f"{_share(r.get('train_gflops_per_s'), rates['bfloat16'])}{_num(r.get('logps_chosen_first'), '.3f', 9)}"
        )
    return "\n".join(out)

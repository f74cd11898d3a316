"""Markdown for eval_report.md and for the model card: summary table, judged samples, training facts.

Pure functions of the eval_report.json dict (and run_info.json), so the report and the card say the same.
"""

from __future__ import annotations

from typing import Any

METRIC_LABELS = {
    "reward_accuracy": "Reward accuracy (margin > 0)",
    "rewards/margins": "Reward margin",
    "rewards/chosen": "Reward, chosen",
    "rewards/rejected": "Reward, rejected",
    "logp_shift/chosen": "Log-prob shift, chosen (nats)",
    "logp_shift/rejected": "Log-prob shift, rejected (nats)",
    "logp_shift/mean": "Mean log-prob shift (KL proxy, nats)",
}


def _ci(e: dict[str, Any], digits: int = 3) -> str:
    return f"{e['value']:.{digits}f} | [{e['low']:.{digits}f}, {e['high']:.{digits}f}] | {e['n']} | {e['method']}"


def _cell(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("|", "\\|") or "*(empty)*"


def summary_table(report: dict[str, Any]) -> str:
    """One table: held-out preference metrics and the judged win rate, each with interval, n and method."""
    conf = int(round(100 * report.get("confidence", 0.95)))
    rows = [f"| Metric | Value | {conf}% interval | n | Interval |", "|---|---|---|---|---|"]
    pref = report.get("preference")
    if pref:
        for key, label in METRIC_LABELS.items():
            if key in pref["metrics"]:
                rows.append(f"| {label} | {_ci(pref['metrics'][key])} |")
    beh = report.get("behaviour")
    if beh:
        rows.append(f"| Judged win rate vs reference (ties = 1/2) | {_ci(beh['win_rate'])} |")
        if "kl_estimate" in beh:
            rows.append(
                f"| log pi/pi_ref on the policy's generations (KL est., nats) | {_ci(beh['kl_estimate'])} |"
            )
    if len(rows) == 2:
        return "*No held-out metrics: " + (report.get("preference_skipped") or "no eval split") + ".*"
    return "\n".join(rows)


def behaviour_text(report: dict[str, Any]) -> str:
    beh = report.get("behaviour")
    if not beh:
        return f"*Not evaluated: {report.get('behaviour_skipped') or 'no judge'}.*"
    dec = beh.get("decoding", {})
    mode = (
        "greedy"
        if not dec.get("do_sample")
        else f"sampled (T={dec.get('temperature')}, top-p={dec.get('top_p')})"
    )
    return (
        f"Policy vs reference (adapters off) on {beh['n']} held-out prompts, {mode} decoding, up to "
        f"{dec.get('max_new_tokens')} new tokens, both scored by judge `{beh.get('judge')}`: "
        f"**{beh['wins']} wins / {beh['ties']} ties / {beh['losses']} losses**, win rate "
        f"{beh['win_rate']['value']:.3f} [{beh['win_rate']['low']:.3f}, {beh['win_rate']['high']:.3f}] "
        f"(ties count half; {beh.get('identical_completions', 0)} prompts got identical answers). Mean judge score: "
        f"policy {beh['policy_mean_score']['value']:.3f}, reference {beh['reference_mean_score']['value']:.3f}."
    )


def samples_table(report: dict[str, Any]) -> str:
    beh = report.get("behaviour")
    if not beh or not beh.get("samples"):
        return "*No samples (no judged generations).*"
    rows = ["| Prompt | Policy (score) | Reference (score) |", "|---|---|---|"]
    for s in beh["samples"]:
        rows.append(
            f"| {_cell(s['prompt'], 160)} | {_cell(s['policy'])} ({s['policy_score']:.2f}) "
            f"| {_cell(s['reference'])} ({s['reference_score']:.2f}) |"
        )
    return "\n".join(rows)


def plots_markdown(report: dict[str, Any]) -> str:
    titles = {
        "training_curves": "Training curves",
        "eval_summary": "Held-out summary",
        "heldout_margins": "Held-out reward margins",
    }
    out = []
    for rel in report.get("plots", []):
        stem = rel.rsplit("/", 1)[-1].removesuffix(".png")
        out.append(f"![{titles.get(stem, stem)}]({rel})")
    return "\n\n".join(out)


def training_table(info: dict[str, Any], report: dict[str, Any]) -> str:
    lora = info.get("lora") or {}
    tr = report.get("training") or {}
    runtime = info.get("train_runtime_s")
    rows = [
        ("Base model", f"`{info.get('base_model')}`"),
        ("Quantization", f"{info.get('quantization')} (compute dtype {info.get('compute_dtype')})"),
        (
            "LoRA",
            f"r={lora.get('r')}, alpha={lora.get('alpha')}, dropout={lora.get('dropout')}, "
            f"targets={lora.get('target_modules')}",
        ),
        ("Objective", f"{info.get('loss_type')} DPO, beta={info.get('beta')}"),
        (
            "Data",
            f"`{info.get('dataset')}`: {info.get('num_train_pairs')} train pairs, "
            f"{info.get('num_eval_pairs')} held-out pairs",
        ),
        ("Steps", str(tr.get("steps"))),
        ("Hardware", str(info.get("hardware"))),
        ("Training time", f"{runtime:.0f} s" if isinstance(runtime, (int, float)) else "unknown"),
        ("hf_dpo", str(info.get("hf_dpo_version"))),
    ]
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {_cell(v, 400)} |" for k, v in rows)


def render_markdown(report: dict[str, Any], info: dict[str, Any]) -> str:
    """eval_report.md: summary, behaviour, samples, plots (relative paths), training facts."""
    parts = [
        f"# Evaluation report: DPO adapter on `{info.get('base_model')}`",
        f"Generated {report['created_at']} by hf_dpo {report.get('hf_dpo_version')} "
        f"(eval_report.json, schema_version {report['schema_version']}).",
        "## Held-out preference metrics",
        "Implicit reward r = beta * (log pi(y|x) - log pi_ref(y|x)); pi_ref is the base with adapters off. "
        "Proportions carry Wilson intervals; means a fixed-seed percentile bootstrap.",
        summary_table(report),
        "## Behaviour: judged generations",
        behaviour_text(report),
        "### Side-by-side samples",
        samples_table(report),
        "## Plots",
        plots_markdown(report),
        "## Training",
        training_table(info, report),
    ]
    return "\n\n".join(parts) + "\n"


def console_summary(report: dict[str, Any], run_dir: str) -> str:
    """The closing lines of `hf-dpo eval` / `hf-dpo train`: the held-out numbers and how to push them."""
    lines = [f"Evaluation report: {run_dir}/eval_report.md (plots in {run_dir}/plots/)"]
    pref, beh = report.get("preference"), report.get("behaviour")
    if pref:
        acc, margin = pref["metrics"]["reward_accuracy"], pref["metrics"]["rewards/margins"]
        lines.append(
            f"  held-out reward accuracy  {acc['value']:.3f} [{acc['low']:.3f}, {acc['high']:.3f}]  "
            f"margin {margin['value']:.3f} [{margin['low']:.3f}, {margin['high']:.3f}]  (n={acc['n']} pairs)"
        )
    else:
        lines.append(f"  held-out metrics: {report.get('preference_skipped')}")
    if beh:
        win = beh["win_rate"]
        lines.append(
            f"  judged win rate vs reference  {win['value']:.3f} [{win['low']:.3f}, {win['high']:.3f}]  "
            f"({beh['wins']} wins / {beh['ties']} ties / {beh['losses']} losses, ties count half; n={beh['n']} prompts)"
        )
    else:
        lines.append(f"  judged generations: {report.get('behaviour_skipped')}")
    lines.append(f"Push it: hf-dpo push {run_dir} --repo-id ORG/NAME   (token from HF_TOKEN)")
    return "\n".join(lines)

"""Markdown for eval_report.md and for the model card: summary table, judged samples, training facts.

Pure functions of the eval_report.json dict (and run_info.json), so the report and the card say the same.
"""

from __future__ import annotations

from typing import Any

# Beside a reward accuracy of a policy equal to its reference (the report, the card, both consoles).
POLICY_IS_REFERENCE = "policy == reference, every margin is 0, no pair is ranked yet"


def policy_is_reference(metrics: dict[str, Any]) -> bool:
    """Whether held-out preference metrics (plain dicts, as in eval_report.json and the `dpo_preference`
    module's results) show a policy equal to its reference on every pair (learning_rate 0, an untrained adapter,
    the check before the first step): every margin is then 0 and, a tie counting as wrong, reward accuracy is 0
    without any pair ranked.

    Read from the two log-prob shifts alone, so a saved report answers too: a mean of exactly 0 with a bootstrap
    interval of exactly [0, 0] leaves no room for a pair whose policy log-prob differs from the reference's. An
    older report without the shifts gets False."""
    shifts = [metrics.get(key) for key in ("logp_shift/chosen", "logp_shift/rejected")]
    return all(shift is not None and shift["value"] == shift["low"] == shift["high"] == 0 for shift in shifts)


METRIC_LABELS = {
    "reward_accuracy": "Reward accuracy (margin > 0)",
    "rewards/margins": "Reward margin",
    "rewards/chosen": "Reward, chosen",
    "rewards/rejected": "Reward, rejected",
    "logp_shift/chosen": "Log-prob shift, chosen (nats)",
    "logp_shift/rejected": "Log-prob shift, rejected (nats)",
    "logp_shift/mean": "Mean log-prob shift (KL proxy, nats)",
}


def interval_note(e: dict[str, Any]) -> str:
    """Why an interval looks degenerate, in words for beside it; "" for one that does not.

    One item has no spread to resample; a bootstrap of values that are all equal (ties) has an interval of no
    width; and a percentile bootstrap on few or tied values can leave the estimate itself outside its interval
    (most resamples fall on one side of it): the interval is still what the resamples say, read it with n. A
    Wilson interval always holds its estimate and has width."""
    if e["method"] == "wilson":
        return ""
    if e["n"] == 1:
        return "one item: no spread to estimate"
    if e["low"] == e["high"]:
        return f"all {e['n']} values equal: no spread to resample"
    if not e["low"] <= e["value"] <= e["high"]:
        return (
            f"the estimate lies outside its interval: {e['n']} items, most resamples fall on one side (ties)"
        )
    return ""


def _with_note(interval: str, e: dict[str, Any]) -> str:
    note = interval_note(e)
    return f"{interval} ({note})" if note else interval


def _ci(e: dict[str, Any], digits: int = 3, note: str = "") -> str:
    """Value (with `note` beside it), interval (with why it looks so, where it is degenerate), n and method:
    four cells of a summary row."""
    interval = _with_note(f"[{e['low']:.{digits}f}, {e['high']:.{digits}f}]", e)
    return f"{e['value']:.{digits}f}{note} | {interval} | {e['n']} | {e['method']}"


def _cell(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    # A model's text is shown as written: '<think>' or '<!--' would be read as HTML (hidden, or hiding the rest).
    text = text.replace("&", "&amp;").replace("<", "&lt;")
    return text.replace("|", "\\|") or "*(empty)*"


def summary_table(report: dict[str, Any]) -> str:
    """One table: held-out preference metrics and the judged win rate, each with interval, n and method."""
    conf = int(round(100 * report.get("confidence", 0.95)))
    rows = [f"| Metric | Value | {conf}% interval | n | Interval |", "|---|---|---|---|---|"]
    pref = report.get("preference")
    if pref:
        metrics = pref["metrics"]
        # An accuracy of 0 from ties alone says why, beside its value, as the console does.
        notes = {"reward_accuracy": f" ({POLICY_IS_REFERENCE})"} if policy_is_reference(metrics) else {}
        for key, label in METRIC_LABELS.items():
            if key in metrics:
                rows.append(f"| {label} | {_ci(metrics[key], note=notes.get(key, ''))} |")
    beh = report.get("behaviour")
    if beh:
        rows.append(f"| Judged win rate vs reference (ties = 1/2) | {_ci(beh['win_rate'])} |")
        if "length_controlled_win_rate" in beh:
            rows.append(f"| Length-controlled win rate | {_ci(beh['length_controlled_win_rate'])} |")
        if "kl_estimate" in beh:
            rows.append(
                f"| log pi/pi_ref on the policy's generations (KL est., nats) | {_ci(beh['kl_estimate'])} |"
            )
    if len(rows) == 2:
        return "*No held-out metrics: " + (report.get("preference_skipped") or "no eval split") + ".*"
    return "\n".join(rows)


def verdict_line(report: dict[str, Any]) -> str:
    """The one-line verdict on the judge's primary criterion (hf_dpo.report.verdict), or why there is none."""
    v = report.get("verdict")
    if not v:
        return f"Verdict: none (no judged generations: {report.get('behaviour_skipped') or 'no judge'})."
    return v["line"]


def criteria_table(report: dict[str, Any]) -> str:
    """Per criterion: policy and reference rates and the paired difference; then unfinished, looping, lengths."""
    beh = report.get("behaviour")
    if not beh or "per_criterion" not in beh:
        return ""
    conf = int(round(100 * report.get("confidence", 0.95)))
    rows = [
        f"| Criterion | Policy | Reference | Difference (policy - reference), {conf}% paired interval |",
        "|---|---|---|---|",
    ]
    for i, name in enumerate(beh["criteria"]):
        s = beh["per_criterion"][name]
        d = s["difference"]
        low, high = d["low"], d["high"]
        label = f"**{name}** (primary)" if i == 0 else name
        rows.append(
            f"| {label} | {_rate(s['policy'])} | {_rate(s['reference'])} | "
            f"{d['value']:+.3f} {_with_note(f'[{low:+.3f}, {high:+.3f}]', d)} |"
        )
    for key, label in (("unfinished", "unfinished (cut at the cap)"), ("looping", "looping")):
        rows.append(f"| {label} | {_rate(beh[key]['policy'])} | {_rate(beh[key]['reference'])} | |")
    rep = beh["repeated_4gram_share"]
    rows.append(
        f"| repeated word 4-grams (mean share) | {rep['policy']['value']:.3f} | {rep['reference']['value']:.3f} | |"
    )
    lengths = beh["lengths"]
    rows.append(
        f"| length, words (tokens) | {lengths['policy_words']['value']:.1f} ({lengths['policy_tokens']['value']:.1f}) "
        f"| {lengths['reference_words']['value']:.1f} ({lengths['reference_tokens']['value']:.1f}) | |"
    )
    return "\n".join(rows)


def _rate(e: dict[str, Any]) -> str:
    count = f" ({round(e['value'] * e['n'])}/{e['n']})" if e.get("method") == "wilson" else ""
    return f"{e['value']:.3f}{count} [{e['low']:.3f}, {e['high']:.3f}]"


def generations_line(report: dict[str, Any]) -> str:
    """Where every judged answer is (eval_generations.jsonl, by relative link), or "" for a report without it."""
    name = report.get("generations_file")
    if not name:
        return ""
    return (
        "Every answer of both sides, with its scores, token count, whether it finished and the prompt's "
        f"outcome, is in [{name}]({name}) (one JSON line per prompt)."
    )


def _difference_intervals(beh: dict) -> str:
    """How the difference intervals were resampled: over prompts, or over the questions the judge names."""
    if not beh.get("questions"):
        return "Intervals of differences come from a paired bootstrap over prompts."
    return (
        f"Intervals of differences come from a paired bootstrap over questions: the {beh['n']} prompts ask "
        f"{beh['questions']} questions (the judge's `question_of`), and the prompts of one question are resampled "
        "together, so its phrasings count as one piece of evidence, not several."
    )


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
    # training_overlap (absent in older reports) counts judged prompts that are training prompts too.
    trained_on = (report.get("training_overlap") or {}).get("judged_prompts")
    prompts = (
        f"prompts ({trained_on} of them training prompts, not held out)" if trained_on else "held-out prompts"
    )
    text = (
        f"Policy vs reference ({report.get('reference') or 'adapters off'}) on {beh['n']} {prompts}, {mode} decoding until the end "
        f"token (at most {dec.get('max_new_tokens')} new tokens"
        + (f", both in {dec['dtype']}" if dec.get("dtype") else "")
        + f"), both scored by judge `{beh.get('judge')}`"
    )
    if "per_criterion" not in beh:  # a report written before criteria
        return text + f": **{beh['wins']} wins / {beh['ties']} ties / {beh['losses']} losses**."
    lc = beh["length_controlled_win_rate"]
    judged = (
        text
        + f" on its criteria ({', '.join(beh['criteria'])}; the first is the primary one). An answer that "
        "reached the cap is unfinished: it is not judged as a whole answer but fails every criterion and loses "
        f"to any finished answer. {_difference_intervals(beh)}\n\n"
        + criteria_table(report)
        + f"\n\nHead to head (finished first, then the criteria in order): **{beh['wins']} wins / {beh['ties']} "
        f"ties / {beh['losses']} losses**, win rate {beh['win_rate']['value']:.3f} "
        f"[{beh['win_rate']['low']:.3f}, {beh['win_rate']['high']:.3f}] (ties count half; "
        f"{beh.get('identical_completions', 0)} prompts got identical answers). Length-controlled win rate "
        f"{lc['value']:.3f} [{lc['low']:.3f}, {lc['high']:.3f}]: a logistic fit of the outcome (win 1, tie 1/2, "
        "loss 0) on tanh(word-length difference / its standard deviation), read at equal length, so a judge's "
        "taste for short or long answers does not count as a win (AlpacaEval 2's idea; bootstrap interval). "
        "Looping: a word 4-gram three times or a span repeated four times back to back."
    )
    return "\n\n".join(part for part in (judged, generations_line(report)) if part)


def warnings_text(report: dict[str, Any]) -> str:
    found = report.get("warnings") or []
    return "\n".join(f"> **Warning.** {w}" for w in found) if found else ""


def samples_table(report: dict[str, Any]) -> str:
    beh = report.get("behaviour")
    if not beh or not beh.get("samples"):
        return "*No samples (no judged generations).*"
    rows = ["| Prompt | Policy (score) | Reference (score) |", "|---|---|---|"]
    for s in beh["samples"]:
        rows.append(
            f"| {_prompt_cell(s)} | {_cell(s['policy'])} ({s['policy_score']:.2f}) "
            f"| {_cell(s['reference'])} ({s['reference_score']:.2f}) |"
        )
    return "\n".join(rows)


def _prompt_cell(sample: dict[str, Any]) -> str:
    """The prompt of a sample: its text, after the earlier turns of a conversation in italics (`role: text`, each
    shortened, the last three turns when there are more)."""
    context = sample.get("context") or []
    turns = [f"{m['role']}: {_cell(m['content'], 60)}" for m in context[-3:]]
    if len(context) > 3:
        turns.insert(0, f"({len(context) - 3} earlier turns)")
    shown = f"*{' / '.join(turns)}* → " if turns else ""
    return shown + _cell(sample["prompt"], 160)


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
            (
                "LoRA",
                f"r={lora.get('r')}, alpha={lora.get('alpha')}, dropout={lora.get('dropout')}, "
                f"targets={lora.get('target_modules')}",
            )
            if info.get("use_peft", True)
            else ("Trained weights", "all of them: a full fine-tune (use_peft: false), no adapter")
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
        f"# Evaluation report: DPO {'adapter on' if info.get('use_peft', True) else 'full fine-tune of'} "
        f"`{info.get('base_model')}`",
        f"Generated {report['created_at']} by hf_dpo {report.get('hf_dpo_version')} "
        f"(eval_report.json, schema_version {report['schema_version']}).",
        f"**{verdict_line(report)}**",
        *([warnings_text(report)] if report.get("warnings") else []),
        "## Held-out preference metrics",
        "Implicit reward r = beta * (log pi(y|x) - log pi_ref(y|x)); pi_ref is "
        f"{report.get('reference') or 'the base with adapters off'}. Proportions carry Wilson intervals; means a fixed-seed percentile bootstrap.",
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


def console_summary(report: dict[str, Any], run_dir: str, report_dir: str | None = None) -> str:
    """The closing lines of `hf-dpo eval` / `hf-dpo train`: the held-out numbers and how to push them.
    `report_dir`: where the report was written, when not into the run dir."""
    report_dir = report_dir or run_dir
    lines = [verdict_line(report)]
    beh = report.get("behaviour")
    if beh and "per_criterion" in beh:
        lines += ["  " + row for row in criteria_table(report).splitlines()]
    lines += [f"Warning: {w}" for w in report.get("warnings") or []]
    lines.append(f"Evaluation report: {report_dir}/eval_report.md (plots in {report_dir}/plots/)")
    if report.get("generations_file"):
        lines.append(f"Every judged answer, to read: {report_dir}/{report['generations_file']}")
    pref = report.get("preference")
    if pref:
        acc, margin = pref["metrics"]["reward_accuracy"], pref["metrics"]["rewards/margins"]
        same = f"; {POLICY_IS_REFERENCE}" if policy_is_reference(pref["metrics"]) else ""
        lines.append(
            f"  held-out reward accuracy  {acc['value']:.3f} [{acc['low']:.3f}, {acc['high']:.3f}]  "
            f"margin {margin['value']:.3f} [{margin['low']:.3f}, {margin['high']:.3f}]  (n={acc['n']} pairs{same})"
        )
    else:
        lines.append(f"  held-out metrics: {report.get('preference_skipped')}")
    if beh:
        win = beh["win_rate"]
        lines.append(
            f"  judged win rate vs reference  {win['value']:.3f} [{win['low']:.3f}, {win['high']:.3f}]  "
            f"({beh['wins']} wins / {beh['ties']} ties / {beh['losses']} losses, ties count half; n={beh['n']} prompts)"
        )
        if "length_controlled_win_rate" in beh:
            lc = beh["length_controlled_win_rate"]
            lines.append(
                f"  length-controlled win rate  {lc['value']:.3f} [{lc['low']:.3f}, {lc['high']:.3f}]"
            )
    else:
        lines.append(f"  judged generations: {report.get('behaviour_skipped')}")
    lines.append(f"Push it: hf-dpo push {run_dir} --repo-id ORG/NAME   (token from HF_TOKEN)")
    return "\n".join(lines)

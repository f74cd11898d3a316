"""PNG plots of a run: training curves, the held-out summary with intervals, the held-out margin histogram.

Figures are drawn on `matplotlib.figure.Figure` with the Agg canvas, so no global backend is switched and
no display is needed. Each function writes one file and returns its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

TRAIN_COLOR, EVAL_COLOR, REF_COLOR = "#1f77b4", "#d62728", "#7f7f7f"

# (title, [(log key, label)]) per panel; eval entries use the same keys prefixed "eval_".
CURVE_PANELS = [
    ("Loss", [("loss", "loss")]),  # the whole objective (an sft term included), titled with it
    ("Reward accuracy", [("rewards/accuracies", "accuracy")]),
    ("Reward margin (chosen - rejected)", [("rewards/margins", "margin")]),
    ("Implicit rewards", [("rewards/chosen", "chosen"), ("rewards/rejected", "rejected")]),
]


def _series(history: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(h["step"], h[key]) for h in history if key in h and "step" in h and h[key] is not None]
    return [p[0] for p in points], [float(p[1]) for p in points]


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def training_curves(history: list[dict[str, Any]], path: str | Path, objective: str | None = None) -> Path:
    """2x2 panels of loss, reward accuracy, margin and chosen/rejected rewards vs step; train lines, eval dots.
    `objective`: what the logged loss sums (run_info.json's loss_type, 'sigmoid + sft'), named in its title."""
    return _save(curves_figure(history, objective), Path(path))


def curves_figure(history: list[dict[str, Any]], objective: str | None = None) -> Figure:
    """The figure `training_curves` writes."""
    fig = Figure(figsize=(10, 7))
    axes = fig.subplots(2, 2).reshape(-1)
    styles = ["-", "--"]
    for ax, (title, keys) in zip(axes, CURVE_PANELS):
        drawn = 0
        for (key, label), ls in zip(keys, styles):
            xs, ys = _series(history, key)
            if xs:
                ax.plot(
                    xs,
                    ys,
                    ls,
                    color=TRAIN_COLOR,
                    marker="." if len(xs) < 30 else None,
                    label=f"train {label}",
                )
                drawn += 1
            xs, ys = _series(history, f"eval_{key}")
            if xs:
                ax.plot(xs, ys, ls, color=EVAL_COLOR, marker="o", label=f"eval {label}")
                drawn += 1
        if drawn == 0:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color=REF_COLOR)
        else:
            ax.legend(fontsize=8)
        if "accuracy" in title:
            ax.set_ylim(-0.05, 1.05)
            ax.axhline(0.5, color=REF_COLOR, lw=0.8, ls=":")
        elif "margin" in title or "rewards" in title.lower():
            ax.axhline(0.0, color=REF_COLOR, lw=0.8, ls=":")
        if keys[0][0] == "loss" and objective:
            title = f"Loss: {objective}"
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle("Training curves (train: lines, held-out eval: dots)", fontsize=11)
    fig.tight_layout()
    return fig


def _bars(ax, names: list[str], estimates: list[dict[str, Any]], colors: list[str]) -> int:
    """Bars at the estimates, each interval drawn from its own ends: an estimate outside its interval (a
    percentile bootstrap on few or tied values) or an interval of no width is drawn as it is, never as an
    error length below 0. Returns how many estimates lie outside their interval (marked with '*')."""
    values = np.array([e["value"] for e in estimates], dtype=np.float64)  # (k,)
    lows = np.array([e["low"] for e in estimates], dtype=np.float64)  # (k,)
    highs = np.array([e["high"] for e in estimates], dtype=np.float64)  # (k,)
    x = np.arange(len(names))
    ax.bar(x, np.nan_to_num(values), color=colors, alpha=0.85)
    drawn = np.isfinite(lows) & np.isfinite(highs)
    ax.vlines(x[drawn], lows[drawn], highs[drawn], color="black", lw=1.2)
    for end in (lows, highs):
        ax.plot(x[drawn], end[drawn], "_", color="black", markersize=12, markeredgewidth=1.2)
    ax.set_xticks(x, [f"{n}\n(n={e['n']})" for n, e in zip(names, estimates)], fontsize=8)
    outside = drawn & np.isfinite(values) & ((values < lows) | (values > highs))
    for xi, v, mark in zip(x, values, outside):
        ax.annotate(
            f"{v:.2f}{'*' if mark else ''}",
            (xi, np.nan_to_num(v)),
            textcoords="offset points",
            xytext=(12, 3),
            fontsize=8,
        )
    return int(outside.sum())


def _plain(e: Any) -> dict[str, Any]:
    return e if isinstance(e, dict) else {"value": e.value, "low": e.low, "high": e.high, "n": e.n}


def eval_summary(
    preference: dict[str, Any] | None, behaviour: dict[str, Any] | None, path: str | Path
) -> Path:
    """Bars with 95% intervals: proportions (reward accuracy, judged win rate) and mean rewards / log-prob shift."""
    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 3]})
    names, ests, colors = [], [], []
    if preference is not None:
        names.append("reward accuracy")
        ests.append(_plain(preference["metrics"]["reward_accuracy"]))
        colors.append(TRAIN_COLOR)
    if behaviour is not None:
        names.append("win rate vs ref\n(ties = 1/2)")
        ests.append(_plain(behaviour["win_rate"]))
        colors.append(EVAL_COLOR)
    outside = _bars(ax1, names, ests, colors)
    ax1.set_ylim(0, 1.05)
    ax1.axhline(0.5, color=REF_COLOR, lw=0.8, ls=":")
    ax1.set_title("Held-out proportions (95% Wilson)", fontsize=10)
    if preference is not None:
        m = preference["metrics"]
        keys = ["rewards/chosen", "rewards/rejected", "rewards/margins", "logp_shift/mean"]
        labels = ["reward\nchosen", "reward\nrejected", "margin", "log-prob\nshift (nats)"]
        outside += _bars(
            ax2, labels, [_plain(m[k]) for k in keys], ["#2ca02c", "#ff7f0e", TRAIN_COLOR, REF_COLOR]
        )
        ax2.axhline(0.0, color="black", lw=0.8)
        ax2.set_title(f"Held-out means, beta={preference['beta']} (95% bootstrap)", fontsize=10)
    else:
        ax2.text(0.5, 0.5, "no held-out pairs", ha="center", va="center", transform=ax2.transAxes)
        ax2.set_axis_off()
    if behaviour is not None:
        ax1.set_xlabel(
            f"judged: {behaviour['wins']} wins / {behaviour['ties']} ties / {behaviour['losses']} losses"
        )
    if outside:
        fig.text(
            0.01,
            0.0,
            "* estimate outside its bootstrap interval: few or tied values (eval_report.md says which)",
            fontsize=8,
            color=REF_COLOR,
        )
    fig.tight_layout()
    return _save(fig, Path(path))


def margin_histogram(margins: np.ndarray, reward_accuracy: float, path: str | Path) -> Path:
    """Distribution of held-out reward margins; mass right of 0 (beyond rounding) is the reward accuracy."""
    return _save(margins_figure(margins, reward_accuracy), Path(path))


def margins_figure(margins: np.ndarray, reward_accuracy: float) -> Figure:
    """The figure `margin_histogram` writes: bars with edges, so neighbouring bins read apart."""
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    margins = np.asarray(margins, dtype=np.float64)
    bins = min(30, max(5, margins.size // 2))
    ax.hist(margins, bins=bins, color=TRAIN_COLOR, alpha=0.85, edgecolor="white", linewidth=0.8)
    ax.axvline(0.0, color="black", lw=1)
    ax.set_xlabel("reward margin = beta * (chosen shift - rejected shift)")
    ax.set_ylabel("held-out pairs")
    ax.set_title(
        f"Held-out reward margins (n={margins.size}, {reward_accuracy:.0%} > 0 = reward accuracy)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig

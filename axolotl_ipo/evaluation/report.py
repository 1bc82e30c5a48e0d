"""The evaluation's table (text) and plot (PNG) from its metrics.json report: base vs trained
(`format_table`, `plot`), or a run vs a baseline run (`format_comparison`,
`plot_comparison`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["ROWS", "format_comparison", "format_table", "plot", "plot_comparison"]

# (key in ModelMetrics, label, better when)
ROWS = [
    ("preference_accuracy", "preference accuracy (IPO implicit reward)", "higher"),
    ("logprob_preference_accuracy", "preference accuracy (policy log-prob)", "higher"),
    ("implicit_margin", "mean implicit-reward margin", "higher"),
    ("gold_nll", "gold-answer NLL per token", "lower"),
    ("task_contains", "task: greedy answer contains gold", "higher"),
    ("task_exact", "task: greedy answer equals gold", "higher"),
    ("task_f1", "task: greedy answer token F1", "higher"),
    ("answer_words", "greedy answer length (words)", None),
    ("task_contains_base_same_length", "task: base cut to this length, contains", None),
]


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}"


def format_table(report: dict[str, Any]) -> str:
    models = report["models"]
    names = list(models)
    held = report["heldout"]
    lines = [
        f"held-out evaluation: {held['prompts']} prompts, {held['pairs']} gold-vs-sampled pairs",
        f"{'metric':<44}" + "".join(f"{n:>10}" for n in names)
        + ("    change" if len(names) == 2 else ""),
    ]
    for key, label, _ in ROWS:
        values = [models[n].get(key) for n in names]
        line = f"{label:<44}" + "".join(f"{_fmt(v):>10}" for v in values)
        if len(values) == 2 and None not in values:
            line += f"{values[1] - values[0]:>+10.3f}"
        lines.append(line)
    for key, change in (report.get("task_changes") or {}).items():
        lines.append(
            f"{key} change {change['change']:+.3f}, paired bootstrap 95% interval "
            f"[{change['low']:+.3f}, {change['high']:+.3f}]"
        )
    curves = report.get("curves")
    if curves and curves["steps"]:
        lines.append(
            f"training: {len(curves['steps'])} logged steps, loss {curves['loss'][0]:.3f} -> "
            f"{curves['loss'][-1]:.3f}"
        )
    train = report.get("training_pairs")
    if train:
        target = train["target_margin"]
        lines.append(
            f"training pairs ({train['pairs']}): mean token-averaged log-ratio margin "
            f"{train['mean_margin']:.3f}"
            + (f" (IPO target 1/(2*tau) = {target:.3f})" if target else "")
            + f", preference accuracy {train['preference_accuracy']:.3f}"
        )
    return "\n".join(lines)


def _pyplot() -> Any:
    """matplotlib's pyplot without a display, or None (said) when it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("axolotl-ipo eval: matplotlib is not installed, no plot (pip install matplotlib)")
        return None
    return plt


def plot(report: dict[str, Any], path: Path) -> Path | None:
    """Bars per metric (base vs trained) and, when present, the training curves."""
    plt = _pyplot()
    if plt is None:
        return None
    models = report["models"]
    curves = report.get("curves")
    columns = 4 if curves else 2
    fig, axes = plt.subplots(1, columns, figsize=(4.6 * columns, 4.2), squeeze=False)
    shares = [
        (k, label) for k, label, better in ROWS if better == "higher" and k != "implicit_margin"
    ]
    width = 0.8 / len(models)
    for offset, (name, metrics) in enumerate(models.items()):
        xs = [i + offset * width for i in range(len(shares))]
        axes[0][0].bar(xs, [metrics.get(k) or 0.0 for k, _ in shares], width, label=name)
        axes[0][1].bar([offset], [metrics["gold_nll"]], 0.6, label=name)
    ax = axes[0][0]
    ax.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(shares))])
    ax.set_xticklabels([label.replace(" (", "\n(") for _, label in shares], fontsize=7,
                       rotation=20)
    ax.set_ylim(0, 1)
    ax.set_title(f"held-out ({report['heldout']['prompts']} prompts): shares")
    ax.legend()
    axes[0][1].set_xticks(range(len(models)))
    axes[0][1].set_xticklabels(list(models))
    axes[0][1].set_title("held-out gold-answer NLL per token")
    if curves:
        steps = curves["steps"]
        axes[0][2].plot(steps, curves["loss"], marker=".")
        axes[0][2].set_title("training loss")
        axes[0][2].set_xlabel("step")
        ax = axes[0][3]
        if curves.get("rms_margin_from_target"):
            ax.plot(steps, curves["rms_margin_from_target"], marker=".",
                    label="RMS |margin - 1/(2 tau)| = sqrt(loss)")
            train = report.get("training_pairs")
            if train and train.get("target_margin"):
                ax.axhline(abs(train["mean_margin"] - train["target_margin"]), color="gray",
                           ls="--", label="|mean margin - target|, training pairs, after")
            ax.set_title(f"distance to IPO target 1/(2 tau) = {curves['target_margin']:.2f}")
        else:
            ax.plot(steps, curves["summed_logratio_margin"], marker=".")
            ax.set_title("summed log-ratio margin (TRL rewards/margins / beta)")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_comparison(report: dict[str, Any]) -> str:
    """A run against a baseline run: each one's accuracy, gold NLL and answer length, the
    difference (the accuracy's with its paired bootstrap 95% interval) and its reading."""
    runs, diff = report["runs"], report["difference"]
    run, base = runs["run"], runs["baseline"]
    acc = diff["accuracy"]
    lines = [
        f"held-out comparison: {report['heldout']['prompts']} prompts, answer check "
        f"`{report['check']}`",
        f"  run:      {run['path']}" + (f" (adapter on {run['base_model']})"
                                        if run["base_model"] else " (full model)"),
        f"  baseline: {base['path']}" + (f" (adapter on {base['base_model']})"
                                         if base["base_model"] else " (full model)"),
        f"{'metric':<30}{'run':>10}{'baseline':>10}  difference [95% interval]",
        f"{'accuracy (' + report['check'] + ')':<30}{_fmt(run['accuracy']):>10}"
        f"{_fmt(base['accuracy']):>10}  {acc['change']:+.3f} [{acc['low']:+.3f}, "
        f"{acc['high']:+.3f}]",
        f"{'gold-answer NLL per token':<30}{_fmt(run['gold_nll']):>10}"
        f"{_fmt(base['gold_nll']):>10}  {diff['gold_nll']:+.3f}",
        f"{'answer length (words)':<30}{run['answer_words']:>10.1f}"
        f"{base['answer_words']:>10.1f}  {diff['answer_words']:+.1f}",
    ]
    errors = run["check_errors"] + base["check_errors"]
    if errors:
        lines.append(f"the check raised on {errors} answers: their prompts are left out of the "
                     f"difference ({acc['prompts']} prompts judged for both)")
    lines.append(f"reading: {report['reading']}")
    return "\n".join(lines)


def plot_comparison(report: dict[str, Any], path: Path) -> Path | None:
    """Accuracy (with the difference's interval), gold NLL and answer length, run vs
    baseline."""
    plt = _pyplot()
    if plt is None:
        return None
    runs, acc = report["runs"], report["difference"]["accuracy"]
    names = list(runs)
    fig, axes = plt.subplots(1, 3, figsize=(12.6, 4.0), squeeze=False)
    colours = ["tab:blue", "tab:gray"]
    ax = axes[0][0]
    ax.bar(names, [runs[n]["accuracy"] for n in names], 0.6, color=colours)
    ax.errorbar([2], [acc["change"]], yerr=[[acc["change"] - acc["low"]],
                [acc["high"] - acc["change"]]], fmt="o", color="black", capsize=6)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xticks([0, 1, 2], [*names, "run - baseline\n(95% interval)"])
    ax.set_ylim(min(-0.05, acc["low"] - 0.05), 1.0)
    ax.set_title(f"held-out accuracy ({report['check']}), {report['heldout']['prompts']} prompts")
    for ax, key, title in ((axes[0][1], "gold_nll", "gold-answer NLL per token"),
                           (axes[0][2], "answer_words", "answer length (words)")):
        ax.bar(names, [runs[n][key] for n in names], 0.6, color=colours)
        ax.set_title(title)
    fig.suptitle(report["reading"], fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

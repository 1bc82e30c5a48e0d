"""Pool replicates of the skill study: the same arms and held-out rows run again with another
`--seed` (new LoRA initialisation, data order and samples). Each arm's score on each held-out
row is averaged over the replicates, and ARM minus VERSUS gets a paired bootstrap 95% interval
over the rows (a row's replicates move together, so seeds are not counted as extra rows).
That interval holds the trained models fixed; `seed_ci` is the one for a new training run: a t
interval over the replicates' own changes (their spread is the seed-to-seed variation).

    python research/skill_study/pool_replicates.py \\
        research/skill_study/results/skill_study_add240.json \\
        research/skill_study/results/skill_study_add240_seed7.json --arm sft_then_ipo_sft@1.0-s60 \\
        --versus sft-s300 --versus sft [--json OUT]

`--arm` may repeat too (every arm against every versus). `--plot PNG` draws the comparisons:
each one's pooled change with its interval over rows (thick) and over seeds (thin), and each
replicate's own change as a dot; `--label ARM=TEXT` names an arm there, `--target X` adds a
dashed line at a change of X.

A replicate may be given as ``NEW.json+OLD.json``: two runs of one replicate (the same study
settings but --work, e.g. arms added later). Their arms are merged; an arm in both must
have the same score on every row (a retrained arm reproduced), or the pair is refused.

Prints one line per replicate and per comparison, and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def arm_scores(report: dict, arm: str, path: Path) -> list[float]:
    entry = report["arms"].get(arm)
    if entry is None:
        raise SystemExit(f"{path}: no arm {arm!r}; it has {', '.join(report['arms'])}")
    if "scores" not in entry:
        raise SystemExit(f"{path}: arm {arm!r} has no per-row scores; rerun the study to "
                         "rewrite its JSON (finished arms are reused)")
    return entry["scores"]


def pooled(reports: list[tuple[Path, dict]], arm: str, versus: str) -> dict:
    """The pooled comparison and each replicate's own."""
    from axolotl_ipo.evaluation.metrics import paired_bootstrap

    ours = [arm_scores(r, arm, p) for p, r in reports]
    theirs = [arm_scores(r, versus, p) for p, r in reports]
    if len({len(s) for s in ours + theirs}) != 1:
        raise SystemExit("the replicates score different numbers of held-out rows: pool only "
                         "runs of one held-out file and --limit")
    rows = len(ours[0])
    mean = [[sum(col) / len(col) for col in zip(*runs, strict=True)] for runs in (ours, theirs)]
    per_replicate = []
    for (_, report), o, t in zip(reports, ours, theirs, strict=True):
        ci = paired_bootstrap(t, o)
        per_replicate.append({"seed": report.get("study", {}).get("seed"),
                              "change": ci["change"], "ci": [ci["low"], ci["high"]]})
    ci = paired_bootstrap(mean[1], mean[0])
    return {"arm": arm, "versus": versus, "replicates": len(reports), "rows": rows,
            "accuracy": sum(mean[0]) / rows, "versus_accuracy": sum(mean[1]) / rows,
            "change": ci["change"], "ci": [ci["low"], ci["high"]],
            "seed_ci": seed_interval([r["change"] for r in per_replicate]),
            "per_replicate": per_replicate}


def seed_interval(changes: list[float], level: float = 0.95) -> list[float] | None:
    """Student-t interval of the mean change over replicates (None for fewer than two)."""
    from scipy import stats

    n = len(changes)
    if n < 2:
        return None
    mean = sum(changes) / n
    sd = (sum((c - mean) ** 2 for c in changes) / (n - 1)) ** 0.5
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / n**0.5
    return [mean - half, mean + half]


def read_report(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"{path}: not a skill_study JSON ({err})") from None


def merged_report(spec: str) -> tuple[Path, dict]:
    """One replicate from ``A.json`` or ``A.json+B.json`` (runs of the same replicate)."""
    paths = [Path(part) for part in spec.split("+")]
    reports = [read_report(path) for path in paths]
    first, merged = reports[0], {**reports[0], "arms": dict(reports[0]["arms"])}
    for path, report in zip(paths[1:], reports[1:], strict=True):
        settings, other = first.get("study", {}), report.get("study", {})
        differ = sorted(k for k in (set(settings) | set(other)) - {"work"}  # where, not how
                        if settings.get(k) != other.get(k))
        if differ:
            raise SystemExit(f"{path}: not the replicate of {paths[0]} (study settings differ: "
                             f"{', '.join(differ)}); merge only runs of one seed and settings")
        for arm, entry in report["arms"].items():
            if arm in merged["arms"]:
                ours, theirs = (arm_scores(r, arm, q) for r, q in ((merged, paths[0]),
                                                                   (report, path)))
                rows = sum(a != b for a, b in zip(ours, theirs, strict=False))
                if rows or len(ours) != len(theirs):
                    raise SystemExit(f"{path}: arm {arm!r} scores differently from {paths[0]} "
                                     f"at {rows} rows; the runs are not the same replicate")
            else:
                merged["arms"][arm] = entry
    return Path(spec), merged


def plot(results: list[dict], path: Path, labels: dict[str, str], target: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    versus = sorted({res["versus"] for res in results})
    one = labels.get(versus[0], versus[0]) if len(versus) == 1 else None  # then in the title
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(results) + 1.6))
    names = []
    for y, res in enumerate(reversed(results)):
        names.append(labels.get(res["arm"], res["arm"]) if one else
                     f"{labels.get(res['arm'], res['arm'])}\nminus "
                     f"{labels.get(res['versus'], res['versus'])}")
        changes = [r["change"] for r in res["per_replicate"]]
        ax.scatter(changes, [y + 0.22] * len(changes), s=12, color="0.55", zorder=2,
                   label="one run" if y == 0 else None)
        if res["seed_ci"]:
            ax.hlines(y, *res["seed_ci"], color="tab:blue", linewidth=1,
                      label="95% CI over runs" if y == 0 else None)
        ax.hlines(y, *res["ci"], color="tab:blue", linewidth=5, alpha=0.6,
                  label="95% CI over held-out rows" if y == 0 else None)
        ax.plot(res["change"], y, "o", color="tab:blue", zorder=3)
        ax.annotate(f"{res['change']:+.3f}", (res["change"], y - 0.3), ha="center", fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    if target is not None:
        ax.axvline(target, color="tab:red", linestyle="--", linewidth=0.8,
                   label=f"target {target:+.2f}")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_ylim(-0.7, len(names) - 0.3)
    if one:
        ax.set_title(f"minus {one}", fontsize=9)
    ax.set_xlabel(f"change in held-out score, pooled over {results[0]['replicates']} runs x "
                  f"{results[0]['rows']} rows")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("reports", nargs="+",
                   help="skill_study --json files, one per replicate (or NEW.json+OLD.json)")
    p.add_argument("--arm", action="append", required=True)
    p.add_argument("--versus", action="append", required=True)
    p.add_argument("--json", type=Path)
    p.add_argument("--plot", type=Path)
    p.add_argument("--label", action="append", default=[], metavar="ARM=TEXT")
    p.add_argument("--target", type=float)
    a = p.parse_args(argv)
    labels = dict(item.split("=", 1) for item in a.label if "=" in item)
    if len(labels) != len(a.label):
        p.error("--label takes ARM=TEXT")
    reports = [merged_report(spec) for spec in a.reports]
    results = [pooled(reports, arm, v) for arm in a.arm for v in a.versus if v != arm]
    if not results:
        p.error("nothing to compare: give an --arm other than its --versus")
    for res in results:
        for rep in res["per_replicate"]:
            lo, hi = rep["ci"]
            print(f"seed {rep['seed']}: {res['arm']} minus {res['versus']} "
                  f"{rep['change']:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        lo, hi = res["ci"]
        print(f"pooled over {res['replicates']} replicates x {res['rows']} rows: {res['arm']} "
              f"{res['accuracy']:.3f} vs {res['versus']} {res['versus_accuracy']:.3f}: "
              f"{res['change']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
              + (f"; over seeds (t, new training runs) [{res['seed_ci'][0]:+.3f}, "
                 f"{res['seed_ci'][1]:+.3f}]" if res["seed_ci"] else ""))
    out = {"comparisons": results}
    if a.plot:
        plot(results, a.plot, labels, a.target)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

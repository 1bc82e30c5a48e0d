"""Train the main job's config for a grid of tau and step counts, evaluate each run on the
held-out split, and print one table (base model first).

    python research/tau_sweep/ipo_sweep.py --runs 0.1:10,0.1:30,0.5:10 [--config ...] [--json FILE]

Every run goes through `python -m axolotl.cli.train` and `axolotl-ipo eval`, exactly like the
README's first command. The sampled training pairs and the base model's held-out scores are
cached, so only the first run samples.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))  # offline_env: what benchmarks and tests run in
from offline_env import OFFLINE_ENV  # noqa: E402

ENV = {**os.environ, **OFFLINE_ENV}
METRICS = [
    ("preference_accuracy", "pref. acc. (implicit reward)"),
    ("logprob_preference_accuracy", "pref. acc. (log-prob)"),
    ("gold_nll", "gold NLL/token"),
    ("task_contains", "contains"),
    ("task_exact", "exact"),
    ("task_f1", "F1"),
]


def run(argv: list[str], log: Path) -> float:
    started = time.perf_counter()
    with log.open("w") as handle:
        code = subprocess.call(argv, cwd=ROOT, env=ENV, stdout=handle, stderr=subprocess.STDOUT)
    if code:
        sys.exit(f"{' '.join(argv)} failed with exit code {code}; see {log}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="example_configs/smollm2-ipo-cpu.yml")
    parser.add_argument("--data", default=".cache/data/nq_open_heldout.jsonl")
    parser.add_argument("--runs", default="0.1:10,0.1:30,0.5:10,0.5:30",
                        help="tau:steps pairs, comma-separated")
    parser.add_argument("--rerun", action="store_true",
                        help="train again even when a run's evaluation exists")
    parser.add_argument("--out", default="outputs/ipo_sweep")
    parser.add_argument("--json", help="also write every report into this file")
    args = parser.parse_args()

    base_cfg = yaml.safe_load((ROOT / args.config).read_text())
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    rows, reports = [], {}
    for spec in args.runs.split(","):
        tau, steps = float(spec.split(":")[0]), int(spec.split(":")[1])
        name = f"tau{tau:g}_steps{steps}"
        metrics_path = out / name / "ipo_eval" / "metrics.json"
        seconds = None
        if args.rerun or not metrics_path.is_file():
            cfg = {**base_cfg, "ipo_tau": tau, "max_steps": steps, "output_dir": str(out / name)}
            path = out / f"{name}.yml"
            text = yaml.safe_dump(cfg, sort_keys=False)
            trained = (out / name / "adapter_config.json").is_file()
            train_s = float("nan")
            if args.rerun or not trained or not path.is_file() or path.read_text() != text:
                path.write_text(text)
                print(f"== {name}: train", flush=True)
                train_s = run([sys.executable, "-m", "axolotl.cli.train", str(path)],
                              out / f"{name}.train.log")
            print(f"== {name}: eval ({train_s:.0f} s training)", flush=True)
            eval_s = run([sys.executable, "-m", "axolotl_ipo.cli", "eval", str(path),
                          "--data", args.data], out / f"{name}.eval.log")
            seconds = (train_s, eval_s)
        else:
            print(f"== {name}: evaluated before, reusing {metrics_path}", flush=True)
        report = json.loads(metrics_path.read_text())
        reports[name] = report
        if not rows:
            rows.append(("base model", "-", "-", report["models"]["base"], None, None))
        rows.append((name, tau, steps, report["models"]["trained"],
                     report.get("training_pairs"), seconds))

    header = ["run", "tau", "steps", *[label for _, label in METRICS],
              "train margin (target)", "train s", "eval s"]
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, tau, steps, metrics, train, seconds in rows:
        cells = [name, str(tau), str(steps)] + [f"{metrics[k]:.3f}" for k, _ in METRICS]
        cells.append(
            f"{train['mean_margin']:.2f} ({train['target_margin']:.1f})" if train else "-"
        )
        cells += [f"{s:.0f}" for s in seconds] if seconds else ["-", "-"]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Task scores of finished evaluations, with the length control and paired intervals.

    python research/tau_sweep/task_scores.py outputs/smollm2-ipo-cpu/ipo_eval \
        outputs/ipo_sweep/*/ipo_eval

Reads each directory's `predictions_base.jsonl` and `predictions_trained.jsonl` (written by
`axolotl-ipo eval`; nothing is loaded or generated) and prints, per run: mean answer length in
words, contains-answer / exact / token F1 of base and trained with the trained-minus-base change
and its paired bootstrap 95% interval, and the base's contains-answer with each base answer cut
to the trained answer's length (the verbosity control: contains-answer rewards long answers).
New evaluations report the same numbers in their metrics.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from axolotl_ipo.evaluation.metrics import (
    answer_words,
    length_matched_contains,
    task_changes,
    task_scores,
)


def read(path: Path) -> tuple[list[str], list[list[str]]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [r["prediction"] for r in rows], [r["answers"] for r in rows]


def analyse(directory: Path) -> dict:
    base, answers = read(directory / "predictions_base.jsonl")
    trained, trained_answers = read(directory / "predictions_trained.jsonl")
    if answers != trained_answers:
        raise SystemExit(f"{directory}: base and trained predictions are for different prompts")
    return {
        "run": str(directory),
        "prompts": len(answers),
        "words": (answer_words(base), answer_words(trained)),
        "base": task_scores(base, answers),
        "trained": task_scores(trained, answers),
        "changes": task_changes(base, trained, answers),
        "base_same_length_contains": length_matched_contains(base, trained, answers),
    }


def interval(change: dict[str, float]) -> str:
    return f"{change['change']:+.3f} [{change['low']:+.3f}, {change['high']:+.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dirs", nargs="+", type=Path, help="ipo_eval directories")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = [analyse(d) for d in args.dirs]
    print("| run | words base -> trained | contains base -> trained (change, 95% CI) | "
          "base cut to trained length: contains | exact change (95% CI) | F1 change (95% CI) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        changes = r["changes"]
        print(f"| {r['run']} | {r['words'][0]:.1f} -> {r['words'][1]:.1f} | "
              f"{r['base']['task_contains']:.3f} -> {r['trained']['task_contains']:.3f} "
              f"({interval(changes['task_contains'])}) | {r['base_same_length_contains']:.3f} | "
              f"{interval(changes['task_exact'])} | {interval(changes['task_f1'])} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

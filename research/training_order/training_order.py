"""Which training rows the first optimizer steps of Axolotl configs see, and how they overlap.

    python research/training_order/training_order.py CONFIG [CONFIG ...] --steps N [--json]

Each config's trainer is built as `axolotl train` builds it (Axolotl's dataset loading and
trainer setup; nothing is trained), in a process of its own, and the first N batches of its
training dataloader are read: every row is named by a hash of its unpadded token ids. Printed
per config: rows seen, distinct rows, and for each later config the rows it shares with the
first and whether the order is the same. The last line is one JSON object with `--json`.

Why: Axolotl shuffles the training rows with the config's `seed` and feeds them in that order,
so two runs with the same rows and seed train on the same rows in the same order; a restart
shorter than an epoch therefore trains on the same first rows every time unless its seed
changes (research/skill_study/README.md, "The restart control repeated its rows").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))  # offline_env: what benchmarks and tests run in
from offline_env import OFFLINE_ENV  # noqa: E402


def sft_trainer(config: str):
    """The trainer `axolotl train` builds for an SFT config (its datasets loaded, the model and
    adapter set up), not trained. Axolotl's internals are looked up here, not in the package's
    adapter (axolotl_ipo/upstream/): only this study needs them; tests/test_training_order.py
    runs it on every supported release."""
    from axolotl.cli.args import TrainerCliArgs
    from axolotl.cli.config import load_cfg
    from axolotl.common.datasets import load_datasets
    from axolotl.train import setup_model_and_trainer

    cfg = load_cfg(config)
    trainer, *_ = setup_model_and_trainer(cfg, load_datasets(cfg=cfg, cli_args=TrainerCliArgs()))
    return trainer


def rows_seen(config: str, steps: int) -> list[str]:
    """Hashes of the rows of the first ``steps`` batches of ``config``'s training dataloader
    (run in this process: call it in a process of its own, as `main` does)."""
    import os

    os.environ.update(OFFLINE_ENV)
    trainer = sft_trainer(config)
    rows = []
    for step, batch in enumerate(trainer.get_train_dataloader()):
        if step == steps:
            break
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True):
            kept = ids[mask.bool()].tolist()
            rows.append(hashlib.sha1(json.dumps(kept).encode()).hexdigest()[:12])
    return rows


def compare(runs: dict[str, list[str]]) -> dict:
    """Per config: rows seen, distinct; for each config after the first, against the first."""
    first = next(iter(runs.values()))
    out = {}
    for name, rows in runs.items():
        out[name] = {"rows": len(rows), "distinct": len(set(rows)),
                     "shared_with_first": len(set(rows) & set(first)),
                     "same_order_as_first": rows == first}
    out["union_distinct"] = len(set().union(*map(set, runs.values())))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--steps", type=int, required=True, help="optimizer steps (batches)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: the file to write rows to
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.one:
        Path(args.one).write_text(json.dumps(rows_seen(args.configs[0], args.steps)))
        return {}
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, config in enumerate(args.configs):
            out = Path(tmp) / f"{i}.json"
            done = subprocess.run([sys.executable, __file__, config, "--steps",
                                   str(args.steps), "--one", str(out)],
                                  capture_output=True, text=True)
            if done.returncode:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise SystemExit(f"{config}: building its trainer failed ({tail})")
            runs[config] = json.loads(out.read_text())
    result = compare(runs)
    print(f"first {args.steps} steps of each config; shared rows and order against "
          f"{args.configs[0]}")
    print("\n| config | rows | distinct | shared with first | same order |\n|---|---|---|---|---|")
    for config in args.configs:
        row = result[config]
        print(f"| {config} | {row['rows']} | {row['distinct']} | {row['shared_with_first']} | "
              f"{'yes' if row['same_order_as_first'] else 'no'} |")
    print(f"\ndistinct rows over all configs: {result['union_distinct']}")
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

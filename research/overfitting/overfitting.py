"""Overfitting on a real model: IPO vs DPO trained for many epochs on a small fixed set of pairs.

    python research/overfitting/overfitting.py --pairs 32 --epochs 8 --save-steps 8 \
        --plot research/overfitting/results/overfitting.png \
        --json research/overfitting/results/overfitting.json

The pairs are the first N of the main job's (example_configs/smollm2-ipo-cpu.yml) sampled pairs,
gold answer vs SmolLM2-135M-Instruct's own sample (cached: nothing is sampled), written to a
pairs.jsonl and trained with `type: axolotl_ipo.sampled_pairs`. Two runs through
`python -m axolotl.cli.train`, identical but for the loss: IPO (`rl: ipo`, `ipo_tau`) and DPO
(`rl: dpo`, `rl_beta` = the same value, TRL's default sigmoid loss). LoRA checkpoints every
`--save-steps` steps are scored in this process with `axolotl_ipo.evaluation`: on the training
pairs (token-averaged and summed log-ratio margins to the base model = the reference, chosen and
rejected log-probs) and on the first `--heldout` held-out pairs (gold vs the base model's sample,
cached by `axolotl-ipo eval`): IPO implicit-reward preference accuracy and gold NLL per token.
Step 0 is the base model. TRL's own per-step logs come from the last checkpoint's
trainer_state.json (its `logps/*` are SUMMED over completion tokens, `rewards/margins` is beta
times the summed log-ratio margin).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))  # offline_env: what benchmarks and tests run in
from offline_env import OFFLINE_ENV  # noqa: E402

from axolotl_ipo.dataset_type import PAIRS_TYPE  # noqa: E402

ENV = OFFLINE_ENV
LOSSES = ("ipo", "dpo")
# Keys of the main config that this benchmark sets itself (data, loss, schedule, saving).
REPLACED = {
    "rl", "ipo_tau", "ipo_sft_weight", "rl_beta", "dpo_beta", "dpo_loss_type", "datasets",
    "rejection_sampling",
    "dataset_prepared_path", "output_dir", "max_steps", "num_epochs", "learning_rate",
    "save_strategy", "save_steps", "save_only_model", "save_total_limit", "logging_steps",
}
CHECKPOINT = re.compile(r"checkpoint-(\d+)")
COLUMNS = [  # (key, header) of the printed table
    ("train_margin_avg", "train margin, token-avg (IPO target {target:g})"),
    ("train_margin_sum", "train margin, summed"),
    ("train_chosen_logp", "train chosen logp/tok"),
    ("train_rejected_logp", "train rejected logp/tok"),
    ("heldout_accuracy", "held-out pref. acc."),
    ("heldout_gold_nll", "held-out gold NLL/tok"),
]


def train_config(
    main: dict[str, Any],
    loss: str,
    pairs: Path,
    run_dir: Path,
    *,
    steps: int,
    epochs: int,
    save_steps: int,
    learning_rate: float,
    beta: float,
) -> dict[str, Any]:
    """The main job's model, LoRA, sequence and optimiser settings, on the fixed pairs; IPO and
    DPO differ only in `rl` and where beta (= tau) is given."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, not {loss!r}")
    cfg = {key: value for key, value in main.items() if key not in REPLACED}
    cfg.update(
        datasets=[{"path": str(pairs), "split": "train", "type": PAIRS_TYPE}],
        dataset_prepared_path=str(run_dir / "prepared"),
        output_dir=str(run_dir / "output"),
        max_steps=steps,
        num_epochs=epochs,
        learning_rate=learning_rate,
        logging_steps=1,
        save_strategy="steps",
        save_steps=save_steps,
        save_only_model=True,  # adapters and trainer_state.json, no optimizer state
        save_total_limit=math.ceil(steps / save_steps),  # Axolotl's default keeps only 4
    )
    if loss == "ipo":
        cfg.update(rl="ipo", ipo_tau=beta, ipo_sft_weight=0.0)  # pure IPO against DPO
    else:  # plain DPO: TRL's default loss_type, sigmoid; the plugin stays inert
        cfg.update(rl="dpo", rl_beta=beta)
    return cfg


def steps_for(pairs: int, epochs: int, micro_batch: int) -> int:
    return math.ceil(pairs / micro_batch) * epochs


def find_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every saved LoRA checkpoint, by step."""
    found = []
    for folder in Path(output_dir).glob("checkpoint-*"):
        match = CHECKPOINT.fullmatch(folder.name)
        if match and (folder / "adapter_config.json").is_file():
            found.append((int(match[1]), folder))
    return sorted(found)


def trl_logs(trainer_state: Path, beta: float) -> list[dict[str, float]]:
    """TRL's per-step training logs from a trainer_state.json: loss, summed log-ratio margin
    (rewards/margins / beta) and the summed chosen/rejected log-probs of the step's batch."""
    history = json.loads(Path(trainer_state).read_text(encoding="utf-8"))["log_history"]
    return [
        {
            "step": int(record["step"]),
            "loss": float(record["loss"]),
            "summed_margin": float(record["rewards/margins"]) / beta,
            "logps_chosen_summed": float(record["logps/chosen"]),
            "logps_rejected_summed": float(record["logps/rejected"]),
        }
        for record in history
        if "loss" in record and "rewards/margins" in record
    ]


def expected_first_loss(loss: str, beta: float) -> float:
    """The loss at policy == reference (LoRA's B starts at 0): (1/(2 tau))^2 for IPO, log 2 for
    DPO's sigmoid loss."""
    return (1.0 / (2.0 * beta)) ** 2 if loss == "ipo" else math.log(2.0)


def summed_margins(policy_chosen, policy_rejected, ref_chosen, ref_rejected) -> list[float]:
    """The log-ratio margin summed over tokens (what DPO's sigmoid acts on), per pair."""
    return [
        (pc.logp_sum - rc.logp_sum) - (pr.logp_sum - rr.logp_sum)
        for pc, pr, rc, rr in zip(
            policy_chosen, policy_rejected, ref_chosen, ref_rejected, strict=True
        )
    ]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def checkpoint_metrics(policy: dict[str, list], ref: dict[str, list]) -> dict[str, float]:
    """Metrics of one model from its answer scores and the reference's (keys: train_chosen,
    train_rejected, heldout_chosen, heldout_rejected)."""
    from axolotl_ipo.evaluation.metrics import gold_nll, implicit_margins, preference_accuracy

    def sets(prefix: str, scores: dict[str, list]) -> list[list]:
        return [scores[f"{prefix}_chosen"], scores[f"{prefix}_rejected"]]

    train = implicit_margins(*sets("train", policy), *sets("train", ref))
    held = implicit_margins(*sets("heldout", policy), *sets("heldout", ref))
    return {
        "train_margin_avg": _mean(train),
        "train_margin_sum": _mean(summed_margins(*sets("train", policy), *sets("train", ref))),
        "train_accuracy": preference_accuracy(train),
        "train_chosen_logp": _mean([s.mean for s in policy["train_chosen"]]),
        "train_rejected_logp": _mean([s.mean for s in policy["train_rejected"]]),
        "train_chosen_logp_summed": _mean([s.logp_sum for s in policy["train_chosen"]]),
        "train_rejected_logp_summed": _mean([s.logp_sum for s in policy["train_rejected"]]),
        "heldout_accuracy": preference_accuracy(held),
        "heldout_margin_avg": _mean(held),
        "heldout_gold_nll": gold_nll(policy["heldout_chosen"]),
        "heldout_rejected_logp": _mean([s.mean for s in policy["heldout_rejected"]]),
    }


def format_table(results: dict[str, Any], target: float) -> str:
    """Markdown: one row per (run, checkpoint step); step 0 is the base model."""
    header = ["run", "step", "epoch", *[label.format(target=target) for _, label in COLUMNS]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for loss, run in results.items():
        for row in run["checkpoints"]:
            cells = [loss.upper(), str(row["step"]), f"{row['epoch']:g}"]
            cells += [f"{row[key]:.3f}" for key, _ in COLUMNS]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def select_pairs(main_config: Path, n: int) -> tuple[Any, list[dict[str, str]]]:
    """(validated main config, its first n cached sampled pairs as prompt/chosen/rejected)."""
    from axolotl_ipo.cli import load_config
    from axolotl_ipo.pairs.from_config import build_pairs_for_config

    cfg = load_config(str(main_config))
    result = build_pairs_for_config(cfg, progress=False)
    rows = result.store.read_pairs()
    if len(rows) < n:
        raise SystemExit(f"only {len(rows)} sampled pairs, asked for {n}")
    return cfg, [{k: row[k] for k in ("prompt", "chosen", "rejected")} for row in rows[:n]]


def train(cfg: dict[str, Any], run_dir: Path) -> float:
    """A fresh `python -m axolotl.cli.train` run in run_dir; its wall-clock seconds."""
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    path = run_dir / "config.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    env = {**os.environ, **ENV, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    log = run_dir / "train.log"
    started = time.perf_counter()
    with log.open("w") as handle:
        code = subprocess.call([sys.executable, "-m", "axolotl.cli.train", str(path)], cwd=ROOT,
                               env=env, stdout=handle, stderr=subprocess.STDOUT)
    if code:
        sys.exit(f"training {path} failed with exit code {code}; see {log}")
    return time.perf_counter() - started


def adapter_models(base: Any, folders: Sequence[Path]) -> Iterator[Any]:
    """The base model with each LoRA checkpoint in turn (one PeftModel, adapters swapped)."""
    from peft import PeftModel

    model = None
    for i, folder in enumerate(folders):
        name = f"checkpoint{i}"
        if model is None:
            model = PeftModel.from_pretrained(base, os.fspath(folder), adapter_name=name)
        else:
            model.load_adapter(os.fspath(folder), adapter_name=name)
            model.set_adapter(name)
            model.delete_adapter(f"checkpoint{i - 1}")
        yield model.eval()


def scoring_sets(pairs: list[dict[str, str]], held: Any, n_heldout: int) -> dict[str, tuple]:
    """(prompts, answers) per set: the training pairs, and the first n held-out pairs."""
    chosen = [held.golds[i] for i, _ in held.pairs[:n_heldout]]
    held_prompts = [held.prompts[i].text for i, _ in held.pairs[:n_heldout]]
    prompts = [row["prompt"] for row in pairs]
    return {
        "train_chosen": (prompts, [row["chosen"] for row in pairs]),
        "train_rejected": (prompts, [row["rejected"] for row in pairs]),
        "heldout_chosen": (held_prompts, chosen),
        "heldout_rejected": (held_prompts, [text for _, text in held.pairs[:n_heldout]]),
    }


def score(model: Any, tokenizer: Any, sets: dict[str, tuple], max_length: int | None,
          batch_size: int) -> dict[str, list]:
    from axolotl_ipo.evaluation.scoring import score_answers

    return {
        name: score_answers(model, tokenizer, prompts, answers, batch_size=batch_size,
                            max_length=max_length)
        for name, (prompts, answers) in sets.items()
    }


def plot(results: dict[str, Any], target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"ipo": "tab:blue", "dpo": "tab:red"}
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    (margin, summed, logps), (accuracy, nll, loss_ax) = axes
    for loss, run in results.items():
        rows, colour, label = run["checkpoints"], colours[loss], loss.upper()
        steps = [row["step"] for row in rows]

        def line(ax, key, style="-", text=label, rows=rows, steps=steps, colour=colour):
            ax.plot(steps, [row[key] for row in rows], style, marker="o", color=colour,
                    label=text)

        line(margin, "train_margin_avg")
        line(summed, "train_margin_sum")
        logs = run["trl_logs"]
        # TRL logs step s from the forward pass before update s: the model after s - 1 updates
        trl_steps = [r["step"] - 1 for r in logs]
        summed.plot(trl_steps, [r["summed_margin"] for r in logs], color=colour, alpha=0.3,
                    linewidth=1, label=f"{label}, TRL log (one 4-pair batch)")
        line(logps, "train_chosen_logp", "-", f"{label} chosen")
        line(logps, "train_rejected_logp", "--", f"{label} rejected")
        line(accuracy, "heldout_accuracy")
        line(nll, "heldout_gold_nll")
        loss_ax.plot(trl_steps, [r["loss"] for r in logs], color=colour, label=label)
    margin.axhline(target, color="tab:blue", linestyle=":",
                   label=f"IPO target 1/(2 tau) = {target:g}")
    accuracy.axhline(0.5, color="grey", linestyle=":", label="base model (ties count 1/2)")
    loss_ax.set_yscale("log")
    titles = [
        (margin, "training pairs: log-ratio margin, token-averaged"),
        (summed, "training pairs: log-ratio margin, summed over tokens"),
        (logps, "training pairs: log-prob per token"),
        (accuracy, "held-out: preference accuracy (IPO implicit reward)"),
        (nll, "held-out: gold-answer NLL per token"),
        (loss_ax, "TRL training loss of each 4-pair batch (log scale)"),
    ]
    for ax, title in titles:
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("SmolLM2-135M-Instruct, LoRA: IPO vs DPO overfitting a fixed set of pairs")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="example_configs/smollm2-ipo-cpu.yml")
    parser.add_argument("--heldout-data", default=".cache/data/nq_open_heldout.jsonl")
    parser.add_argument("--pairs", type=int, default=32, help="first N sampled training pairs")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--save-steps", type=int, default=8)
    parser.add_argument("--heldout", type=int, default=64, help="first N held-out pairs")
    parser.add_argument("--tau", type=float, default=0.1, help="IPO tau = DPO beta")
    parser.add_argument("--lr", type=float, help="learning rate (default: the config's)")
    parser.add_argument("--batch-size", type=int, default=16, help="scoring batch size")
    parser.add_argument("--out", default="outputs/overfitting")
    parser.add_argument("--skip-train", action="store_true", help="evaluate existing runs")
    parser.add_argument("--from-json", help="only print the table and plot of a previous --json")
    parser.add_argument("--plot", help="write the figure (PNG) here")
    parser.add_argument("--json", help="write every number here")
    args = parser.parse_args()
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
        print(format_table(report["runs"], report["settings"]["target_margin"]))
        if args.plot:
            plot(report["runs"], report["settings"]["target_margin"], Path(args.plot))
        return

    os.environ.update(ENV)
    os.chdir(ROOT)  # the configs' paths are relative to the repository
    started = time.perf_counter()
    main_raw = yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg, pairs = select_pairs(Path(args.config), args.pairs)
    pairs_path = out / "pairs.jsonl"
    pairs_path.write_text("".join(json.dumps(row) + "\n" for row in pairs), encoding="utf-8")
    steps = steps_for(args.pairs, args.epochs, int(main_raw["micro_batch_size"]))
    lr = args.lr if args.lr is not None else float(main_raw["learning_rate"])
    configs = {
        loss: train_config(main_raw, loss, pairs_path, out / loss,
                           steps=steps, epochs=args.epochs, save_steps=args.save_steps,
                           learning_rate=lr, beta=args.tau)
        for loss in LOSSES
    }
    train_seconds = {}
    for loss, run_cfg in configs.items():
        if args.skip_train:
            continue
        print(f"== train {loss.upper()}: {args.pairs} pairs x {args.epochs} epochs = {steps} "
              f"steps (log: {out / loss / 'train.log'})", flush=True)
        train_seconds[loss] = train(run_cfg, out / loss)
        print(f"   {train_seconds[loss]:.0f} s", flush=True)

    from axolotl.loaders import load_tokenizer

    from axolotl_ipo.evaluation.heldout import load_heldout
    from axolotl_ipo.evaluation.models import load_base

    eval_started = time.perf_counter()
    tokenizer = load_tokenizer(cfg)
    entry = {"type": "alpaca", "path": args.heldout_data}
    store = Path(cfg.dataset_prepared_path) / "ipo_heldout_pairs"  # cached by axolotl-ipo eval
    held = load_heldout(cfg, entry, tokenizer, store)
    sets = scoring_sets(pairs, held, args.heldout)
    max_length = cfg.get("sequence_len")
    base = load_base(cfg.base_model)
    print("== score the base model (step 0)", flush=True)
    ref = score(base, tokenizer, sets, max_length, args.batch_size)
    base_row = {"step": 0, "epoch": 0.0, **checkpoint_metrics(ref, ref)}
    per_epoch = steps / args.epochs
    results: dict[str, Any] = {}
    for loss in LOSSES:
        output_dir = Path(configs[loss]["output_dir"])
        checkpoints = find_checkpoints(output_dir)
        if not checkpoints:
            sys.exit(f"no checkpoints in {output_dir}")
        rows = [dict(base_row)]
        for (step, folder), model in zip(
            checkpoints, adapter_models(base, [f for _, f in checkpoints]), strict=True
        ):
            print(f"== score {loss.upper()} {folder.name}", flush=True)
            scores = score(model, tokenizer, sets, max_length, args.batch_size)
            rows.append({"step": step, "epoch": step / per_epoch,
                         **checkpoint_metrics(scores, ref)})
        base = model.unload()  # the plain base model again for the next run's adapters
        logs = trl_logs(checkpoints[-1][1] / "trainer_state.json", args.tau)
        results[loss] = {
            "checkpoints": rows,
            "trl_logs": logs,
            "first_loss": logs[0]["loss"] if logs else None,
            "expected_first_loss": expected_first_loss(loss, args.tau),
            "train_seconds": train_seconds.get(loss),
            "config": configs[loss],
        }
    eval_seconds = time.perf_counter() - eval_started
    target = 1.0 / (2.0 * args.tau)
    print()
    print(format_table(results, target))
    for loss, run in results.items():
        print(f"{loss.upper()}: first logged loss {run['first_loss']:.4f} "
              f"(policy = reference: expected {run['expected_first_loss']:.4f})")
    total = time.perf_counter() - started
    print(f"pairs {len(pairs)}, held-out pairs {len(sets['heldout_chosen'][0])}, {steps} steps, "
          f"lr {lr:g}, tau/beta {args.tau:g}; training "
          + ", ".join(f"{k.upper()} {v:.0f} s" for k, v in train_seconds.items())
          + f"; evaluation {eval_seconds:.0f} s; total {total:.0f} s")
    if args.json:
        report = {
            "command": " ".join(["python", *sys.argv]),
            "settings": {"pairs": len(pairs), "epochs": args.epochs, "steps": steps,
                         "save_steps": args.save_steps,
                         "heldout_pairs": len(sets["heldout_chosen"][0]),
                         "tau": args.tau, "learning_rate": lr, "target_margin": target},
            "seconds": {"train": train_seconds, "eval": eval_seconds, "total": total},
            "runs": results,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"json: {args.json}")
    if args.plot:
        plot(results, target, Path(args.plot))
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()

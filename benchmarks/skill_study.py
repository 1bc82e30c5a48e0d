"""Does `rl: ipo` on SFT data beat plain SFT on the same rows? Train each arm through the real
Axolotl CLI on identical rows with equal optimizer steps and the same LoRA settings and seed,
then score every arm's greedy answers on a held-out split with the task's check.

    python benchmarks/skill_study.py --train FILE --heldout FILE
        --check number|contains|normalized|rouge|MODULE:FN [--arms base,sft,ipo,...]
        [--steps 60] [--tau 0.1] [--base-model PATH] --json OUT [--plot PNG] [--work DIR]

FILEs are alpaca-format SFT rows (instruction, optional input, output). A check is called as
``fn(prompt_messages, gold, sample)`` and returns True/False or a score in [0, 1]; an arm's
accuracy is its mean over the held-out rows. Arms (the names in the JSON):
  base          the model before training
  sft           plain Axolotl SFT on the gold answers (no plugin), prompts rendered by the same
                chat template as the IPO arms (`type: chat_template`)
  ipo           `rl: ipo`: gold vs the base model's own samples, with the check as answer_check
  ipo_sft       the same plus `ipo_sft_weight` (TRL's sft loss on the chosen answer)
  sft_then_ipo  `rl: ipo` after SFT (Intel's order): the `sft` arm's adapter merged into the base
                is the generator of the rejected answers and IPO's reference; a new adapter on it
  dpo           `rl: dpo` on exactly the pairs of `ipo`
  selfplay_K    round K of `axolotl-ipo selfplay` on the `ipo` arm's config: round k samples
                from and is referenced to round k-1's merged model (K = 1, 2, 3, ...)
  ARM@TAU       a trained arm at its own tau (`ipo@1.0`, `ipo_sft@0.5`, `dpo@0.5` as rl_beta),
                in its own run folder, so one table can hold a tau sweep; bare names use --tau
Each arm's training run and evaluation are kept under --work and reused by a rerun.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from offline_env import OFFLINE_ENV

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("base", "sft", "ipo", "ipo_sft", "sft_then_ipo", "dpo")
TAU_ARMS = ("ipo", "ipo_sft", "sft_then_ipo", "dpo")  # the arms an ARM@TAU name may take
ROUND_KEYS = ("pairs", "samples_judged_right", "prompts_already_solved", "loss_first", "loss_last")
SELFPLAY = "selfplay_"  # selfplay_1, selfplay_2, ...: rounds of one `axolotl-ipo selfplay` run
PAIRS_TYPE = "axolotl_ipo.sampled_pairs"
LORA_KERNELS = ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel")


@dataclasses.dataclass(frozen=True)
class Study:
    train: Path
    heldout: Path
    check: str
    work: Path
    base_model: str
    steps: int = 60
    tau: float = 0.1
    sft_weight: float = 1.0
    learning_rate: float = 2e-4
    sequence_len: int = 512
    sample_tokens: int = 64  # rejected answers (rejection_sampling.max_new_tokens)
    answer_tokens: int = 64  # greedy held-out answers
    limit: int | None = None  # first N held-out rows
    seed: int = 42


# ---- configs ----------------------------------------------------------------------------------

def common_config(study: Study, out: Path) -> dict:
    """What every trained arm shares: the model, LoRA, optimizer, steps and seed (CPU, fp32)."""
    return {
        "base_model": study.base_model,
        "dataset_prepared_path": str(out / "prepared"),
        "output_dir": str(out / "model"),
        "val_set_size": 0,
        "sequence_len": study.sequence_len,
        "adapter": "lora", "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0,
        "lora_target_linear": True,
        "micro_batch_size": 4, "gradient_accumulation_steps": 1,
        "max_steps": study.steps, "num_epochs": 100,  # max_steps decides; epochs only bound it
        "learning_rate": study.learning_rate, "optimizer": "adamw_torch",
        "lr_scheduler": "constant", "logging_steps": 1, "save_strategy": "no",
        "seed": study.seed, "bf16": False, "fp16": False, "tf32": False,
    }


def messages_file(study: Study) -> Path:
    """The training rows as chat messages, built by the plugin's own alpaca reader, so the SFT
    arm's prompts are exactly the prompts the IPO arms sample and train on."""
    from axolotl_ipo.sft import extract_examples

    rows = read_jsonl(study.train)
    examples, invalid = extract_examples(rows, "alpaca", str(study.train))
    if invalid:
        raise SystemExit(f"{study.train}: {invalid[0].message}")
    path = study.work / "sft_messages.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"messages": [*ex.prompt_messages,
                                 {"role": "assistant", "content": ex.gold}]}) + "\n"
        for ex in examples
    ]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def ipo_keys(study: Study) -> dict:
    check = None if study.check == "rouge" else study.check
    sampling = {"max_new_tokens": study.sample_tokens, "temperature": 0.7, "seed": study.seed,
                "batch_size": 64}
    if check:
        sampling["answer_check"] = check
    return {"plugins": ["axolotl_ipo.IPOPlugin"], "rl": "ipo", "ipo_tau": study.tau,
            "datasets": [{"path": str(study.train), "type": "alpaca"}],
            "rejection_sampling": sampling}


def arm_variant(name: str, study: Study) -> tuple[str, Study]:
    """``ipo@1.0`` -> ("ipo", the study at tau 1.0); a bare name keeps the study's tau."""
    kind, _, tau = name.partition("@")
    return kind, (dataclasses.replace(study, tau=float(tau)) if tau else study)


def arm_config(name: str, study: Study) -> dict:
    out = study.work / name
    name, study = arm_variant(name, study)
    cfg = common_config(study, out)
    if name == "sft":
        cfg["datasets"] = [{"path": str(messages_file(study)), "type": "chat_template",
                            "chat_template": "tokenizer_default", "field_messages": "messages"}]
        # Axolotl auto-enables its Triton LoRA kernels for SFT (never for RL): CUDA only
        cfg.update(dict.fromkeys(LORA_KERNELS, False))
    elif name in ("ipo", "ipo_sft"):
        cfg.update(ipo_keys(study))
        if name == "ipo_sft":
            cfg["ipo_sft_weight"] = study.sft_weight
    elif name == "sft_then_ipo":
        cfg.update(ipo_keys(study))
        cfg["base_model"] = str(merged_sft(study))
    elif name == "dpo":
        cfg.update({"rl": "dpo", "rl_beta": study.tau,
                    "datasets": [{"path": str(pairs_file(study.work / "ipo")), "type": PAIRS_TYPE,
                                  "split": "train"}]})
    else:
        raise ValueError(f"unknown arm {name!r}; choose from {', '.join(ARMS)}")
    return cfg


def merged_sft(study: Study) -> Path:
    """The `sft` arm's adapter merged into the base by Axolotl's own `merge_lora` (made once)."""
    merged = study.work / "sft" / "model" / "merged"
    if not (merged / "config.json").is_file():
        if not (study.work / "sft" / "trained.json").is_file():
            raise SystemExit("sft_then_ipo needs the sft arm: list it before sft_then_ipo")
        run_logged([sys.executable, "-m", "axolotl.cli.merge_lora",
                    str(study.work / "sft" / "config.yml")], study.work / "sft" / "merge.log",
                   "merging the sft adapter")
    return merged


def pairs_file(run: Path) -> Path:
    found = sorted((run / "prepared").glob("ipo_pairs/**/pairs.jsonl"))
    if not found:
        raise SystemExit(f"no pairs.jsonl under {run / 'prepared'}: train the ipo arm first")
    return found[-1]


# ---- training ---------------------------------------------------------------------------------

def run_logged(argv: list[str], log_path: Path, what: str) -> None:
    """Run ``argv`` offline from the repository root (the task checks importable), output to
    ``log_path``; a failure ends the study with one line naming the log."""
    env = {**os.environ, **OFFLINE_ENV}
    paths = [str(ROOT), str(ROOT / "benchmarks"), env.get("PYTHONPATH")]  # task_checks too
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        code = subprocess.call(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if code:
        raise SystemExit(f"{what} failed (exit {code}); see {log_path}")


def train(name: str, study: Study) -> float | None:
    """Train one arm with `python -m axolotl.cli.train` (skipped when already trained);
    returns the training seconds, or None when reused."""
    run = study.work / name
    done = run / "trained.json"
    if done.is_file():
        return None
    cfg = arm_config(name, study)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    started = time.perf_counter()
    run_logged([sys.executable, "-m", "axolotl.cli.train", str(run / "config.yml")],
               run / "train.log", f"arm {name}: training")
    seconds = time.perf_counter() - started
    done.write_text(json.dumps({"seconds": round(seconds, 1)}), encoding="utf-8")
    return seconds


def selfplay(study: Study, rounds: int) -> float | None:
    """`axolotl-ipo selfplay --rounds N` on the ipo arm's config (finished rounds are kept by
    the command itself); returns its seconds, or None when every round was already done."""
    run = study.work / "selfplay"
    records = run / "selfplay.json"
    if records.is_file():
        if len(json.loads(records.read_text(encoding="utf-8"))["rounds"]) >= rounds:
            return None
    cfg = {**common_config(study, run), **ipo_keys(study), "output_dir": str(run)}  # round-K/
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    started = time.perf_counter()
    run_logged([sys.executable, "-m", "axolotl_ipo.cli", "selfplay", str(run / "config.yml"),
                "--rounds", str(rounds)], run / "selfplay.log", f"selfplay ({rounds} rounds)")
    return time.perf_counter() - started


def selfplay_round(name: str) -> int | None:
    """K of an arm named ``selfplay_K`` (K >= 1), else None."""
    rest = name.removeprefix(SELFPLAY)
    return int(rest) if name.startswith(SELFPLAY) and rest.isdigit() and int(rest) >= 1 else None


def known_arm(name: str) -> bool:
    kind, at, tau = name.partition("@")
    if not at:
        return kind in ARMS or selfplay_round(kind) is not None
    try:
        return kind in TAU_ARMS and float(tau) > 0
    except ValueError:
        return False


def selfplay_rounds(arms: list[str]) -> int:
    return max((selfplay_round(n) or 0 for n in arms), default=0)


def round_record(study: Study, index: int) -> dict:
    """Round ``index`` of the self-play run: its merged model and pair counts (selfplay.json)."""
    path = study.work / "selfplay" / "selfplay.json"
    records = json.loads(path.read_text(encoding="utf-8"))["rounds"]
    return next(r for r in records if r["round"] == index)


# ---- evaluation -------------------------------------------------------------------------------

def load_check(name: str):
    """The study's scorer: ``rouge`` (ROUGE-L F1 against the gold answer) or any
    `rejection_sampling.answer_check` the plugin knows (built-in or ``module:function``)."""
    if name == "rouge":
        return lambda _messages, gold, sample: rouge_l(gold[0], sample)
    from axolotl_ipo.checks import load_check as plugin_check

    return plugin_check(name)


def _words(text: str) -> list[str]:
    import re

    return re.findall(r"[a-z0-9]+", text.lower())


def rouge_l(reference: str, candidate: str) -> float:
    """ROUGE-L F1 over lowercased alphanumeric tokens (the LCS of the two token lists)."""
    ref, cand = _words(reference), _words(candidate)
    if not ref or not cand:
        return 0.0
    previous = [0] * (len(cand) + 1)
    for r in ref:
        current = [0]
        for j, c in enumerate(cand):
            current.append(previous[j] + 1 if r == c else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    if not lcs:
        return 0.0
    precision, recall = lcs / len(cand), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def heldout_prompts(study: Study, tokenizer) -> tuple[list, list[str]]:
    from axolotl_ipo.pairs import render_prompts
    from axolotl_ipo.sft import extract_examples

    rows = read_jsonl(study.heldout)[: study.limit]
    examples, invalid = extract_examples(rows, "alpaca", str(study.heldout),
                                         answers_field="answers")
    prompts, bad = render_prompts(examples, tokenizer, study.sequence_len)
    if invalid or bad:
        raise SystemExit(f"{study.heldout}: {(invalid + bad)[0].message}")
    return prompts, [p.example.gold for p in prompts]


def arm_model(name: str, study: Study):
    from axolotl_ipo.evaluation.models import load_base, load_trained

    if selfplay_round(name):
        return load_base(round_record(study, selfplay_round(name))["model"])
    kind, _ = arm_variant(name, study)
    base_model = merged_sft(study) if kind == "sft_then_ipo" else study.base_model
    base = load_base(str(base_model))
    return base if name == "base" else load_trained(base, study.work / name / "model")


def evaluate(name: str, study: Study, tokenizer) -> dict:
    """Per-row check scores, greedy answers, gold NLL and answer length of one arm (cached)."""
    from axolotl_ipo.checks import gold_answers
    from axolotl_ipo.evaluation.metrics import gold_nll
    from axolotl_ipo.evaluation.run import greedy_answers
    from axolotl_ipo.evaluation.scoring import score_answers

    cache = study.work / name / f"eval-{study.limit or 'all'}-{study.answer_tokens}.json"
    if cache.is_file():
        return json.loads(cache.read_text(encoding="utf-8"))
    prompts, golds = heldout_prompts(study, tokenizer)
    model = arm_model(name, study)
    started = time.perf_counter()
    # 32 prompts per batch, no token budget: the batches every arm so far was evaluated with
    answers = greedy_answers(model, tokenizer, prompts, study.answer_tokens, batch_size=32,
                             batch_tokens=None)
    check = load_check(study.check)
    scores = [float(check(p.example.prompt_messages, gold_answers(gold, p.example.answers), answer))
              for p, gold, answer in zip(prompts, golds, answers, strict=True)]
    nll = gold_nll(score_answers(model, tokenizer, [p.text for p in prompts], golds,
                                 batch_size=16, max_length=study.sequence_len))
    result = {"scores": scores, "answers": answers, "gold_nll": nll,
              "words": sum(len(a.split()) for a in answers) / max(len(answers), 1),
              "eval_seconds": round(time.perf_counter() - started, 1)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result), encoding="utf-8")
    return result


# ---- report -----------------------------------------------------------------------------------

def summarise(results: dict[str, dict]) -> dict[str, dict]:
    from axolotl_ipo.evaluation.metrics import paired_bootstrap

    arms = {}
    for name, res in results.items():
        scores = res["scores"]
        arm = {"accuracy": sum(scores) / len(scores), "gold_nll": res["gold_nll"],
               "answer_words": res["words"], "n": len(scores)}
        for other in ("sft", "base"):
            if other in results and other != name:
                ci = paired_bootstrap(results[other]["scores"], scores)
                arm[f"change_vs_{other}"] = ci["change"]
                arm[f"ci_vs_{other}"] = [ci["low"], ci["high"]]
        arms[name] = arm
    return arms


def _ci(arm: dict, other: str) -> str:
    if f"ci_vs_{other}" not in arm:
        return "-"
    lo, hi = arm[f"ci_vs_{other}"]
    return f"{arm[f'change_vs_{other}']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def table(arms: dict[str, dict]) -> str:
    lines = ["| arm | accuracy | vs sft [95% CI] | vs base [95% CI] | gold NLL/token | words |",
             "|---|---|---|---|---|---|"]
    for name, arm in arms.items():
        lines.append(f"| {name} | {arm['accuracy']:.3f} | {_ci(arm, 'sft')} | {_ci(arm, 'base')} "
                     f"| {arm['gold_nll']:.3f} | {arm['answer_words']:.1f} |")
    return "\n".join(lines)


def plot(arms: dict[str, dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(arms)
    values = [arms[n]["accuracy"] for n in names]
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 3.5))
    ax.bar(names, values, color=["#999" if n in ("base", "sft") else "#3a7" for n in names])
    if "sft" in arms:  # the bar to beat
        ax.axhline(arms["sft"]["accuracy"], color="#555", linestyle="--", linewidth=1)
    ax.set_ylabel("held-out accuracy")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ---- command line -----------------------------------------------------------------------------

def machine() -> dict:
    """Where the numbers come from: CPU count, Python and the libraries that train."""
    import platform
    from importlib.metadata import version

    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(),
            **{name: version(name) for name in ("torch", "transformers", "trl", "axolotl")}}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def parse_args(argv: list[str] | None) -> tuple[Study, list[str], argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", type=Path, required=True)
    p.add_argument("--heldout", type=Path, required=True)
    p.add_argument("--check", required=True, help="number|contains|normalized|rouge|MODULE:FN")
    p.add_argument("--arms", default="base,sft,ipo")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--tau", type=float, default=0.1)
    p.add_argument("--sft-weight", type=float, default=1.0)
    p.add_argument("--learning-rate", type=float, default=2e-4)
    p.add_argument("--sequence-len", type=int, default=512)
    p.add_argument("--sample-tokens", type=int, default=64)
    p.add_argument("--answer-tokens", type=int, default=64)
    p.add_argument("--limit", type=int, help="evaluate the first N held-out rows")
    p.add_argument("--base-model", default=".cache/models/SmolLM2-135M-Instruct")
    p.add_argument("--work", type=Path, default=Path("outputs/skill_study"))
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--plot", type=Path)
    a = p.parse_args(argv)
    arms = [n.strip() for n in a.arms.split(",") if n.strip()]
    unknown = sorted(n for n in set(arms) if not known_arm(n))
    if unknown:
        p.error(f"--arms: unknown {', '.join(unknown)}; choose from {', '.join(ARMS)}, "
                f"{SELFPLAY}K (K = 1, 2, ...), or ARM@TAU for a trained "
                f"arm other than sft (ipo@1.0)")
    study = Study(a.train.resolve(), a.heldout.resolve(), a.check, a.work.resolve(),
                  a.base_model, a.steps, a.tau, a.sft_weight, a.learning_rate, a.sequence_len,
                  a.sample_tokens, a.answer_tokens, a.limit)
    return study, arms, a


def main(argv: list[str] | None = None) -> int:
    study, arms, args = parse_args(argv)
    os.environ.update(OFFLINE_ENV)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(study.base_model)
    results, seconds = {}, {}
    rounds = selfplay_rounds(arms)
    for name in arms:
        if selfplay_round(name):
            seconds.setdefault("selfplay", selfplay(study, rounds))
        elif name != "base":
            seconds[name] = train(name, study)
        results[name] = evaluate(name, study, tokenizer)
        print(f"{name}: accuracy {sum(results[name]['scores']) / len(results[name]['scores']):.3f}",
              flush=True)
    summary = summarise(results)
    for name in filter(selfplay_round, summary):  # how much of its own data each round solves
        record = round_record(study, selfplay_round(name))
        summary[name].update({k: record.get(k) for k in ROUND_KEYS})
    report = {"date": time.strftime("%Y-%m-%d"), "machine": machine(),
              "study": {k: str(v) for k, v in dataclasses.asdict(study).items()},
              "arms": summary, "train_seconds": seconds,
              "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table(summary))
    if args.plot:
        plot(summary, args.plot, f"{study.train.name}: held-out {study.check}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

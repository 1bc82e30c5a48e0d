"""Does `rl: ipo` on SFT data beat plain SFT on the same rows? Train each arm through the real
Axolotl CLI on identical rows with equal optimizer steps and the same LoRA settings and seed,
then score every arm's greedy answers on a held-out split with the task's check.

    python research/skill_study/skill_study.py --train FILE --heldout FILE
        --check number|contains|normalized|rouge|MODULE:FN [--arms base,sft,ipo,...]
        [--steps 60] [--tau 0.1] [--base-model PATH] --json OUT [--plot PNG] [--work DIR]

FILEs are alpaca-format SFT rows (instruction, optional input, output). A check is called as
``fn(prompt_messages, gold, sample)`` and returns True/False or a score in [0, 1]; an arm's
accuracy is its mean over the held-out rows. Arms (the names in the JSON):
  base          the model before training
  sft           plain Axolotl SFT on the gold answers (no plugin), prompts rendered by the same
                chat template as the IPO arms (`type: chat_template`)
  sft_cosine    the same with Axolotl's `lr_scheduler: cosine` (its default warm-up, 3% of the
                steps, then the rate decays to 0) instead of the study's constant rate
  ipo           `rl: ipo`: gold vs the base model's own samples, with the check as answer_check
  ipo_sft       the same plus `ipo_sft_weight` (TRL's sft loss on the chosen answer)
  sft_then_ipo  `rl: ipo` after SFT (Intel's order): the `sft` arm's adapter merged into the base
                is the generator of the rejected answers and IPO's reference; a new adapter on it
  dpo           `rl: dpo` on exactly the pairs of `ipo`
  defaults      the plugin at its defaults: `rl: ipo` and the datasets, no other IPO key;
                sampling keys only for the CPU budget; the collapse guard on (its 12 of 256
                rows never trained on). The recipe arms have it only with --guard
  sft_then_defaults  the same from the merged `sft` model
  sft_then_ipo_sft  the same plus `ipo_sft_weight` (SPIN's order with Iterative RPO's NLL term)
  sft_then_sft  the equal-steps control for every sft_then_* arm: more plain SFT on all the
                training rows from the merged SFT model (a new adapter, as the IPO arms after
                SFT start one): SFT continued from the very model the preference arms start from
  sft_then_sft_wrong  the control for sft_then_ipo*: more SFT on the merged SFT model (a new
                adapter), on the gold answers of exactly the prompts sft_then_ipo gets pairs for
                (a sample of the SFT model judged wrong, same sampling): is a gain after SFT the
                preference loss, or the choice of prompts?
  selfplay_K    round K of `axolotl-ipo selfplay` on the `ipo` arm's config: round k samples
                from and is referenced to round k-1's merged model (K = 1, 2, 3, ...)
  selfplay_sft_K  the same rounds on the `ipo_sft` arm's config
  sft_then_selfplay_sft_K  round K of those rounds started from the merged `sft` model: round 1
                is sft_then_ipo_sft, round k samples from and is referenced to round k-1's
                model (SPIN's and Iterative RPO's iterations after SFT)
  sft_then_selfplay_nll_K  the same rounds with the NLL term on every row: a prompt the model
                already solves stays with its gold answer on both sides (`solved: nll`, zero IPO
                gradient), and round k trains with seed + k - 1 (`selfplay --reseed`), as
                sft_then_sft_reseeded_K does: its control
  sft_then_sft_rounds_K  the control for sft_then_selfplay_sft_K: round K of plain SFT restarts
                after SFT: round k trains a new adapter on every row from round k-1's merged model
                (round 1: the merged `sft` model), merged by Axolotl's merge_lora, as many steps
                and restarts as the self-play rounds. Every round has the study's seed, and
                Axolotl's seeded shuffle then gives every round the same order of the rows: a
                round shorter than an epoch trains on the same first rows each time
  sft_then_sft_reseeded_K  the same restarts with seed + k - 1 in round k (round 1 is
                sft_then_sft_rounds_1), so each restart draws its own order of the rows
-wWEIGHT sets an ipo_sft arm's own `ipo_sft_weight` (`ipo_sft@0.1-w20`).
An arm name may end in @TAU (its own tau: `ipo@1.0`, `ipo_sft@0.5`, `dpo@0.5` as rl_beta,
`selfplay_sft_2@1.0`) and -sSTEPS (its own optimizer steps, per round for self-play: `sft-s120`,
`selfplay_sft_3@1.0-s20`) and -nSAMPLES (its own samples per prompt, for the arms that sample:
`sft_then_ipo_sft@1.0-s60-n16`); such an arm has its own run folder, so one table can hold a
sweep.
Each arm's training run and evaluation are kept under --work and reused by a rerun.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))  # offline_env: what benchmarks and tests run in
from offline_env import OFFLINE_ENV  # noqa: E402

ARMS = ("base", "sft", "sft_cosine", "ipo", "ipo_sft", "sft_then_ipo", "sft_then_ipo_sft",
        "sft_then_sft", "sft_then_sft_wrong", "dpo", "defaults", "sft_then_defaults")
DEFAULTS = ("defaults", "sft_then_defaults")  # the plugin's defaults: no IPO key at all
# self-play kind -> its rounds' recipe; the sft_then_ kind starts from the merged sft model
SELFPLAY = {"selfplay": "ipo", "selfplay_sft": "ipo_sft", "sft_then_selfplay_sft": "ipo_sft",
            "sft_then_selfplay_nll": "ipo_sft_nll"}
RESEEDED_SELFPLAY = ("sft_then_selfplay_nll",)  # `axolotl-ipo selfplay --reseed`
SFT_ROUNDS = "sft_then_sft_rounds"  # plain SFT restarted per round: self-play's control
SFT_RESEEDED = "sft_then_sft_reseeded"  # the same, round k with seed + k - 1
SFT_ROUND_KINDS = (SFT_ROUNDS, SFT_RESEEDED)
# plain Axolotl SFT, no plugin
SFT_KINDS = ("sft", "sft_cosine", "sft_then_sft", "sft_then_sft_wrong", *SFT_ROUND_KINDS)
ROUNDED = (*SELFPLAY, *SFT_ROUND_KINDS)  # the kinds whose arms are rounds of one run (KIND_K)
NO_TAU = ("base", *SFT_KINDS, *DEFAULTS)  # the arms without a tau
ROUND_KEYS = ("pairs", "samples_judged_right", "prompts_already_solved", "loss_first", "loss_last")
ARM_NAME = re.compile(r"(?P<kind>[a-z_]+?)(?:_(?P<round>\d+))?(?:@(?P<tau>[^@]+?))?"
                      r"(?:-s(?P<steps>\d+))?(?:-n(?P<samples>\d+))?(?:-w(?P<weight>\d+(?:\.\d+)?))?")
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
    num_samples: int = 1  # samples per prompt (rejection_sampling.num_samples)
    guard: bool = False  # the collapse guard in the recipe arms (always on in `defaults`)


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm of the table, parsed from its name:
    KIND[_ROUND][@TAU][-sSTEPS][-nSAMPLES][-wWEIGHT]."""
    name: str
    kind: str  # one of ARMS or of ROUNDED
    round: int | None = None  # K of a round's arm
    tau: float | None = None
    steps: int | None = None
    suffix: str = ""  # "@TAU-sSTEPS-nSAMPLES" as written
    samples: int | None = None  # samples per prompt (rejection_sampling.num_samples)
    weight: float | None = None  # ipo_sft_weight (the ipo_sft kinds)

    @property
    def run(self) -> str:
        """The folder of its training run: the rounds of one kind, tau and steps share it."""
        return self.name if self.round is None else self.kind + self.suffix

    def study(self, study: Study) -> Study:
        """The study as this arm trains it: its own tau, steps and samples per prompt where its
        name gives them."""
        return dataclasses.replace(study, tau=self.tau or study.tau,
                                   steps=self.steps or study.steps,
                                   num_samples=self.samples or study.num_samples,
                                   sft_weight=study.sft_weight if self.weight is None
                                   else self.weight)


def parse_arm(name: str) -> Arm | None:
    """The arm a name means, or None when the name is not one (see the module's docstring)."""
    m = ARM_NAME.fullmatch(name)
    if not m:
        return None
    kind, rnd, tau, steps, samples, weight = m.group("kind", "round", "tau", "steps", "samples",
                                                     "weight")
    if kind not in ARMS and kind not in ROUNDED:
        return None
    if (rnd is None) != (kind not in ROUNDED) or (rnd is not None and int(rnd) < 1):
        return None
    if (tau is not None and kind in NO_TAU) or (steps is not None and kind == "base"):
        return None
    if samples is not None and (kind in ("base", *SFT_KINDS, "dpo")
                                or int(samples) < 1):
        return None  # only the arms that sample have samples per prompt (dpo reuses ipo's)
    if weight is not None and "ipo_sft" not in kind and "selfplay_sft" not in kind:
        return None  # only the recipes with the NLL term have its weight
    try:
        value = None if tau is None else float(tau)
    except ValueError:
        return None
    if (value is not None and not value > 0) or (steps is not None and int(steps) < 1):
        return None
    return Arm(name, kind, None if rnd is None else int(rnd), value,
               None if steps is None else int(steps), name[m.end("round"):] if rnd else "",
               None if samples is None else int(samples),
               None if weight is None else float(weight))


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


@functools.cache
def training_examples(study: Study) -> list:
    """The training rows read by the plugin's own alpaca reader (row i is example i: a row it
    cannot read ends the study)."""
    from axolotl_ipo.sft_rows import extract_examples

    examples, invalid = extract_examples(read_jsonl(study.train), "alpaca", str(study.train))
    if invalid:
        raise SystemExit(f"{study.train}: {invalid[0].message}")
    return examples


def messages_file(study: Study) -> Path:
    """The training rows as chat messages, so the SFT arm's prompts are exactly the prompts the
    IPO arms sample and train on (written once; an unchanged file is left alone)."""
    path = study.work / "sft_messages.jsonl"
    text = "".join(map(message_line, training_examples(study)))
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return path


def message_line(example) -> str:
    """One training row as a chat-messages JSON line: its prompt, then its gold answer."""
    return json.dumps({"messages": [*example.prompt_messages,
                                    {"role": "assistant", "content": example.gold}]}) + "\n"


def chat_dataset(path: Path) -> list[dict]:
    """An SFT dataset of chat messages, rendered by the tokenizer's template (the `sft` arms)."""
    return [{"path": str(path), "type": "chat_template", "chat_template": "tokenizer_default",
             "field_messages": "messages"}]


def ipo_keys(study: Study) -> dict:
    check = None if study.check == "rouge" else study.check
    # one pair store for the study: arms that sample the same generator with the same settings
    # share their pairs (its cache key holds the generator, settings and rows)
    sampling = {"max_new_tokens": study.sample_tokens, "temperature": 0.7, "seed": study.seed,
                "batch_size": 64, "output_dir": str(study.work / "pair_store")}
    if check:
        sampling["answer_check"] = check
    if study.num_samples != 1:  # a wrong sample for more prompts (Iterative RPO draws many)
        sampling["num_samples"] = study.num_samples
    keys = {"plugins": ["axolotl_ipo.IPOPlugin"], "rl": "ipo", "ipo_tau": study.tau,
            "datasets": [{"path": str(study.train), "type": "alpaca"}],
            "rejection_sampling": sampling}
    if not study.guard:  # every row trained on, as plain SFT and the runs before the guard
        keys["ipo_guard_rows"] = 0
    return keys


def defaults_keys(study: Study) -> dict:
    """The plugin at its defaults: `rl: ipo` and the datasets; the sampling keys only make
    sampling fit the study's CPU budget (answer length, batch, seed, the shared store)."""
    sampling = {k: v for k, v in ipo_keys(study)["rejection_sampling"].items()
                if k in ("max_new_tokens", "batch_size", "seed", "output_dir")}
    return {"plugins": ["axolotl_ipo.IPOPlugin"], "rl": "ipo",
            "datasets": [{"path": str(study.train), "type": "alpaca"}],
            "rejection_sampling": sampling}


def recipe_keys(kind: str, study: Study) -> dict:
    """The plugin's keys for an IPO recipe: ``ipo``, ``ipo_sft`` (the same plus the NLL term) or
    ``ipo_sft_nll`` (the NLL term on every row: solved prompts kept, `solved: nll`)."""
    keys = ipo_keys(study)
    # `ipo` is pure IPO, whatever the plugin's default NLL weight
    keys["ipo_sft_weight"] = study.sft_weight if kind in ("ipo_sft", "ipo_sft_nll") else 0.0
    if kind == "ipo_sft_nll":
        keys["rejection_sampling"]["solved"] = "nll"
    return keys


def sft_config(study: Study, out: Path, rows: Path, base_model: str) -> dict:
    """Plain Axolotl SFT (no plugin) on the chat-message rows in ``rows`` from ``base_model``."""
    cfg = {**common_config(study, out), "base_model": base_model, "datasets": chat_dataset(rows)}
    # Axolotl auto-enables its Triton LoRA kernels for SFT (never for RL): CUDA only
    return {**cfg, **dict.fromkeys(LORA_KERNELS, False)}


def arm_config(name: str, study: Study) -> dict:
    arm = parse_arm(name)
    if arm is None or arm.round is not None:
        raise ValueError(f"unknown arm {name!r}; choose from {', '.join(ARMS)}")
    out, kind, study = study.work / arm.run, arm.kind, arm.study(study)
    cfg = common_config(study, out)
    if kind in SFT_KINDS:
        rows = (out / "wrong_messages.jsonl" if kind == "sft_then_sft_wrong"  # wrong_rows_file
                else messages_file(study))
        cfg = sft_config(study, out, rows, study.base_model if kind in ("sft", "sft_cosine")
                         else str(merged_sft(study)))
        if kind == "sft_cosine":
            cfg["lr_scheduler"] = "cosine"
    elif kind in ("ipo", "ipo_sft"):
        cfg.update(recipe_keys(kind, study))
    elif kind in DEFAULTS:
        cfg.update(defaults_keys(study))
        if kind == "sft_then_defaults":
            cfg["base_model"] = str(merged_sft(study))
    elif kind in ("sft_then_ipo", "sft_then_ipo_sft"):
        cfg.update(recipe_keys(kind.removeprefix("sft_then_"), study))
        cfg["base_model"] = str(merged_sft(study))
    elif kind == "dpo":
        cfg.update({"rl": "dpo", "rl_beta": study.tau,
                    "datasets": [{"path": str(pairs_file(study.work / "ipo")), "type": PAIRS_TYPE,
                                  "split": "train"}]})
    return cfg


def merged_sft(study: Study) -> Path:
    """The `sft` arm's adapter merged into the base by Axolotl's own `merge_lora` (made once)."""
    run = study.work / "sft"
    if not is_merged(run) and not (run / "trained.json").is_file():
        raise SystemExit("sft_then_ipo needs the sft arm: list it before sft_then_ipo")
    return merged(run, "the sft adapter")


def merged_path(run: Path) -> Path:
    """Where Axolotl's `merge_lora` writes a run's merged model (its output_dir's merged/)."""
    return run / "model" / "merged"


def is_merged(run: Path) -> bool:
    return (merged_path(run) / "config.json").is_file()


def merged(run: Path, what: str) -> Path:
    """A trained run's adapter merged into its base by Axolotl's `merge_lora` (made once)."""
    if not is_merged(run):
        run_logged([sys.executable, "-m", "axolotl.cli.merge_lora", str(run / "config.yml")],
                   run / "merge.log", f"merging {what}")
    return merged_path(run)


def wrong_rows_file(arm: Arm, study: Study) -> Path:
    """The control arm's SFT rows: `axolotl-ipo sample` with sft_then_ipo's sampling (same
    generator, seed, check and samples per prompt) picks the prompts the SFT model still gets
    wrong; their rows with the gold answers, as chat messages. Its pairs are kept in
    ``<run>/pairs`` so they can be compared with sft_then_ipo's."""
    run, arm_study = study.work / arm.run, arm.study(study)
    cfg = {**common_config(arm_study, run), **recipe_keys("ipo", arm_study),
           "base_model": str(merged_sft(study))}
    run.mkdir(parents=True, exist_ok=True)
    (run / "sample_config.yml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    run_logged([sys.executable, "-m", "axolotl_ipo.cli", "sample", str(run / "sample_config.yml"),
                "--output", str(run / "pairs")], run / "sample.log",
               f"arm {arm.name}: sampling the SFT model's answers")
    rows = sorted({pair["row"] for pair in read_jsonl(run / "pairs" / "pairs.jsonl")})
    if not rows:
        raise SystemExit(f"arm {arm.name}: the SFT model answered every training prompt right; "
                         "nothing to train on")
    examples = training_examples(study)
    path = run / "wrong_messages.jsonl"
    path.write_text("".join(message_line(examples[i]) for i in rows), encoding="utf-8")
    return path


def pairs_file(run: Path) -> Path:
    """The pairs a run trained on: the last `pairs: PATH` its training log printed (the
    study's shared store), else the run's own store (runs before the shared one)."""
    log = run / "train.log"
    if log.is_file():
        named = [line.removeprefix("pairs: ").strip()
                 for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
                 if line.startswith("pairs: ")]
        if named:
            return Path(named[-1])
    found = sorted((run / "prepared").glob("ipo_pairs/**/pairs.jsonl"))
    if not found:
        raise SystemExit(f"no pairs.jsonl under {run / 'prepared'}: train the ipo arm first")
    return found[-1]


# ---- training ---------------------------------------------------------------------------------

def run_logged(argv: list[str], log_path: Path, what: str) -> None:
    """Run ``argv`` offline from the repository root (the task checks importable), output to
    ``log_path``; a failure ends the study with one line naming the log."""
    env = {**os.environ, **OFFLINE_ENV}
    paths = [str(ROOT), str(Path(__file__).parent), env.get("PYTHONPATH")]  # task_checks too
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"{what} (log: {log_path})", flush=True)
    with log_path.open("w") as log:
        code = subprocess.call(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if code:
        raise SystemExit(f"{what} failed (exit {code}); see {log_path}")


def same_settings(run: Path, cfg: dict, what: str) -> None:
    """A finished run is reused only when it was trained with ``cfg`` (a rerun with another
    --seed, --steps or --num-samples in the same --work would otherwise report the old arm)."""
    saved = yaml.safe_load((run / "config.yml").read_text(encoding="utf-8"))
    differ = sorted(k for k in set(cfg) | set(saved) if cfg.get(k) != saved.get(k))
    if differ:
        raise SystemExit(f"{what}: {run} was trained with other settings "
                         f"({', '.join(differ)}); use a new --work or delete {run}")


def train(name: str, study: Study) -> float | None:
    """Train one arm with `python -m axolotl.cli.train` (skipped when already trained with
    the same settings); returns the training seconds, or None when reused."""
    arm = parse_arm(name)
    before = ((lambda: wrong_rows_file(arm, study)) if arm.kind == "sft_then_sft_wrong"
              else None)
    return train_run(study.work / name, arm_config(name, study), f"arm {name}", before)


def train_run(run: Path, cfg: dict, what: str, before=None) -> float | None:
    """Train ``cfg`` in ``run`` with `python -m axolotl.cli.train` (``before()`` first), or
    reuse it when already trained with the same settings; the seconds taken, or None."""
    done = run / "trained.json"
    if done.is_file():
        same_settings(run, cfg, what)
        return None
    run.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if before is not None:
        before()
    (run / "config.yml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    run_logged([sys.executable, "-m", "axolotl.cli.train", str(run / "config.yml")],
               run / "train.log", f"{what}: training")
    seconds = time.perf_counter() - started
    done.write_text(json.dumps({"seconds": round(seconds, 1)}), encoding="utf-8")
    return seconds


def sft_round_dir(study: Study, arm: Arm, k: int) -> Path:
    """Round ``k``'s folder of a run of plain SFT restarts; a reseeded run's round 1 is the
    plain restarts' round 1 (the same config: the study's seed)."""
    if arm.kind == SFT_RESEEDED and k == 1:
        return study.work / arm.run.replace(SFT_RESEEDED, SFT_ROUNDS, 1) / "round-1"
    return study.work / arm.run / f"round-{k}"


def sft_rounds(arm: Arm, study: Study, rounds: int) -> float | None:
    """Plain SFT restarted ``rounds`` times after SFT (the control of self-play after SFT):
    round k trains a new adapter on every row from round k-1's merged model (round 1: the
    merged sft model) and merges it, with the study's seed (``sft_then_sft_reseeded``: seed +
    k - 1); finished rounds are reused. Returns the seconds taken, or None when every round
    was done."""
    arm_study, base, spent = arm.study(study), merged_sft(study), None
    rows = messages_file(study)
    for k in range(1, rounds + 1):
        run, what = sft_round_dir(study, arm, k), f"arm {arm.run} round {k}"
        seed = arm_study.seed + (k - 1 if arm.kind == SFT_RESEEDED else 0)
        cfg = sft_config(dataclasses.replace(arm_study, seed=seed), run, rows, str(base))
        started = time.perf_counter()
        fresh = train_run(run, cfg, what) is not None
        fresh |= not is_merged(run)
        base = merged(run, what)
        if fresh:
            spent = (spent or 0.0) + time.perf_counter() - started
    return spent


def selfplay(arm: Arm, study: Study, rounds: int) -> float | None:
    """`axolotl-ipo selfplay --rounds N` on its recipe's config (finished rounds are kept by
    the command itself); returns its seconds, or None when every round was already done."""
    run = study.work / arm.run
    records = run / "selfplay.json"
    study = arm.study(study)
    cfg = {**common_config(study, run), **recipe_keys(SELFPLAY[arm.kind], study),
           "output_dir": str(run)}  # round-K/
    if arm.kind.startswith("sft_then_"):
        cfg["base_model"] = str(merged_sft(study))
    if records.is_file():
        same_settings(run, cfg, f"arm {arm.run}")
        if len(json.loads(records.read_text(encoding="utf-8"))["rounds"]) >= rounds:
            return None
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    started = time.perf_counter()
    reseed = ["--reseed"] if arm.kind in RESEEDED_SELFPLAY else []
    run_logged([sys.executable, "-m", "axolotl_ipo.cli", "selfplay", str(run / "config.yml"),
                "--rounds", str(rounds), *reseed], run / "selfplay.log",
               f"{arm.run}: axolotl-ipo selfplay, {rounds} rounds")
    return time.perf_counter() - started


def selfplay_rounds(arms: list[Arm]) -> dict[str, int]:
    """How many rounds each run of rounds needs: the most any of its arms asks for."""
    rounds: dict[str, int] = {}
    for arm in arms:
        if arm.round is not None:
            rounds[arm.run] = max(rounds.get(arm.run, 0), arm.round)
    return rounds


def round_record(study: Study, arm: Arm) -> dict:
    """A self-play arm's round: its merged model and pair counts (its run's selfplay.json);
    a plain SFT round's: its merged model."""
    if arm.kind in SFT_ROUND_KINDS:
        return {"model": str(merged_path(sft_round_dir(study, arm, arm.round)))}
    path = study.work / arm.run / "selfplay.json"
    records = json.loads(path.read_text(encoding="utf-8"))["rounds"]
    return next(r for r in records if r["round"] == arm.round)


# ---- evaluation -------------------------------------------------------------------------------

def load_check(name: str):
    """The study's scorer: ``rouge`` (ROUGE-L F1 against the gold answer) or any
    `rejection_sampling.answer_check` the plugin knows (built-in or ``module:function``)."""
    if name == "rouge":
        return lambda _messages, gold, sample: rouge_l(gold[0], sample)
    from axolotl_ipo.pairs.checks import load_check as plugin_check

    return plugin_check(name)


def pairs_of(arm: Arm, study: Study) -> Path | None:
    """The sampled pairs an arm trained on (``dpo``: those of ``ipo``), or None (base, sft)."""
    if arm.kind in SELFPLAY:
        return pairs_file(study.work / arm.run / f"round-{arm.round}")
    if arm.kind == "sft_then_sft_wrong":  # the pairs that chose its prompts
        return study.work / arm.run / "pairs" / "pairs.jsonl"
    if arm.kind in ("base", *SFT_KINDS):
        return None
    return pairs_file(study.work / ("ipo" if arm.kind == "dpo" else arm.run))


def rejected_score(path: Path, study: Study, eos: str) -> dict:
    """How good the rejected answers an arm trained on were, by the study's own check against
    the row's gold answer: how many pairs and their mean score. A self-play round's value is
    how well the model it sampled from already did on its own training prompts. Solved prompts
    kept for the NLL term (`solved: nll`, rejected = chosen) are no pairs: not counted."""
    examples = training_examples(study)
    check = load_check(study.check)
    from axolotl_ipo.pairs.build import real_pairs

    pairs = real_pairs(read_jsonl(path))
    scores = [float(check(examples[r["row"]].prompt_messages, [examples[r["row"]].gold],
                          r["rejected"].removesuffix(eos))) for r in pairs]
    return {"pairs": len(pairs), "rejected_score": sum(scores) / max(len(scores), 1)}


def _words(text: str) -> list[str]:
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
    from axolotl_ipo.pairs.build import render_prompts
    from axolotl_ipo.sft_rows import extract_examples

    rows = read_jsonl(study.heldout)[: study.limit]
    examples, invalid = extract_examples(rows, "alpaca", str(study.heldout),
                                         answers_field="answers")
    prompts, bad = render_prompts(examples, tokenizer, study.sequence_len)
    if invalid or bad:
        raise SystemExit(f"{study.heldout}: {(invalid + bad)[0].message}")
    return prompts, [p.example.gold for p in prompts]


def arm_model(name: str, study: Study):
    from axolotl_ipo.evaluation.models import load_base, load_trained

    arm = parse_arm(name)
    if arm.round is not None:
        return load_base(round_record(study, arm)["model"])
    base_model = merged_sft(study) if arm.kind.startswith("sft_then_") else study.base_model
    base = load_base(str(base_model))
    return base if name == "base" else load_trained(base, study.work / name / "model")


def evaluate(name: str, study: Study, tokenizer) -> dict:
    """Per-row check scores, greedy answers, gold NLL and answer length of one arm (cached)."""
    from axolotl_ipo.evaluation.metrics import gold_nll
    from axolotl_ipo.evaluation.run import greedy_answers
    from axolotl_ipo.evaluation.scoring import score_answers
    from axolotl_ipo.pairs.checks import gold_answers

    cache = study.work / name / f"eval-{study.limit or 'all'}-{study.answer_tokens}.json"
    if cache.is_file():
        return json.loads(cache.read_text(encoding="utf-8"))
    prompts, golds = heldout_prompts(study, tokenizer)
    print(f"arm {name}: answering and scoring {len(prompts)} held-out prompts", flush=True)
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


def generator_of(name: str, study: Study) -> tuple[str, str]:
    """(label, path) of the model an arm's IPO pairs would be sampled from: the merged SFT
    model for the arms that start from it, else the base model."""
    if (parse_arm(name) or Arm(name, name)).kind.startswith("sft_then_"):
        return "sft", str(merged_sft(study))
    return "base", study.base_model


def heldout_samples(label: str, path: str, study: Study, tokenizer) -> list[str]:
    """One sampled answer per held-out prompt from the generator at ``path`` (temperature 0.7,
    the study's seed and sample length, as the training pairs are sampled); cached."""
    cache = study.work / f"heldout_samples-{label}-{study.limit or 'all'}.json"
    if cache.is_file():
        return json.loads(cache.read_text(encoding="utf-8"))
    from axolotl_ipo.evaluation.models import load_base
    from axolotl_ipo.pairs.sampler import SamplingSettings
    from axolotl_ipo.pairs.sampler.transformers_backend import TransformersGenerator

    prompts, _ = heldout_prompts(study, tokenizer)
    print(f"sampling the {label} model's answers to {len(prompts)} held-out prompts", flush=True)
    generator = TransformersGenerator.from_model(load_base(path), tokenizer, label)
    settings = SamplingSettings(max_new_tokens=study.sample_tokens, temperature=0.7,
                                seed=study.seed, batch_size=32, batch_tokens=None,
                                stop_tokens=(tokenizer.eos_token,))
    samples = []
    for index in range(0, len(prompts), 32):
        batch = [p.text for p in prompts[index:index + 32]]
        samples += [c.text for c in generator.generate(batch, settings, index // 32)]
    generator.close()
    cache.write_text(json.dumps(samples), encoding="utf-8")
    return samples


def preference(name: str, study: Study, tokenizer) -> dict:
    """Held-out preference accuracy: how often the arm's model gives the gold answer a higher
    log-probability per token than a sample of its generator (the model its pairs come from)
    judged wrong by the study's check (ROUGE: any sample unlike the gold); cached."""
    label, path = generator_of(name, study)
    cache = study.work / name / f"pref-{label}-{study.limit or 'all'}.json"
    if cache.is_file():
        return json.loads(cache.read_text(encoding="utf-8"))
    from axolotl_ipo.evaluation.metrics import logprob_preference_accuracy
    from axolotl_ipo.evaluation.scoring import score_answers
    from axolotl_ipo.pairs.checks import gold_answers

    samples = heldout_samples(label, path, study, tokenizer)
    prompts, golds = heldout_prompts(study, tokenizer)
    check = load_check(study.check)
    wrong = [i for i, (p, gold, sample) in enumerate(zip(prompts, golds, samples, strict=True))
             if float(check(p.example.prompt_messages, gold_answers(gold, p.example.answers),
                            sample)) < 1.0 and sample.strip() != gold.strip()]
    model = arm_model(name, study)
    texts = [prompts[i].text for i in wrong]
    chosen = score_answers(model, tokenizer, texts, [golds[i] for i in wrong], batch_size=16,
                           max_length=study.sequence_len)
    rejected = score_answers(model, tokenizer, texts, [samples[i] for i in wrong],
                             batch_size=16, max_length=study.sequence_len)
    result = {"pref_accuracy": logprob_preference_accuracy(chosen, rejected),
              "pref_pairs": len(wrong), "pref_generator": label}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result), encoding="utf-8")
    return result


# ---- report -----------------------------------------------------------------------------------

def summarise(results: dict[str, dict], versus: tuple[str, ...] = ()) -> dict[str, dict]:
    """Each arm's mean score, and its paired change against `sft`, `base` and each of
    ``versus`` (e.g. the SFT arm with as many steps as a two-stage arm)."""
    from axolotl_ipo.evaluation.metrics import paired_bootstrap

    arms = {}
    for name, res in results.items():
        scores = res["scores"]
        arm = {"accuracy": sum(scores) / len(scores), "gold_nll": res["gold_nll"],
               "answer_words": res["words"], "n": len(scores),
               **{k: res[k] for k in ("pref_accuracy", "pref_pairs", "pref_generator")
                  if k in res},
               "scores": scores}  # per held-out row, for pooling replicates
        for other in dict.fromkeys(("sft", "base", *versus)):
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


def table(arms: dict[str, dict], versus: tuple[str, ...] = ()) -> str:
    others = [o for o in dict.fromkeys(("sft", "base", *versus)) if o in arms]
    lines = ["| arm | accuracy | " + "".join(f"vs {o} [95% CI] | " for o in others)
             + "gold NLL/token | words | preference accuracy | its rejected answers' score |",
             "|---|---|" + "---|" * len(others) + "---|---|---|---|"]
    for name, arm in arms.items():
        rejected = f"{arm['rejected_score']:.3f}" if "rejected_score" in arm else "-"
        cis = "".join(f"{_ci(arm, o)} | " for o in others)
        pref = f"{arm['pref_accuracy']:.3f}" if "pref_accuracy" in arm else "-"
        lines.append(f"| {name} | {arm['accuracy']:.3f} | {cis}"
                     f"{arm['gold_nll']:.3f} | {arm['answer_words']:.1f} | {pref} | {rejected} |")
    return "\n".join(lines)


def plot(arms: dict[str, dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(arms)
    values = [arms[n]["accuracy"] for n in names]
    fig, ax = plt.subplots(figsize=(0.9 * len(names) + 2, 4.5))
    baselines = [(parse_arm(n) or Arm(n, n)).kind in ("base", *SFT_KINDS) for n in names]
    ax.bar(names, values, color=["#999" if b else "#3a7" for b in baselines])
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
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
    p.add_argument("--seed", type=int, default=42,
                   help="training and sampling seed (a replicate: a new --work folder)")
    p.add_argument("--sequence-len", type=int, default=512)
    p.add_argument("--sample-tokens", type=int, default=64)
    p.add_argument("--answer-tokens", type=int, default=64)
    p.add_argument("--num-samples", type=int, default=1,
                   help="samples per training prompt until one is judged wrong")
    p.add_argument("--limit", type=int, help="evaluate the first N held-out rows")
    p.add_argument("--guard", action="store_true",
                   help="the recipe arms with the collapse guard on, as by default (it holds "
                        "min(5%%, 64) training rows out); without it they train on every row")
    p.add_argument("--preference", action="store_true",
                   help="also the held-out preference accuracy: gold over a wrong sample of "
                        "the arm's generator, by the arm's log-probabilities per token")
    p.add_argument("--base-model", default=".cache/models/SmolLM2-135M-Instruct")
    p.add_argument("--work", type=Path, default=Path("outputs/skill_study"))
    p.add_argument("--versus", default="",
                   help="arms every arm is also compared with, e.g. sft-s120 for sft_then_* arms")
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--plot", type=Path)
    a = p.parse_args(argv)
    arms = [n.strip() for n in a.arms.split(",") if n.strip()]
    unknown = sorted(n for n in set(arms) if parse_arm(n) is None)
    if unknown:
        p.error(f"--arms: unknown {', '.join(unknown)}; choose from {', '.join(ARMS)} or "
                f"{'_K, '.join(ROUNDED)}_K (K = 1, 2, ...), each but base optionally with "
                f"-sSTEPS, each but base and sft with @TAU, each that samples with -nSAMPLES "
                f"(ipo@1.0, sft-s120, selfplay_sft_3@1.0-s20, sft_then_ipo_sft@1.0-s60-n16)")
    a.versus = tuple(n.strip() for n in a.versus.split(",") if n.strip())
    missing = [n for n in a.versus if n not in arms]
    if missing:
        p.error(f"--versus: {', '.join(missing)} not in --arms; add it there")
    study = Study(a.train.resolve(), a.heldout.resolve(), a.check, a.work.resolve(),
                  a.base_model, a.steps, a.tau, a.sft_weight, a.learning_rate, a.sequence_len,
                  a.sample_tokens, a.answer_tokens, a.limit, a.seed, a.num_samples, a.guard)
    return study, arms, a


def main(argv: list[str] | None = None) -> int:
    study, arms, args = parse_args(argv)
    os.environ.update(OFFLINE_ENV)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(study.base_model)
    results, seconds = {}, {}
    parsed = {name: parse_arm(name) for name in arms}
    rounds = selfplay_rounds(list(parsed.values()))
    for name, arm in parsed.items():
        if arm.round is not None:
            if arm.run not in seconds:
                runner = sft_rounds if arm.kind in SFT_ROUND_KINDS else selfplay
                seconds[arm.run] = runner(arm, study, rounds[arm.run])
        elif name != "base":
            seconds[name] = train(name, study)
        results[name] = evaluate(name, study, tokenizer)
        if args.preference:
            results[name] = {**results[name], **preference(name, study, tokenizer)}
        print(f"{name}: accuracy {sum(results[name]['scores']) / len(results[name]['scores']):.3f}",
              flush=True)
    summary = summarise(results, args.versus)
    for name, arm in parsed.items():
        if arm.round is not None and arm.kind in SELFPLAY:  # how much of its data it solves
            record = round_record(study, arm)
            summary[name].update({k: record.get(k) for k in ROUND_KEYS})
        pairs = pairs_of(arm, study)
        if pairs is not None:
            summary[name].update(rejected_score(pairs, study, tokenizer.eos_token or ""))
    report = {"date": time.strftime("%Y-%m-%d"), "machine": machine(),
              "study": {k: str(v) for k, v in dataclasses.asdict(study).items()},
              "arms": summary, "train_seconds": seconds,
              "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table(summary, args.versus))
    if args.plot:
        plot(summary, args.plot, f"{study.train.name}: held-out {study.check}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

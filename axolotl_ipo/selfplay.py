"""Self-play rounds: round r trains IPO on pairs sampled from the model round r-1 produced.

Each round is what a user could run by hand, in ``<output_dir>/round-<r>/``: a config
(``base_model`` = the previous round's model, which is then the generator of the rejected
answers and IPO's reference), ``python -m axolotl.cli.train`` through the launcher, Axolotl's
own ``python -m axolotl.cli.merge_lora`` for LoRA/QLoRA, and ``axolotl-ipo eval`` when held-out
data is given. ``round.json`` is written last: a round that has it is never redone; one
without it continues where it stopped (training is skipped once ``TRAINED`` exists, the pair
store resumes its batches). ``<output_dir>/selfplay.json`` collects every finished round.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from axolotl_ipo.evaluation.curves import read_curves
from axolotl_ipo.pairs.store import atomic_write
from axolotl_ipo.upstream.axolotl import MERGE_MODULE, TRAIN_MODULE

__all__ = ["SelfplayError", "SelfplayRun", "format_rounds", "run_selfplay"]

ROUND_RECORD = "round.json"  # written last: the round is finished
TRAINED = "TRAINED"  # training exited 0; a rerun goes on with the merge
SUMMARY = "selfplay.json"
ADAPTERS = ("lora", "qlora")


class SelfplayError(RuntimeError):
    """One line: what failed, where (round, log), what to do."""


@dataclass
class SelfplayRun:
    """What `axolotl-ipo selfplay` was asked to do, from a validated config."""

    config_path: Path
    output_dir: Path
    rounds: int
    launcher: list[str]
    adapter: str | None = None
    eval_data: str | None = None
    echo: TextIO | None = None  # where the subprocesses' output is mirrored (the terminal)
    reseed: bool = False  # round k trains with seed + k - 1 (round_seed)

    def round_dir(self, index: int) -> Path:
        return self.output_dir / f"round-{index}"


def round_seed(raw: Mapping[str, Any], index: int, reseed: bool) -> int | None:
    """The `seed` round ``index`` trains with when it is not the config's own: with --reseed,
    seed + index - 1 from round 2 on (the config's seed, else transformers' default). Axolotl
    orders the rows by the seed, so without it a round shorter than an epoch on the same rows
    trains on the same first rows every round."""
    if not reseed or index == 1:
        return None
    seed = raw.get("seed")
    if seed is None:
        from axolotl_ipo.upstream.transformers import default_training_seed

        seed = default_training_seed()
    return int(seed) + index - 1


def round_config(
    raw: Mapping[str, Any], round_dir: Path, base_model: str | None, seed: int | None = None
) -> dict:
    """The user's config for one round: its own output and prepared data (so the pairs are
    sampled again), and from round 2 on ``base_model`` = the previous round's model, which
    then also generates the rejected answers (``rejection_sampling.model`` applies to round 1
    only), and ``seed`` when given (:func:`round_seed`). Every other key,
    ``rejection_sampling``'s included, is kept as written."""
    cfg = copy.deepcopy(dict(raw))
    if seed is not None:
        cfg["seed"] = seed
    cfg["output_dir"] = str(round_dir)
    cfg["dataset_prepared_path"] = str(round_dir / "prepared")
    sampling = dict(cfg.pop("rejection_sampling", None) or {})
    sampling.pop("output_dir", None)  # the store lives under the round's prepared data
    if base_model is not None:
        cfg["base_model"] = base_model
        sampling.pop("model", None)
        cfg.pop("lora_model_dir", None)  # a new adapter on the merged model
    if sampling:
        cfg["rejection_sampling"] = sampling
    return cfg


def train_argv(launcher: list[str], config: Path) -> list[str]:
    """``launcher`` runs Python (default: this interpreter); ``-m axolotl.cli.train`` is added
    unless the launcher already names the module."""
    module = [] if TRAIN_MODULE in launcher else ["-m", TRAIN_MODULE]
    return [*launcher, *module, str(config)]


def _run_logged(argv: list[str], log_path: Path, echo: TextIO | None) -> int:
    """Run ``argv``, appending its output to ``log_path`` and mirroring it to ``echo``."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
        try:
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                text=True, errors="replace", bufsize=1,
            )
        except OSError as err:
            raise SelfplayError(
                f"cannot run {argv[0]!r} ({err.strerror}); check --launcher, log: {log_path}"
            ) from None
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if echo is not None:
                echo.write(line)
                echo.flush()
        return proc.wait()


def _train(run: SelfplayRun, index: int, config: Path) -> None:
    round_dir = run.round_dir(index)
    if (round_dir / TRAINED).is_file():
        return
    log = round_dir / "train.log"
    code = _run_logged(train_argv(run.launcher, config), log, run.echo)
    if code != 0:
        raise SelfplayError(
            f"round {index}: training failed (exit code {code}); see its log {log}. Fix the "
            "cause and rerun the same command: finished rounds are kept, this one continues."
        )
    atomic_write(round_dir / TRAINED, "")


def _check_merged(merged: Path, log: Path, index: int) -> None:
    config = merged / "config.json"
    if not config.is_file():
        raise SelfplayError(f"round {index}: the merge wrote no {config}; see its log {log}")
    if "quantization_config" in json.loads(config.read_text(encoding="utf-8")):
        raise SelfplayError(
            f"round {index}: the merged model {merged} is quantized; the next round needs full "
            "weights. Use a base_model whose weights are not pre-quantized."
        )


WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _cut_short(file: Path) -> bool:
    """A weight file smaller than its own header says (safetensors), or without the end of its
    zip archive (torch's .bin): a save that stopped before its last bytes."""
    size = file.stat().st_size
    if file.suffix != ".safetensors":
        return not zipfile.is_zipfile(file)
    with open(file, "rb") as handle:
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else size
        if 8 + length > size:
            return True
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            return True
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
    return 8 + length + max(ends, default=0) > size


def _weights_problem(folder: Path) -> str | None:
    """What is missing or cut short in the model weights saved in ``folder``; None when whole."""
    index = next((folder / name for name in WEIGHT_INDEXES if (folder / name).is_file()), None)
    if index is not None:
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        missing = [shard for shard in shards if not (folder / shard).is_file()]
        if missing:
            return f"{', '.join(missing)} (listed in {index}) missing"
        files = [folder / shard for shard in shards]
    else:
        files = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
        if not files:
            return f"no model weights ({' or '.join(WEIGHT_FILES)}) in {folder}"
    cut = [str(file) for file in files if _cut_short(file)]
    return f"{', '.join(cut)} is cut short" if cut else None


def _produce_model(run: SelfplayRun, index: int, config: Path) -> Path:
    """The round's model: the adapter merged into its base (Axolotl's merge, which loads the
    base without 4-bit quantization and keeps its stored dtype), or the full fine-tune itself."""
    round_dir = run.round_dir(index)
    if run.adapter not in ADAPTERS:
        if not (round_dir / "config.json").is_file():
            raise SelfplayError(f"round {index}: training saved no model in {round_dir}")
        problem = _weights_problem(round_dir)
        if problem:
            raise SelfplayError(
                f"round {index}: the saved model is not whole: {problem}, so it cannot be the "
                f"next round's base model. Delete {round_dir / TRAINED} and rerun the same "
                "command to train this round again (with room on the disk for the save)."
            )
        return round_dir
    merged = round_dir / "merged"
    shutil.rmtree(merged, ignore_errors=True)  # a merge cut short is redone whole
    log = round_dir / "train.log"
    code = _run_logged([sys.executable, "-m", MERGE_MODULE, str(config)], log, run.echo)
    if code != 0:
        raise SelfplayError(
            f"round {index}: merging the LoRA adapter failed (exit code {code}); see its log "
            f"{log}. Rerun the same command to retry the merge (training is kept)."
        )
    _check_merged(merged, log, index)
    return merged


def _evaluate(run: SelfplayRun, index: int, config: Path) -> dict[str, Any] | None:
    """`axolotl-ipo eval` of the round's adapter or model against its base (the generator)."""
    if run.eval_data is None:
        return None
    round_dir = run.round_dir(index)
    out = round_dir / "eval"
    argv = [sys.executable, "-m", "axolotl_ipo.cli", "eval", str(config),
            "--data", run.eval_data, "--adapter", str(round_dir), "--output", str(out)]
    log = round_dir / "eval.log"
    code = _run_logged(argv, log, run.echo)
    if code != 0:
        raise SelfplayError(
            f"round {index}: held-out evaluation failed (exit code {code}); see its log {log}. "
            "Rerun the same command to retry it (training and merge are kept)."
        )
    report = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    return {"metrics": str(out / "metrics.json"), "models": report["models"],
            "task_changes": report.get("task_changes")}


def pair_stats(round_dir: Path) -> dict[str, Any]:
    """Pairs, samples judged right and prompts already solved, from the round's pair store
    (``prepared/ipo_pairs/<key>/summary.json``, the completed store written last)."""
    stores = sorted(
        (path.parent for path in (round_dir / "prepared" / "ipo_pairs").glob("*/summary.json")
         if (path.parent / "COMPLETE").is_file()),
        key=lambda folder: (folder / "summary.json").stat().st_mtime,
    )
    if not stores:
        return {"pairs": None, "samples_judged_right": None, "prompts_already_solved": None}
    summary = json.loads((stores[-1] / "summary.json").read_text(encoding="utf-8"))
    return {  # PairsSummary.to_dict's keys (axolotl_ipo/pairs/summary.py)
        "pairs": summary.get("pairs_out"),
        "samples_judged_right": summary.get("samples_right"),
        "prompts_already_solved": summary.get("already_solved"),
        "pair_store": str(stores[-1]),
    }


def loss_ends(round_dir: Path) -> dict[str, float | None]:
    """First and last logged training loss, from the round's ``ipo_metrics.jsonl``."""
    curves = read_curves(round_dir)
    if curves is None:
        return {"loss_first": None, "loss_last": None}
    return {"loss_first": curves.loss[0], "loss_last": curves.loss[-1]}


def _play_round(run: SelfplayRun, raw: Mapping[str, Any], index: int, previous: Path | None):
    """Round ``index`` from wherever it stopped; returns its record (also ``round.json``)."""
    round_dir = run.round_dir(index)
    cfg = round_config(raw, round_dir, None if previous is None else str(previous),
                       round_seed(raw, index, run.reseed))
    config = round_dir / "config.yml"
    atomic_write(config, yaml.safe_dump(cfg, sort_keys=False))
    generator = (cfg.get("rejection_sampling") or {}).get("model") or cfg["base_model"]
    _train(run, index, config)
    model = _produce_model(run, index, config)
    record = {
        "round": index,
        "generator": generator,
        "base_model": cfg["base_model"],
        "config": str(config),
        **pair_stats(round_dir),
        **loss_ends(round_dir),
        "model": str(model),
        "heldout": _evaluate(run, index, config),
        "log": str(round_dir / "train.log"),
    }
    atomic_write(round_dir / ROUND_RECORD, json.dumps(record, indent=2) + "\n")
    return record


def finished_round(run: SelfplayRun, index: int) -> dict[str, Any] | None:
    path = run.round_dir(index) / ROUND_RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def run_selfplay(run: SelfplayRun) -> list[dict[str, Any]]:
    """Rounds 1..R (finished ones are read, never redone); ``selfplay.json`` after each."""
    if run.rounds < 1:
        raise SelfplayError(f"--rounds must be at least 1, got {run.rounds}")
    raw = yaml.safe_load(run.config_path.read_text(encoding="utf-8")) or {}
    records: list[dict[str, Any]] = []
    previous: Path | None = None
    for index in range(1, run.rounds + 1):
        record = finished_round(run, index) or _play_round(run, raw, index, previous)
        records.append(record)
        previous = Path(record["model"])
        summary = {"config": str(run.config_path), "rounds": records}
        atomic_write(run.output_dir / SUMMARY, json.dumps(summary, indent=2) + "\n")
    return records


def _short(path: Any, root: Path) -> str:
    text = str(path)
    try:
        return str(Path(text).resolve().relative_to(root.resolve()))
    except ValueError:
        return text


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def format_rounds(records: list[dict[str, Any]], output_dir: Path) -> str:
    """One line per round: generator, pairs, checks, losses, model, held-out scores."""
    head = ["round", "generator", "pairs", "right", "solved", "loss first", "loss last", "model"]
    heldout = any(r.get("heldout") for r in records)
    if heldout:
        head += ["pref. acc.", "gold NLL", "contains"]
    rows = [head]
    for r in records:
        row = [r["round"], _short(r["generator"], output_dir), r["pairs"],
               r["samples_judged_right"], r["prompts_already_solved"], r["loss_first"],
               r["loss_last"], _short(r["model"], output_dir)]
        if heldout:
            trained = ((r.get("heldout") or {}).get("models") or {}).get("trained") or {}
            row += [trained.get(k) for k in ("preference_accuracy", "gold_nll", "task_contains")]
        rows.append([_cell(value) for value in row])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(["self-play rounds", *lines, f"summary: {output_dir / SUMMARY}"])

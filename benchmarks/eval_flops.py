"""The matmul work an `axolotl-ipo eval` of a config must do, counted without padding, and the
time it takes at the machine's measured matmul rate: the floor no scorer or sampler beats in the
model's dtype.

    python benchmarks/eval_flops.py CONFIG --eval-dir OUTPUT_DIR/ipo_eval [--json]

Counts, from the files the evaluation left (its held-out pairs, the training pairs it scored
and both models' greedy answers): the held-out sampling (prompts and sampled answers), each
model's teacher-forced scoring (each prompt once, its prefix shared, every answer) and each
model's greedy answers (prompts and answers up to `max_new_tokens`). FLOPs per token = 2 x the
weights of the linear layers and the LM head (attention scores are left out: a floor).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from sampling import matmul_gflops  # noqa: E402

from axolotl_ipo.pairs.sampler.prefix import shared_prefix_length  # noqa: E402


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def flops_per_token(config) -> int:
    """2 x the parameters of every matmul a token goes through (projections, MLP, LM head)."""
    h, inter = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    layer = 2 * h * h + 2 * h * kv + 3 * h * inter
    return 2 * (config.num_hidden_layers * layer + h * config.vocab_size)


def prompt_tokens(ids: list[list[int]]) -> int:
    """Tokens of distinct prompts run once, their common prefix once."""
    distinct = list({tuple(p): None for p in ids})
    shared = shared_prefix_length(distinct) if len(distinct) > 1 else 0
    return shared + sum(len(p) - shared for p in distinct)


def count(cfg: dict, eval_dir: Path, tokenizer, max_new_tokens: int) -> dict[str, int]:
    def n(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompts(rows: list[dict]) -> int:
        return prompt_tokens([tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]
                              for r in rows])

    prepared = Path(cfg["dataset_prepared_path"])
    held = read_jsonl(next(prepared.glob("ipo_heldout_pairs/*/pairs.jsonl")))
    train = read_jsonl(sorted(prepared.glob("ipo_pairs/*/pairs.jsonl"))[-1])[:256]
    held_prompts = prompts(held)
    counts = {"held-out sampling": held_prompts + sum(n(r["rejected"]) for r in held)}
    held_scoring = held_prompts + sum(n(r["chosen"]) + n(r["rejected"]) for r in held)
    train_scoring = prompts(train) + sum(n(r["chosen"]) + n(r["rejected"]) for r in train)
    for model in ("base", "trained"):
        answers = read_jsonl(eval_dir / f"predictions_{model}.jsonl")
        counts[f"{model}: held-out scoring"] = held_scoring
        counts[f"{model}: training-pair scoring"] = train_scoring
        counts[f"{model}: greedy answers"] = prompts(answers) + sum(
            min(max_new_tokens, n(r["prediction"]) + 1) for r in answers)
    return counts


def main(argv: list[str] | None = None) -> dict:
    from transformers import AutoConfig, AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--eval-dir", type=Path, required=True)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    cfg = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    metrics = json.loads((args.eval_dir / "metrics.json").read_text(encoding="utf-8"))
    tokenizer = AutoTokenizer.from_pretrained(cfg["base_model"])
    per_token = flops_per_token(AutoConfig.from_pretrained(cfg["base_model"]))
    counts = count(cfg, args.eval_dir, tokenizer, metrics["settings"]["max_new_tokens"])
    tokens = sum(counts.values())
    gflops = matmul_gflops(torch.float32)
    result = {"tokens": counts, "total_tokens": tokens, "gflop_per_token": per_token / 1e9,
              "tflop": tokens * per_token / 1e12, "matmul_gflops": gflops,
              "floor_seconds": tokens * per_token / gflops / 1e9}
    print("| part | tokens |\n|---|---|")
    for part, value in counts.items():
        print(f"| {part} | {value} |")
    print(f"{tokens} tokens x {per_token / 1e9:.3f} GFLOP = {result['tflop']:.2f} TFLOP; matmul "
          f"{gflops:.0f} GFLOP/s ({torch.get_num_threads()} threads) -> floor "
          f"{result['floor_seconds']:.0f} s")
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

"""The evaluation's answer scorer against a per-sequence loop, on the same pairs, in one run.

    OMP_NUM_THREADS=1 python benchmarks/eval_speed.py [--model .cache/models/SmolLM2-135M-Instruct]
        [--data .cache/data/nq_open_heldout.jsonl | --pairs PAIRS.jsonl] [--n 64]
        [--batch-size 16] [--json]

Pairs: `--pairs` reads a pairs.jsonl (prompt, chosen, rejected; e.g. the held-out pairs that
`axolotl-ipo eval` sampled); otherwise the first N rows of the alpaca file `--data`, each prompt
rendered by the model's chat template, chosen = its gold answer, rejected = a wrong answer
built from the next row ("I think it is <its answer>. <its question>"). Every pair gives two
sequences (chosen, rejected) that share their prompt, as in the evaluation.

Ours: `score_encoded` (the evaluation's scorer: shared prefix once, each prompt once, answers
on its KV cache, sorted batches). Per-sequence loop: one full forward pass of prompt + answer
per sequence, log-softmax over every position, the answer tokens' log-probs summed (what TRL
computes for one sequence). Both get the same token ids; the largest difference of their sums
is printed. The last line is one JSON object with "ratio" (our sequences/s over the loop's).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from axolotl_ipo.evaluation.scoring import Encoded, encode_answers, score_encoded
from axolotl_ipo.pairs.build import render_prompts
from axolotl_ipo.sft_rows import extract_examples


def built_pairs(data: Path, tokenizer, n: int) -> list[dict]:
    """(prompt, chosen, rejected) from the first ``n`` alpaca rows of ``data``."""
    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()[: n + 1]]
    examples, _ = extract_examples(rows, "alpaca", data.name)
    prompts, _ = render_prompts(examples, tokenizer)
    pairs = []
    for i, prompt in enumerate(prompts[:n]):
        other = prompts[(i + 1) % len(prompts)].example
        wrong = f"I think it is {other.gold}. {other.prompt_messages[-1]['content']}"
        pairs.append({"prompt": prompt.text, "chosen": prompt.example.gold, "rejected": wrong})
    return pairs


def read_pairs(path: Path, n: int) -> list[dict]:
    lines = path.read_text(encoding="utf-8").splitlines()[:n]
    return [json.loads(line) for line in lines]


def per_sequence_loop(model, encoded: list[Encoded]) -> list[float]:
    """One full forward pass per sequence; the answer tokens' log-probs summed."""
    sums = []
    with torch.inference_mode():
        for prompt, answer in encoded:
            ids = torch.tensor([prompt + answer], dtype=torch.long)
            logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            targets = torch.tensor(answer, dtype=torch.long)
            positions = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(answer))
            sums.append(logps[positions, targets].sum().item())
    return sums


def measure(model, encoded: list[Encoded], batch_size: int, pad_id: int) -> dict:
    """Both scorers on the same ids: rates, ratio and the largest difference of the sums."""
    with torch.inference_mode():  # warm-up: first-call allocations count for neither
        model(input_ids=torch.tensor([encoded[0][0]], dtype=torch.long))
    start = time.perf_counter()
    loop = per_sequence_loop(model, encoded)
    loop_s = time.perf_counter() - start
    start = time.perf_counter()
    ours = score_encoded(model, encoded, batch_size=batch_size, pad_id=pad_id)
    ours_s = time.perf_counter() - start
    n = len(encoded)
    return {
        "sequences": n,
        "tokens": sum(len(p) + len(a) for p, a in encoded),
        "loop_seconds": loop_s,
        "ours_seconds": ours_s,
        "loop_sequences_per_s": n / loop_s,
        "ours_sequences_per_s": n / ours_s,
        "ratio": loop_s / ours_s,
        "max_abs_diff": max(abs(s.logp_sum - x) for s, x in zip(ours, loop, strict=True)),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=".cache/models/SmolLM2-135M-Instruct")
    parser.add_argument("--data", type=Path, default=Path(".cache/data/nq_open_heldout.jsonl"))
    parser.add_argument("--pairs", type=Path, help="a pairs.jsonl instead of --data")
    parser.add_argument("--n", type=int, default=64, help="pairs (two sequences each)")
    parser.add_argument("--batch-size", type=int, default=16, help="ours: answers per batch")
    parser.add_argument("--max-length", type=int, default=256, help="truncation, as in training")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    args = parse_args(argv)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    if args.pairs:
        pairs = read_pairs(args.pairs, args.n)
    else:
        pairs = built_pairs(args.data, tokenizer, args.n)
    prompts = [row["prompt"] for row in pairs] * 2
    answers = [row["chosen"] for row in pairs] + [row["rejected"] for row in pairs]
    encoded = encode_answers(tokenizer, prompts, answers, args.max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    result = measure(model, encoded, args.batch_size, pad)
    result.update(model=args.model, pairs=len(pairs), batch_size=args.batch_size,
                  threads=torch.get_num_threads())
    print(f"{args.model}, fp32, CPU, {result['threads']} torch threads "
          "(set OMP_NUM_THREADS=1 on a shared machine); "
          f"{len(pairs)} pairs = {result['sequences']} sequences, {result['tokens']} tokens")
    print("\n| scorer | seconds | sequences/s |\n|---|---|---|")
    print(f"| per-sequence loop (full forward, log-softmax everywhere) | "
          f"{result['loop_seconds']:.1f} | {result['loop_sequences_per_s']:.2f} |")
    print(f"| axolotl-ipo scorer, batch {args.batch_size} | {result['ours_seconds']:.1f} | "
          f"{result['ours_sequences_per_s']:.2f} |")
    print(f"\nratio {result['ratio']:.2f}x; largest difference of the summed log-probs "
          f"{result['max_abs_diff']:.2e}")
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

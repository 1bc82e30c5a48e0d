"""Throughput of the rejection sampler: rows/s and generated tokens/s per batch size.

    python benchmarks/sampling.py MODEL_PATH [--backend transformers|vllm]
        [--data rows.jsonl --format alpaca] [--n 64] [--batch-sizes 1,8,16,32]
        [--max-new-tokens 128] [--temperature 0.7] [--json results.json]

Without --data, prompts are synthetic alpaca rows of varied length. Prompts are rendered
with MODEL_PATH's chat template and batched exactly like build_pairs (longest first).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from axolotl_ipo.pairs import plan_batches, render_prompts
from axolotl_ipo.sampling import SamplingSettings, load_generator
from axolotl_ipo.sft import extract_examples

WORDS = "explain the idea behind gradient descent in simple terms for a curious student".split()


def synthetic_rows(n: int) -> list[dict]:
    return [
        {"instruction": " ".join(WORDS[: 4 + i % len(WORDS)] * (1 + i % 4)), "output": "x"}
        for i in range(n)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--backend", default="transformers")
    ap.add_argument("--data", type=Path)
    ap.add_argument("--format", default="auto")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-sizes", default="1,8,16,32")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch
    from transformers import AutoTokenizer

    if args.data:
        with open(args.data, encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()][: args.n]
    else:
        rows = synthetic_rows(args.n)
    examples, invalid = extract_examples(rows, args.format, str(args.data or "synthetic"))
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    prompts, too_long = render_prompts(examples, tokenizer)
    print(f"{len(prompts)} prompts ({len(invalid) + len(too_long)} invalid rows skipped)")

    t0 = time.perf_counter()
    generator = load_generator(args.backend, args.model)
    load_s = time.perf_counter() - t0
    results = []
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        settings = SamplingSettings(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
            batch_size=batch_size,
        )
        plan = plan_batches([p.n_tokens for p in prompts], batch_size)
        generator.generate([prompts[0].text], settings, 0)  # warm-up
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        tokens = truncated = 0
        start = time.perf_counter()
        for index, batch in enumerate(plan):
            out = generator.generate(
                [prompts[i].text for i in batch], settings, settings.batch_seed(index)
            )
            tokens += sum(c.n_tokens for c in out)
            truncated += sum(c.finish_reason == "length" for c in out)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        result = {
            "batch_size": batch_size,
            "rows": len(prompts),
            "seconds": round(seconds, 3),
            "rows_per_s": round(len(prompts) / seconds, 2),
            "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1),
            "truncated": truncated,
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20)
            if torch.cuda.is_available()
            else None,
        }
        results.append(result)
        print(json.dumps(result))
    generator.close()
    report = {
        "model": args.model,
        "backend": args.backend,
        "device": torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else platform.processor() or "cpu",
        "load_seconds": round(load_s, 2),
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "results": results,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

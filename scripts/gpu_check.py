"""The steps of scripts/gpu_check.sh, one process each; `report` prints the table.

    python3 scripts/gpu_check.py STEP --work DIR [--self-test]
    python3 scripts/gpu_check.py report --work DIR [--out DIR]

Tier 1 (torch, transformers, TRL, datasets; never Axolotl): random-weight models with real
shapes (SmolLM2-135M's, a ~1.2B Llama's), the project's sampler against the naive per-prompt
loop, 1 rank vs 2 simulated ranks through the pair pipeline, a TRL IPO step.
Tier 2 (scripts/gpu_check_tier2.py): `python3 -m axolotl.cli.train` with the plugin, LoRA,
QLoRA, DeepSpeed ZeRO-2 and ZeRO-3 (LoRA and full fine-tune) and vLLM sampling.
`--self-test` runs the same code on CPU with tiny models (tests/tiny_model.py), small counts.

A step writes DIR/results/STEP.json ({"status", "reason", "numbers"}) and exits 0 (PASS),
3 (SKIP) or 1 (FAIL).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))  # gpu_check_common, gpu_check_tier2 (as a script)
from gpu_check_common import Skip  # noqa: E402 - the path above first

ASSETS = REPO / "scripts" / "gpu_check_assets" / "smollm2-135m"  # tokenizer + config, no weights
EXIT = {"PASS": 0, "SKIP": 3, "FAIL": 1}
REPORT_FAILED = 4  # `report`: some step failed (1 would be a crash of the report itself)
GIB = 2**30
# A ~1.2B Llama (TinyLlama-1.1B's dimensions) with SmolLM2's 49152-token vocabulary.
LLAMA_1B = {
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "tie_word_embeddings": False,
}


@dataclass(frozen=True)
class Mode:
    """Counts and devices of one run: a real GPU, or the CPU self-test."""

    self_test: bool

    @property
    def device(self) -> str:
        return "cpu" if self.self_test else "cuda:0"

    @property
    def dtype(self) -> str:
        return "float32" if self.self_test else "bfloat16"

    def pick(self, gpu, cpu):
        return cpu if self.self_test else gpu


def model_dirs(work: Path) -> dict[str, Path]:
    return {name: work / "models" / name for name in ("smollm2", "llama1b")}


def peak_gib(mode: Mode) -> float | None:
    import torch

    if mode.self_test:
        return None
    return round(torch.cuda.max_memory_allocated() / GIB, 2)


def peak_text(peak: float | None) -> str:
    return "" if peak is None else f", peak GPU memory {peak} GiB"


def sync(mode: Mode) -> None:
    import torch

    if not mode.self_test:
        torch.cuda.synchronize()


# -- steps ------------------------------------------------------------------------------------


def step_env(mode: Mode, work: Path) -> tuple[str, dict]:
    import importlib.metadata as md

    import torch

    versions = {}
    for name in ("torch", "transformers", "trl", "datasets", "peft", "accelerate", "axolotl",
                 "bitsandbytes", "deepspeed", "vllm"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    offline = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
                                                 "TRANSFORMERS_OFFLINE", "WANDB_MODE")}
    numbers = {"python": sys.version.split()[0], "versions": versions, "offline": offline}
    if mode.self_test:
        return f"self-test on CPU, torch {versions['torch']}", numbers
    if not torch.cuda.is_available():
        raise RuntimeError("torch.cuda.is_available() is False: no CUDA GPU visible to python3")
    props = torch.cuda.get_device_properties(0)
    numbers.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / GIB, 1),
                   bf16=torch.cuda.is_bf16_supported(), cuda=torch.version.cuda)
    return f"{props.name}, {numbers['gpu_memory_gib']} GiB, CUDA {torch.version.cuda}", numbers


def build_model(name: str, path: Path, mode: Mode) -> dict:
    """A random-weight model saved with the SmolLM2 tokenizer (tiny ones in the self-test)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    if mode.self_test:
        sys.path.insert(0, str(REPO / "tests"))
        from tiny_model import build_tiny_llama

        build_tiny_llama(path, seed=0 if name == "smollm2" else 1)
        return {"parameters": sum(p.numel() for p in LlamaForCausalLM.from_pretrained(path)
                                  .parameters())}
    if not (ASSETS / "tokenizer.json").is_file():
        raise RuntimeError(f"{ASSETS} has no tokenizer.json (tracked in git; check the checkout)")
    config = AutoConfig.from_pretrained(ASSETS)
    if name == "llama1b":
        for key, value in LLAMA_1B.items():
            setattr(config, key, value)
        config.head_dim = config.hidden_size // config.num_attention_heads
    torch.manual_seed(0)
    with torch.device(mode.device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(ASSETS).save_pretrained(path)
    return {"parameters": sum(p.numel() for p in model.parameters())}


def step_models(mode: Mode, work: Path) -> tuple[str, dict]:
    numbers = {}
    for name, path in model_dirs(work).items():
        started = time.perf_counter()
        numbers[name] = build_model(name, path, mode)
        numbers[name]["build_seconds"] = round(time.perf_counter() - started, 1)
    return ", ".join(f"{n} {v['parameters']:,} params" for n, v in numbers.items()), numbers


def chat_prompts(tokenizer, n: int) -> list[str]:
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": f"Question {i}: what is {3 + i} plus {7 * i}? "
              + "Explain. " * (i % 4)}],
            add_generation_prompt=True, tokenize=False)
        for i in range(n)
    ]


def naive_loop(gen, prompts: list[str], settings, mode: Mode) -> tuple[int, float]:
    """One `generate` call per prompt with the same sampling settings: (tokens, seconds)."""
    import torch
    from transformers import GenerationConfig

    stop = gen.stop_ids(settings)
    config = GenerationConfig(do_sample=True, temperature=settings.temperature, top_p=1.0,
                              top_k=0, max_new_tokens=settings.max_new_tokens,
                              eos_token_id=stop, pad_token_id=gen.tokenizer.pad_token_id)
    tokens = 0
    sync(mode)
    started = time.perf_counter()
    with torch.inference_mode():
        for i, prompt in enumerate(prompts):
            torch.manual_seed(i)
            enc = gen.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
            out = gen.model.generate(**enc.to(gen.device), generation_config=config)
            new = out[0, enc["input_ids"].shape[1]:].tolist()
            cut = next((j for j, t in enumerate(new) if t in stop), None)
            tokens += len(new) if cut is None else cut + 1
    sync(mode)
    return tokens, time.perf_counter() - started


def sampler_run(gen, prompts: list[str], settings, mode: Mode) -> tuple[int, float]:
    """The project's batched sampler over all prompts: (tokens, seconds)."""
    tokens = 0
    sync(mode)
    started = time.perf_counter()
    for b in range(0, len(prompts), settings.batch_size):
        batch = prompts[b:b + settings.batch_size]
        completions = gen.generate(batch, settings, settings.batch_seed(b))
        if len(completions) != len(batch):
            raise RuntimeError(f"{len(completions)} completions for {len(batch)} prompts")
        tokens += sum(c.n_tokens for c in completions)
    sync(mode)
    return tokens, time.perf_counter() - started


def step_sampler(mode: Mode, work: Path, name: str) -> tuple[str, dict]:
    import torch

    from axolotl_ipo.pairs.sampler import SamplingSettings, load_generator

    gen = load_generator("transformers", model_dirs(work)[name], device=mode.device,
                         dtype=mode.dtype)
    settings = SamplingSettings(max_new_tokens=mode.pick(128, 16), temperature=0.7,
                                batch_size=mode.pick(64, 4), seed=1)
    prompts = chat_prompts(gen.tokenizer, mode.pick(128, 8))
    sampler_run(gen, prompts[:settings.batch_size], settings, mode)  # warm-up (kernels, cache)
    if not mode.self_test:
        torch.cuda.reset_peak_memory_stats()
    tokens, seconds = sampler_run(gen, prompts, settings, mode)
    peak = peak_gib(mode)
    naive_tokens, naive_seconds = naive_loop(gen, prompts[:mode.pick(6, 4)], settings, mode)
    rate, naive_rate = tokens / seconds, naive_tokens / naive_seconds
    numbers = {"prompts": len(prompts), "batch_size": settings.batch_size,
               "max_new_tokens": settings.max_new_tokens, "dtype": mode.dtype,
               "tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(rate, 1),
               "naive_prompts": mode.pick(6, 4), "naive_tokens": naive_tokens,
               "naive_seconds": round(naive_seconds, 2), "naive_tokens_per_s": round(naive_rate, 1),
               "speedup": round(rate / naive_rate, 2), "peak_gpu_gib": peak}
    gen.close()
    if not mode.self_test and rate <= naive_rate:
        raise RuntimeError(f"the batched sampler ({rate:.0f} tok/s) is not faster than the "
                           f"naive loop ({naive_rate:.0f} tok/s)")
    return (f"{rate:,.0f} tok/s vs naive {naive_rate:,.0f} tok/s ({rate / naive_rate:.1f}x), "
            f"batch {settings.batch_size}, {settings.max_new_tokens} new tokens, {mode.dtype}"
            f"{peak_text(peak)}"), numbers


def step_ranks(mode: Mode, work: Path) -> tuple[str, dict]:
    """1 rank vs 2 simulated ranks (rank 1 then rank 0, one process, as tests/test_pairs.py)."""
    from transformers import AutoTokenizer

    from axolotl_ipo.pairs.build import build_pairs
    from axolotl_ipo.pairs.sampler import SamplingSettings, load_generator
    from axolotl_ipo.pairs.store import PairStore
    from axolotl_ipo.sft_rows import extract_examples

    model_dir = model_dirs(work)["smollm2"]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = [{"instruction": f"What is {3 + i} plus {7 + 2 * i}?" + " Why?" * (i % 3),
             "output": str(10 + 3 * i)} for i in range(mode.pick(48, 10))]
    examples, _ = extract_examples(rows, "alpaca", "gpu_check.jsonl")
    settings = SamplingSettings(max_new_tokens=mode.pick(32, 8), temperature=0.7,
                                batch_size=mode.pick(8, 3), seed=3)
    calls = []

    def factory():
        calls.append(1)
        return load_generator("transformers", model_dir, device=mode.device, dtype=mode.dtype)

    def run(root: str, rank: int, world: int):
        store = PairStore.open(work / "ranks" / root, {"gpu_check": 1})
        return build_pairs(examples, tokenizer, factory, settings, store, rank=rank,
                           world_size=world, barrier=lambda: None, progress=False)

    single = run("one", 0, 1)
    run("two", 1, 2)
    two = run("two", 0, 2)
    same = Path(single.path).read_bytes() == Path(two.path).read_bytes()
    pairs = len(single.store.read_pairs())
    numbers = {"rows": len(rows), "batches": single.summary.batches, "pairs": pairs,
               "identical": same, "generator_loads": len(calls)}
    if not same:
        raise RuntimeError(f"pairs.jsonl differs between 1 and 2 ranks ({single.path}, {two.path})")
    if len(calls) != 3 or pairs == 0:
        raise RuntimeError(f"{len(calls)} generator loads (want 3), {pairs} pairs")
    return (f"{pairs} pairs in {single.summary.batches} batches, byte-identical "
            f"pairs.jsonl"), numbers


def step_timer(mode: Mode):
    """A TrainerCallback that times each optimiser step (GPU work included)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.start = 0.0

        def on_step_begin(self, args, state, control, **kwargs) -> None:
            sync(mode)
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs) -> None:
            sync(mode)
            self.times.append(time.perf_counter() - self.start)

    return StepTimer()


def ipo_rows(tokenizer, n: int) -> dict[str, list[str]]:
    """Preference rows as the plugin hands them to TRL: rendered prompt, answers ending in EOS."""
    prompts = chat_prompts(tokenizer, n)
    eos = tokenizer.eos_token
    return {"prompt": prompts,
            "chosen": [f"The answer is {10 + 7 * i}.{eos}" for i in range(n)],
            "rejected": [f"I think it is {11 + 5 * i}, or more.{eos}" for i in range(n)]}


def step_trl(mode: Mode, work: Path, name: str, lora: bool) -> tuple[str, dict]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    model_dir = model_dirs(work)[name]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=getattr(torch, mode.dtype)).to(mode.device)
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    beta, steps, batch = 0.1, mode.pick(6, 2), mode.pick(8, 2)
    args = DPOConfig(output_dir=str(work / f"trl-{name}"), loss_type=["ipo"], beta=beta,
                     max_length=256, per_device_train_batch_size=batch, max_steps=steps,
                     learning_rate=mode.pick(1e-5, 1e-4), logging_steps=1, report_to="none",
                     save_strategy="no", bf16=not mode.self_test, use_cpu=mode.self_test,
                     seed=0)
    timer = step_timer(mode)
    trainer = DPOTrainer(model=model, args=args, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=[timer],
                         train_dataset=Dataset.from_dict(ipo_rows(tokenizer, steps * batch)))
    if not mode.self_test:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    start_loss = (1 / (2 * beta)) ** 2  # policy == reference at step 1: log-ratios are 0
    later = timer.times[1:] or timer.times
    numbers = {"finetune": "lora r16 all-linear" if lora else "full", "steps": len(timer.times),
               "pairs_per_step": batch, "losses": losses, "first_step_s": round(timer.times[0], 3),
               "step_s_median": round(statistics.median(later), 3), "peak_gpu_gib": peak_gib(mode)}
    if not losses or abs(losses[0] - start_loss) > 0.05 * start_loss:
        raise RuntimeError(f"first IPO loss {losses[:1]} is not (1/(2*beta))^2 = {start_loss}")
    return (f"{numbers['finetune']}: {len(timer.times)} steps of {batch} pairs, "
            f"{numbers['step_s_median']} s/step (first {numbers['first_step_s']} s), loss "
            f"{losses[0]:.2f} -> {losses[-1]:.2f}{peak_text(numbers['peak_gpu_gib'])}"), numbers


def tier2(step: str):
    import gpu_check_tier2

    return lambda mode, work: gpu_check_tier2.run_step(step, mode, work, model_dirs(work))


STEPS = {
    "env": step_env,
    "models": step_models,
    "sampler-smollm2": lambda mode, work: step_sampler(mode, work, "smollm2"),
    "sampler-llama1b": lambda mode, work: step_sampler(mode, work, "llama1b"),
    "ranks": step_ranks,
    "trl-ipo-smollm2": lambda mode, work: step_trl(mode, work, "smollm2", lora=False),
    "trl-ipo-llama1b-lora": lambda mode, work: step_trl(mode, work, "llama1b", lora=True),
    "axolotl-lora": tier2("axolotl-lora"),
    "axolotl-qlora": tier2("axolotl-qlora"),
    "axolotl-zero2-lora": tier2("axolotl-zero2-lora"),
    "axolotl-zero2-full": tier2("axolotl-zero2-full"),
    "axolotl-zero3-lora": tier2("axolotl-zero3-lora"),
    "axolotl-zero3-full": tier2("axolotl-zero3-full"),
    "axolotl-vllm": tier2("axolotl-vllm"),
}
TIER1 = tuple(list(STEPS)[:7])


def run_step(step: str, mode: Mode, work: Path) -> int:
    started = time.perf_counter()
    numbers: dict = {}
    try:
        reason, numbers = STEPS[step](mode, work)
        status = "PASS"
        if step in TIER1 and "axolotl" in sys.modules:
            status, reason = "FAIL", "tier 1 imported axolotl (it must run without it)"
    except Skip as skip:
        status, reason = "SKIP", str(skip)
    except Exception as err:  # noqa: BLE001 - a step's failure is its result
        traceback.print_exc()
        status, reason = "FAIL", f"{type(err).__name__}: {err}".splitlines()[0][:300]
    numbers["seconds"] = round(time.perf_counter() - started, 1)
    result = {"step": step, "status": status, "reason": reason, "numbers": numbers}
    (work / "results").mkdir(parents=True, exist_ok=True)
    (work / "results" / f"{step}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"== {step}: {status}: {reason}", flush=True)
    return EXIT[status]


def report(work: Path, out: Path | None) -> int:
    """The table of every step in run order (work/steps.tsv, written by gpu_check.sh)."""
    lines = ["| step | result | details | seconds |", "|---|---|---|---|"]
    results = {}
    for line in (work / "steps.tsv").read_text().splitlines():
        step, status, reason, seconds = line.split("\t")
        path = work / "results" / f"{step}.json"
        saved = json.loads(path.read_text()) if path.is_file() else {}
        if saved.get("status") == status:
            reason = saved["reason"]
        results[step] = {"status": status, "reason": reason, "seconds": float(seconds),
                         "numbers": saved.get("numbers", {})}
        lines.append(f"| {step} | {status} | {reason.replace('|', '/')} | {seconds} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.md").write_text(table)
        (out / "gpu_check.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["status"] != "FAIL" for r in results.values()) else REPORT_FAILED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=[*STEPS, "report", "list"])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, help="report: also write gpu_check.md/.json here")
    parser.add_argument("--self-test", action="store_true", help="CPU, tiny models")
    args = parser.parse_args(argv)
    if args.step == "list":
        print("\n".join(STEPS))
        return 0
    if args.step == "report":
        return report(args.work, args.out)
    return run_step(args.step, Mode(args.self_test), args.work)


if __name__ == "__main__":
    sys.exit(main())

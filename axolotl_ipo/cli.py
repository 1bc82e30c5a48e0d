"""`axolotl-ipo`: check a config, sample its pairs, inspect a pairs file, evaluate a run, and
train self-play rounds."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from argparse import SUPPRESS
from pathlib import Path

import yaml

from axolotl_ipo import __version__
from axolotl_ipo.errors import PREFIX, UserError, one_line

PLUGIN_NAME = "axolotl_ipo.IPOPlugin"


def _plugin_listed(raw: dict) -> bool:
    return PLUGIN_NAME in (raw.get("plugins") or [])


def _read_yaml(config_path: Path) -> dict:
    try:
        raw = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or err
        context, opened = getattr(err, "context", None), getattr(err, "context_mark", None)
        if context and opened:  # e.g. where an unclosed quote opened, not the end of the file
            problem = f"{problem} ({context} at line {opened.line + 1}, column {opened.column + 1})"
        raise UserError(f"{config_path}: not valid YAML{where}: {problem}; fix the file.") from None
    if not isinstance(raw, dict):
        raise UserError(f"{config_path}: expected a YAML mapping of config keys at the top level.")
    return raw


def _validation_summary(err) -> str:
    """Axolotl's pydantic errors as `key: message; ...` (without the echoed input)."""
    parts = []
    for item in err.errors():
        key = ".".join(str(part) for part in item["loc"]) or "config"
        parts.append(f"{key}: {str(item['msg']).removeprefix('Value error, ')}")
    return "; ".join(parts)


def load_config(path: str, not_checked: list[str] | None = None):
    """Load and validate CONFIG through Axolotl's own loader, with this plugin registered.

    With ``not_checked`` (a list: `axolotl-ipo check`) the config is validated only: what
    needs a GPU, DeepSpeed or the hub is left out and said in that list."""
    config_path = Path(path)
    if not config_path.is_file():
        raise UserError(f"no config file at {config_path}; check the path.")
    raw = _read_yaml(config_path)
    if not_checked is not None:
        return _validate_only(config_path, raw, not_checked)

    from pydantic import ValidationError

    from axolotl_ipo.upstream import axolotl as upstream_axolotl

    if not _plugin_listed(raw) and not upstream_axolotl.autoloads_entry_point_plugins():
        raise UserError(
            f"{config_path} does not list the plugin, and axolotl "
            f"{upstream_axolotl.axolotl_version()} "
            f"only loads listed plugins: add `plugins: [{PLUGIN_NAME}]` to the config."
        )
    try:
        return upstream_axolotl.load_cfg(str(config_path))
    except ValidationError as err:
        raise UserError(f"{config_path}: {_validation_summary(err)}") from None


GPU_KEYS = ("bf16", "tf32", "deepspeed", "fsdp", "fsdp_config", "load_in_4bit", "load_in_8bit")


def _validate_only(config_path: Path, raw: dict, not_checked: list[str]):
    """`check`'s validation: Axolotl's loader with training-only steps left out, then what can
    be checked cheaply about the files the config names."""
    from axolotl_ipo import distributed, preflight
    from axolotl_ipo.upstream import axolotl as upstream_axolotl

    if raw.get("deepspeed"):
        ds_file, stage = preflight.deepspeed_file("deepspeed", raw["deepspeed"])
        not_checked.append(
            f"deepspeed {ds_file} (ZeRO stage {stage}): read, but DeepSpeed itself was not "
            f"started ({_installed('deepspeed')}); it runs only when training on CUDA GPUs"
        )
    gpu_keys = [key for key in GPU_KEYS if raw.get(key) not in (None, False, "auto")]
    if gpu_keys and not distributed.cuda_available():
        not_checked.append(
            f"the GPUs ({', '.join(gpu_keys)}): this machine has no CUDA GPU, so Axolotl judged "
            "bf16/tf32 support and the GPU count (1) here, not on the machine that will train"
        )
    with distributed.validating_only(), upstream_axolotl.validating_config(not_checked):
        cfg = load_config(str(config_path))
    for list_key in ("datasets", "test_datasets"):
        for index, entry in enumerate(raw.get(list_key) or []):
            path = entry.get("path") if isinstance(entry, dict) else None
            name = f"{list_key}[{index}] {path}"
            problem = preflight.dataset_file_problem(name, path)
            if problem:
                raise UserError(f"{config_path}: {problem}")
            if preflight.hub_dataset(path):
                not_checked.append(f"{name}: a hub dataset, not downloaded by check")
    _check_answer_check(config_path, raw)
    return cfg


def _installed(package: str) -> str:
    from importlib.util import find_spec

    return "installed here" if find_spec(package) else "not installed here"


def _check_answer_check(config_path: Path, raw: dict) -> None:
    from axolotl_ipo import preflight
    from axolotl_ipo.pairs.checks import BUILTIN_CHECKS, KEY, load_check

    sampling = raw.get("rejection_sampling")
    name = sampling.get("answer_check") if isinstance(sampling, dict) else None
    if not isinstance(name, str) or name in BUILTIN_CHECKS:
        return
    problem = preflight.check_function_problem(KEY, name, load_check(name))
    if problem:
        raise UserError(f"{config_path}: {problem}")


def cmd_check(args: argparse.Namespace) -> int:
    # Axolotl uploads telemetry unless told not to; with no network that upload has kept a
    # finished `check` alive for 38 minutes. Validation sends nothing.
    os.environ["AXOLOTL_DO_NOT_TRACK"] = "1"
    from axolotl_ipo.config import resolved_settings

    not_checked: list[str] = []
    cfg = load_config(args.config, not_checked=not_checked)
    print(f"{args.config}: valid" + (" (what could be checked here)" if not_checked else ""))
    for key, value in resolved_settings(cfg).items():
        print(f"  {key}: {value}")
    if not_checked:
        print("not checked here:")
        for line in not_checked:
            print(f"  - {line}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import shutil

    from axolotl_ipo import distributed
    from axolotl_ipo.pairs.from_config import build_pairs_for_config

    cfg = load_config(args.config)
    result = build_pairs_for_config(cfg, output_dir=args.output)
    if result is None:
        print(f"{args.config}: no SFT dataset to sample from (preference datasets are used as is)")
        return 0
    if args.output and distributed.rank() == 0:  # the sampling printed the store's pairs.jsonl
        target = Path(args.output) / "pairs.jsonl"
        shutil.copyfile(result.path, target)
        print(f"copied to {target}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from axolotl_ipo.pairs.report import report

    try:
        print(report(Path(args.pairs), examples=args.examples, end_token=args.end_token))
    except (OSError, ValueError) as err:
        print(f"axolotl-ipo inspect: {err}", file=sys.stderr)
        return 1
    return 0


def _heldout_entry(cfg, args: argparse.Namespace) -> dict:
    """The held-out dataset entry: --data with --type, else the training SFT entry's keys."""
    from axolotl_ipo.sft_datasets import sft_sources

    if args.type:
        return {"path": args.data, "type": args.type}
    sources, _ = sft_sources(cfg)
    if not sources:
        raise SystemExit(
            "axolotl-ipo eval: the config has no SFT dataset to take the held-out format from; "
            "pass --type (alpaca, chat_template or prompt_completion)"
        )
    location = ("path", "split", "data_files", "name", "ds_type", "revision")
    entry = {k: v for k, v in sources[0].entry.items() if k not in location}
    return {**entry, "path": args.data}


def _trained_path(cfg, adapter: str | None) -> Path | None:
    from axolotl_ipo.evaluation.models import trained_kind

    if adapter == "none":
        return None
    path = Path(adapter or cfg.get("output_dir") or "")
    try:
        trained_kind(path)
    except FileNotFoundError as err:
        if adapter:
            raise SystemExit(f"axolotl-ipo eval: --adapter: {err}") from None
        print(f"no trained model in output_dir {path}: evaluating the base model only")
        return None
    return path


def _baseline_flags(args: argparse.Namespace) -> None:
    """`eval --baseline`'s flag mistakes, found before the config loads."""
    from axolotl_ipo.pairs.checks import KEY, load_check

    if not args.baseline:
        raise UserError("--check judges the answers of --baseline's comparison: add "
                        "--baseline RUN, or leave --check out")
    if args.no_generate:
        raise UserError("--baseline compares greedy answers: leave out --no-generate")
    if args.adapter == "none":
        raise UserError("--adapter none evaluates the base model; --baseline compares two "
                        "trained runs: pass the run's folder with --adapter or leave it out")
    if args.check == "none":
        raise UserError("--check none judges every answer wrong; use normalized, contains, "
                        "number or module:function")
    if args.check:
        try:
            load_check(args.check)
        except ValueError as err:
            raise UserError(f"--check: {str(err).removeprefix(KEY + ': ')}") from None


def _eval_baseline(args: argparse.Namespace, cfg, settings, check: str) -> int:
    """`eval --baseline RUN`: the config's trained run against RUN, judged by ``check``."""
    from axolotl_ipo.evaluation.baseline import compare_runs
    from axolotl_ipo.evaluation.report import format_comparison, plot_comparison
    from axolotl_ipo.evaluation.runs import resolve_run, run_in_folder

    flag = "--adapter" if args.adapter else f"{args.config}: output_dir"
    run = run_in_folder(args.adapter or cfg.get("output_dir") or ".", cfg.get("base_model"), flag)
    baseline = resolve_run(args.baseline, "--baseline")
    if run.path.resolve() == baseline.path.resolve():
        raise UserError(f"--baseline {args.baseline} is the run itself ({run.path}); pass "
                        "another run's output_dir or config")
    out_dir = Path(args.output or Path(cfg.get("output_dir") or ".") / "ipo_eval_baseline")
    report = compare_runs(cfg, _heldout_entry(cfg, args), {"run": run, "baseline": baseline},
                          check, out_dir, settings)
    print(format_comparison(report))
    print(f"metrics: {out_dir / 'metrics.json'}")
    image = plot_comparison(report, out_dir / "eval.png")
    if image:
        print(f"plot: {image}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from axolotl_ipo.args import sampling_args
    from axolotl_ipo.evaluation import EvalSettings, evaluate_config
    from axolotl_ipo.evaluation.report import format_table, plot

    if args.baseline or args.check:
        _baseline_flags(args)
    cfg = load_config(args.config)
    if not Path(args.data).exists():
        raise SystemExit(f"axolotl-ipo eval: --data {args.data}: no such file")
    sampling = sampling_args(cfg)
    settings = EvalSettings(
        max_new_tokens=args.max_new_tokens or sampling.max_new_tokens,
        batch_size=args.batch_size or sampling.batch_size,
        batch_tokens=None if args.batch_size else sampling.batch_tokens,
        limit=args.limit,
        generate=not args.no_generate,
        dtype=args.dtype,
    )
    if args.baseline:
        check = args.check or (
            sampling.answer_check if sampling.answer_check != "none" else "contains"
        )
        return _eval_baseline(args, cfg, settings, check)
    out_dir = Path(args.output or Path(cfg.get("output_dir") or ".") / "ipo_eval")
    try:
        report = evaluate_config(
            cfg, _heldout_entry(cfg, args), _trained_path(cfg, args.adapter), out_dir, settings
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"axolotl-ipo eval: {err}", file=sys.stderr)
        return 1
    print(format_table(report))
    print(f"metrics: {out_dir / 'metrics.json'}")
    image = plot(report, out_dir / "eval.png")
    if image:
        print(f"plot: {image}")
    return 0


def _selfplay_run(args: argparse.Namespace):
    """The validated run, or a one-line reason why not."""
    import shlex

    from axolotl_ipo.config import IPOConfigError, is_active
    from axolotl_ipo.selfplay import SelfplayRun
    from axolotl_ipo.sft_datasets import sft_sources

    if args.rounds < 1:
        return f"--rounds must be at least 1, got {args.rounds}"
    if args.eval_data and not Path(args.eval_data).exists():
        return f"--eval-data {args.eval_data}: no such file"
    try:
        cfg = load_config(args.config)
    except IPOConfigError as err:
        return f"{args.config}: {err}"
    if not is_active(cfg) or not sft_sources(cfg)[0]:
        return (f"{args.config}: self-play needs `rl: ipo` and an SFT dataset (its rejected "
                "answers are sampled again every round)")
    return SelfplayRun(
        config_path=Path(args.config),
        output_dir=Path(cfg.get("output_dir")).resolve(),
        rounds=args.rounds,
        launcher=shlex.split(args.launcher) if args.launcher else [sys.executable],
        adapter=cfg.get("adapter"),
        eval_data=args.eval_data,
        echo=sys.stdout,
        reseed=args.reseed,
    )


def cmd_selfplay(args: argparse.Namespace) -> int:
    from axolotl_ipo.selfplay import SelfplayError, format_rounds, run_selfplay

    run = _selfplay_run(args)
    if isinstance(run, str):
        print(f"axolotl-ipo selfplay: {run}", file=sys.stderr)
        return 2
    try:
        records = run_selfplay(run)
    except SelfplayError as err:
        print(f"axolotl-ipo selfplay: {err}", file=sys.stderr)
        return 1
    print(format_rounds(records, run.output_dir))
    return 0


def _add_selfplay(sub) -> None:
    selfplay = sub.add_parser(
        "selfplay",
        help="IPO rounds: each round samples rejected answers from the previous round's model, "
        "trains on them with it as reference, and merges the result",
    )
    selfplay.add_argument("config", help="an Axolotl YAML config with rl: ipo and SFT datasets")
    selfplay.add_argument("--rounds", type=int, required=True, help="number of rounds (>= 1)")
    selfplay.add_argument(
        "--launcher",
        help="the command that runs Python for training, e.g. 'accelerate launch "
        "--num_processes 2' or 'torchrun --nproc_per_node 2'; '-m axolotl.cli.train "
        "ROUND_CONFIG' is added (default: this Python)",
    )
    selfplay.add_argument(
        "--eval-data", help="held-out SFT file: `axolotl-ipo eval` after every round"
    )
    selfplay.add_argument(
        "--reseed", action="store_true",
        help="round k trains with seed + k - 1, so each round draws its own order of the rows "
        "(Axolotl orders them by the seed: rounds shorter than an epoch on the same rows "
        "otherwise see the same first rows every round)",
    )
    selfplay.set_defaults(func=cmd_selfplay)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="axolotl-ipo", description="IPO for Axolotl, with pairs sampled from SFT data."
    )
    parser.add_argument("--version", action="version", version=f"axolotl-ipo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a config and print the resolved IPO settings")
    check.add_argument("config", help="an Axolotl YAML config")
    check.set_defaults(func=cmd_check)
    sample = sub.add_parser(
        "sample", help="build the IPO pairs of a config's SFT datasets (same code as training)"
    )
    sample.add_argument("config", help="an Axolotl YAML config with rl: ipo")
    sample.add_argument("--output", help="directory for the pair store and pairs.jsonl")
    sample.set_defaults(func=cmd_sample)
    inspect = sub.add_parser("inspect", help="counts, lengths and examples of a pairs.jsonl")
    inspect.add_argument("pairs", help="a pairs.jsonl")
    inspect.add_argument("--examples", type=int, default=3, help="how many pairs to print")
    inspect.add_argument(
        "--end-token",
        help="end token to ignore when comparing answers (default: the one each pair records)",
    )
    inspect.set_defaults(func=cmd_inspect)
    evaluate = sub.add_parser(
        "eval",
        help="held-out preference accuracy, gold NLL and task score: base vs trained model",
    )
    evaluate.add_argument("config", help="the Axolotl YAML config that was trained")
    evaluate.add_argument(
        "--data", required=True, help="held-out SFT file (never trained on), e.g. a .jsonl"
    )
    evaluate.add_argument(
        "--type", help="its dataset type (default: that of the config's SFT dataset)"
    )
    evaluate.add_argument(
        "--adapter",
        help="trained adapter or model folder (default: the config's output_dir; 'none' "
        "evaluates the base model only)",
    )
    evaluate.add_argument("--output", help="folder for metrics.json, eval.png, predictions")
    evaluate.add_argument("--limit", type=int, help="evaluate the first N held-out examples")
    evaluate.add_argument(
        "--max-new-tokens",
        type=int,
        help="greedy answer length (default: rejection_sampling.max_new_tokens)",
    )
    evaluate.add_argument(
        "--batch-size",
        type=int,
        help="prompts per batch instead of rejection_sampling.batch_tokens' token budget "
        "(default: rejection_sampling's batching)",
    )
    evaluate.add_argument(
        "--no-generate", action="store_true", help="skip greedy answers (no task score)"
    )
    evaluate.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16", "float16"),
        help="precision of both models (auto: bf16 on a GPU, fp32 on CPU; float32 on a GPU "
        "gives fp32 scores; bfloat16 on a CPU measured 1.15x faster with scores that moved "
        "more than the effects measured: benchmarks/README.md)",
    )
    evaluate.add_argument(
        "--baseline",
        metavar="RUN",
        help="compare the config's trained run with another trained run (e.g. your plain SFT "
        "run) on --data: each one's accuracy by --check, the difference with its paired "
        "bootstrap 95%% interval, gold NLL and answer length. RUN: that run's output_dir (a "
        "LoRA adapter or a full/merged model) or its YAML config (its output_dir is used)",
    )
    evaluate.add_argument(
        "--check",
        help="with --baseline: the answer check that judges the greedy answers, as "
        "rejection_sampling.answer_check names it: normalized, contains, number or "
        "module:function (default: the config's answer_check, else contains)",
    )
    evaluate.set_defaults(func=cmd_eval)
    _add_selfplay(sub)
    _add_verbose_flag(parser, sub)
    return parser


def _add_verbose_flag(parser: argparse.ArgumentParser, subcommands: argparse.Action) -> None:
    """`-v` before or after the subcommand: show the libraries' logs and Axolotl's config dump."""
    verbose = "show Axolotl's config dump and the libraries' warnings (quiet by default)"
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose)
    for sub in subcommands.choices.values():
        sub.add_argument("-v", "--verbose", action="store_true", default=SUPPRESS, help=verbose)


def quiet_libraries() -> None:
    """Only warnings of axolotl-ipo/Axolotl and errors of other libraries (torchao,
    bitsandbytes, torch) reach the terminal; set before Axolotl configures its logging.
    AXOLOTL_LOG_LEVEL / LOG_LEVEL set by the user still win."""
    os.environ.setdefault("AXOLOTL_LOG_LEVEL", "WARNING")
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    # our loggers are not under `axolotl.`, so they would inherit the root's ERROR level and
    # drop the warnings a user must see (rows skipped, a check that raised)
    logging.getLogger("axolotl_ipo").setLevel(os.environ["AXOLOTL_LOG_LEVEL"])


def run_command(args: argparse.Namespace) -> int:
    """Every subcommand runs through here: a user's mistake (config, data, paths) or a disk
    error is one line on stderr and exit code 1, never a traceback."""
    try:
        return args.func(args)
    except (UserError, OSError) as err:
        print(PREFIX + one_line(err), file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:
        quiet_libraries()
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())

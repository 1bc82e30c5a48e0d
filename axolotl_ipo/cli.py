"""`axolotl-ipo`: check a config, sample its pairs, inspect a pairs file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from axolotl_ipo import __version__

PLUGIN_NAME = "axolotl_ipo.IPOPlugin"


def _plugin_listed(raw: dict) -> bool:
    return PLUGIN_NAME in (raw.get("plugins") or [])


def load_config(path: str):
    """Load and validate CONFIG through Axolotl's own loader, with this plugin registered."""
    from axolotl.cli.config import load_cfg

    from axolotl_ipo import compat

    config_path = Path(path)
    if not config_path.is_file():
        raise SystemExit(f"axolotl-ipo: no config file at {config_path}")
    raw = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    if not _plugin_listed(raw) and not compat.autoloads_entry_point_plugins():
        raise SystemExit(
            f"axolotl-ipo: {config_path} does not list the plugin, and axolotl "
            f"{compat.axolotl_version()} only loads listed plugins. Add\n"
            f"  plugins:\n    - {PLUGIN_NAME}\nto the config."
        )
    return load_cfg(str(config_path))


def cmd_check(args: argparse.Namespace) -> int:
    from axolotl_ipo.config import IPOConfigError, resolved_settings

    try:
        cfg = load_config(args.config)
    except IPOConfigError as err:
        print(f"axolotl-ipo: {args.config}: {err}", file=sys.stderr)
        return 1
    print(f"{args.config}: valid")
    for key, value in resolved_settings(cfg).items():
        print(f"  {key}: {value}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import shutil

    from axolotl_ipo import distributed
    from axolotl_ipo.rejection_sampling import build_pairs_for_config

    cfg = load_config(args.config)
    result = build_pairs_for_config(cfg, output_dir=args.output)
    if result is None:
        print(f"{args.config}: no SFT dataset to sample from (preference datasets are used as is)")
        return 0
    if distributed.rank() == 0:
        target = Path(args.output or ".") / "pairs.jsonl"
        if args.output and result.path != target:
            shutil.copyfile(result.path, target)
        print(f"pairs: {target if args.output else result.path}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from axolotl_ipo.inspect_pairs import report

    try:
        print(report(Path(args.pairs), examples=args.examples, end_token=args.end_token))
    except (OSError, ValueError) as err:
        print(f"axolotl-ipo inspect: {err}", file=sys.stderr)
        return 1
    return 0


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
        "--end-token", default="<|im_end|>", help="end token to ignore when comparing answers"
    )
    inspect.set_defaults(func=cmd_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""scripts/demo.sh is a tutorial: it runs only the commands a user types (`axolotl train`,
`axolotl merge-lora`, `axolotl-ipo check`, `selfplay` and `eval --baseline`) on the configs in
example_configs/demo/, which Axolotl validates and which compare the IPO rounds with plain SFT at
equal steps. The whole script is run here with stand-ins for the two CLIs (each parses its
arguments with the real `axolotl-ipo` parser and fakes the outputs), checking the order of the
steps, that a rerun skips finished ones, and the final table; the commands themselves are run
for real on the tiny model by test_e2e_train, test_e2e_selfplay and test_eval_baseline.
`demo.sh nq` keeps the NQ-open job on a config that exists."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO

DEMO = (REPO / "scripts/demo.sh").read_text(encoding="utf-8")
CONFIGS = REPO / "example_configs/demo"
NAMES = ("sft", "control", "selfplay")
# what every run shares: LoRA, optimizer, batch, precision, sequence length and seed
SHARED = ("adapter", "lora_r", "lora_alpha", "lora_dropout", "lora_target_linear",
          "micro_batch_size", "gradient_accumulation_steps", "num_epochs", "learning_rate",
          "optimizer", "lr_scheduler", "seed", "bf16", "fp16", "tf32", "sequence_len",
          "val_set_size", "save_strategy")


def config(name: str) -> dict:
    return yaml.safe_load((CONFIGS / f"{name}.yml").read_text(encoding="utf-8"))


def test_the_demo_names_no_study_or_benchmark():
    for word in ("benchmarks/", "research/", "skill_study", "docs/"):
        assert word not in DEMO


def test_the_demo_configs_compare_at_equal_steps():
    sft, control, selfplay = map(config, NAMES)
    for key in SHARED:
        assert sft[key] == control[key] == selfplay[key], key
    assert sft["max_steps"] == 240
    # the control and the rounds both start from the merged SFT model, with 60 steps after it
    merged = f"{sft['output_dir']}/merged"  # where `axolotl merge-lora` writes it
    assert control["base_model"] == selfplay["base_model"] == merged
    assert "--rounds 2" in DEMO and control["max_steps"] == 2 * selfplay["max_steps"] == 60
    assert "plugins" not in sft and "rl" not in sft and "rl" not in control  # plain Axolotl SFT
    assert sft["datasets"] == control["datasets"]
    assert selfplay["rl"] == "ipo" and selfplay["ipo_guard_rows"] == 0  # every row, as SFT
    # the rounds' own checks judge samples as the comparison judges answers
    sampling = selfplay["rejection_sampling"]
    assert f"--check {sampling['answer_check']}" in DEMO
    assert f"--max-new-tokens {sampling['max_new_tokens']}" in DEMO
    assert len({c["output_dir"] for c in (sft, control, selfplay)}) == 3


@pytest.mark.parametrize("name", NAMES)
def test_the_demo_configs_validate(name, monkeypatch, tiny_model_dir):
    """Axolotl's own validation (as `axolotl-ipo check` runs it, which the demo calls before
    each training, once the model it starts from exists: here the tiny model stands in for it);
    no key it would drop or deprecates."""
    from axolotl.integrations.base import PluginManager

    import axolotl_config

    monkeypatch.setattr(PluginManager, "_instance", None)
    raw = config(name)
    # the plugin is inert without `rl: ipo` (Axolotl 0.21 loads it from its entry point anyway)
    validated, schema = axolotl_config.validate(
        {**raw, "plugins": raw.get("plugins", ["axolotl_ipo.IPOPlugin"]),
         "base_model": str(tiny_model_dir)})
    assert axolotl_config.unknown_or_deprecated_keys(raw, schema) == {}
    assert validated.bf16 is False and validated.fp16 is False
    assert validated.adapter == "lora" and validated.max_steps == raw["max_steps"]


# -- the whole script, with stand-ins for the CLIs --------------------------------------------

AXOLOTL_IPO = """
import json, os, sys
from pathlib import Path
import yaml
from axolotl_ipo.cli import build_parser
args = build_parser().parse_args(sys.argv[1:])  # a real axolotl-ipo accepts these arguments
with open(os.environ["DEMO_CALLS"], "a") as log:
    log.write(json.dumps(["axolotl-ipo", *sys.argv[1:]]) + "\\n")
cfg = yaml.safe_load(open(args.config))
Path(cfg["base_model"]).is_dir() or sys.exit(f"no base model {cfg['base_model']}")
if args.command == "selfplay":
    for k in range(1, args.rounds + 1):
        Path(cfg["output_dir"], f"round-{k}", "merged").mkdir(parents=True, exist_ok=True)
        Path(cfg["output_dir"], f"round-{k}", "round.json").write_text("{}")
elif args.command == "eval":
    accuracy = json.loads(os.environ["DEMO_ACCURACY"])
    run = args.adapter or cfg["output_dir"]
    baseline = yaml.safe_load(open(args.baseline))["output_dir"]
    runs = {"run": {"path": run, "accuracy": accuracy[run], "gold_nll": 0.5},
            "baseline": {"path": baseline, "accuracy": accuracy[baseline], "gold_nll": 0.75}}
    change = accuracy[run] - accuracy[baseline]
    Path(args.output).mkdir(parents=True)
    Path(args.output, "metrics.json").write_text(json.dumps({
        "runs": runs, "reading": "READING",
        "difference": {"accuracy": {"change": change, "low": change - 0.01,
                                    "high": change + 0.01}}}))
"""

AXOLOTL = """
import json, os, sys
from pathlib import Path
import yaml
command, config, *rest = sys.argv[1:]
with open(os.environ["DEMO_CALLS"], "a") as log:
    log.write(json.dumps(["axolotl", *sys.argv[1:]]) + "\\n")
cfg = yaml.safe_load(open(config))
Path(cfg["base_model"]).is_dir() or sys.exit(f"no base model {cfg['base_model']}")
assert Path(cfg["datasets"][0]["path"]).is_file()
if command == "train":
    assert rest == ["--launcher", "python"], rest  # no accelerate launcher on a CPU
    Path(cfg["output_dir"]).mkdir(parents=True)
    Path(cfg["output_dir"], "adapter_config.json").write_text("{}")
else:
    assert command == "merge-lora" and not rest
    Path(cfg["output_dir"], "merged").mkdir()
    Path(cfg["output_dir"], "merged", "config.json").write_text("{}")
"""

ACCURACY = {"outputs/demo/sft": 0.87, "outputs/demo/control": 0.93,
            "outputs/demo/selfplay/round-2/merged": 0.9}


def fake_repo(tmp_path: Path) -> tuple[Path, dict]:
    """A copy of what demo.sh reads, the environment set-up replaced, the two CLIs stand-ins."""
    repo = tmp_path / "repo"
    for path in ("scripts/demo.sh", "scripts/prepare_tasks.py", "scripts/prepare_data.py",
                 "axolotl_ipo/upstream/releases.txt", "example_configs/demo"):
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        copy = shutil.copytree if (REPO / path).is_dir() else shutil.copy
        copy(REPO / path, repo / path)
    for script in ("setup_env.sh", "prepare_assets.sh"):
        (repo / "scripts" / script).write_text(f'echo "{script} $*" >> "$DEMO_CALLS"\n')
    (repo / ".cache/models/SmolLM2-135M-Instruct").mkdir(parents=True)
    venv = next(line.split()[1] for line in reversed(
        (repo / "axolotl_ipo/upstream/releases.txt").read_text().splitlines())
        if line.strip() and not line.startswith("#"))
    bin_dir = repo / venv / "bin"
    bin_dir.mkdir(parents=True)
    for name, code in (("axolotl-ipo", AXOLOTL_IPO), ("axolotl", AXOLOTL)):
        (bin_dir / name).write_text(f"#!{sys.executable}\n{code}")
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(REPO), "DEMO_CALLS": str(tmp_path / "calls"),
           "DEMO_ACCURACY": json.dumps(ACCURACY)}
    return repo, env


def run_demo(repo: Path, env: dict, calls: Path) -> tuple[str, list]:
    calls.unlink(missing_ok=True)
    proc = subprocess.run(["bash", "scripts/demo.sh"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = calls.read_text().splitlines()
    return proc.stdout, [json.loads(x) if x.startswith("[") else x for x in lines]


def test_the_demo_runs_the_user_commands_in_order_and_a_rerun_skips_what_finished(tmp_path):
    repo, env = fake_repo(tmp_path)
    out, calls = run_demo(repo, env, tmp_path / "calls")
    venv = calls[0].split()[-1]
    assert calls[:2] == [f"setup_env.sh {calls[0].split()[1]} {venv}",
                         f"prepare_assets.sh {venv}"]
    sft, control, selfplay = (f"example_configs/demo/{name}.yml" for name in NAMES)
    heldout = [".cache/data/add_heldout.jsonl", "--type", "alpaca", "--check", "number",
               "--max-new-tokens", "48", "--batch-size", "32"]
    rounds = "outputs/demo/selfplay/round-2/merged"
    assert calls[2:] == [
        ["axolotl-ipo", "check", sft], ["axolotl", "train", sft, "--launcher", "python"],
        ["axolotl", "merge-lora", sft],
        ["axolotl-ipo", "check", control], ["axolotl", "train", control, "--launcher", "python"],
        ["axolotl-ipo", "check", selfplay], ["axolotl-ipo", "selfplay", selfplay, "--rounds", "2"],
        ["axolotl-ipo", "eval", control, "--baseline", sft, "--data", *heldout,
         "--output", "outputs/demo/eval/control_vs_sft"],
        ["axolotl-ipo", "eval", selfplay, "--adapter", rounds, "--baseline", sft, "--data",
         *heldout, "--output", "outputs/demo/eval/rounds_vs_sft"],
        ["axolotl-ipo", "eval", selfplay, "--adapter", rounds, "--baseline", control, "--data",
         *heldout, "--output", "outputs/demo/eval/rounds_vs_control"],
    ]
    table = out[out.index("held-out accuracy on"):].splitlines()
    assert table[2].startswith("SFT") and table[2].split()[-2:] == ["0.870", "0.750"]
    assert "0.930     0.500" in table[3] and "+0.060 [+0.050, +0.070]" in table[3]
    assert "0.900" in table[4] and "+0.030 [+0.020, +0.040]" in table[4]
    assert "-0.030 [-0.040, -0.020]" in table[4] and "READING" in table[5]

    # the SFT rows the demo writes are the plugin's reading of the alpaca rows, as chat messages
    from axolotl_ipo.sft_rows import extract_examples

    rows = [json.loads(x) for x in (repo / ".cache/data/add_train.jsonl").read_text().splitlines()]
    messages = [json.loads(x)["messages"] for x in
                (repo / "outputs/demo/data/add_train_messages.jsonl").read_text().splitlines()]
    examples, invalid = extract_examples(rows, "alpaca", "add_train.jsonl")
    assert len(rows) == 256 and not invalid
    assert messages == [[*e.prompt_messages, {"role": "assistant", "content": e.gold}]
                        for e in examples]

    # a rerun trains, merges and evaluates nothing again (selfplay skips its finished rounds)
    again, calls = run_demo(repo, env, tmp_path / "calls")
    assert [c for c in calls if isinstance(c, list)] == [
        ["axolotl-ipo", "selfplay", selfplay, "--rounds", "2"]]
    assert again[again.index("held-out accuracy on"):] == out[out.index("held-out accuracy on"):]


def test_demo_nq_runs_an_example_config():
    start = DEMO.index("= nq ]")
    nq = DEMO[start:DEMO.index("\nfi\n", start)]
    config = nq.split("config=")[1].split()[0]
    assert (REPO / config).is_file()
    assert "axolotl.cli.train" in nq and "axolotl-ipo eval" in nq


def test_the_demo_sets_up_the_newest_supported_release():
    """The newest release seeds the LoRA initialisation itself, so a rerun of the demo repeats
    its numbers; demo.sh reads it (and its environment) from releases.txt."""
    line = next(x for x in DEMO.replace("\\\n", " ").splitlines() if x.startswith("read -r"))
    got = subprocess.run(["bash", "-c", f'{line}; echo "$release $venv"'], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.split()
    releases = [x.split() for x in (REPO / "axolotl_ipo/upstream/releases.txt").read_text()
                .splitlines() if x.strip() and not x.startswith("#")]
    newest = max(releases, key=lambda r: tuple(map(int, r[0].split("."))))
    assert got == newest
    assert 'setup_env.sh "$release" "$venv"' in DEMO and 'prepare_assets.sh "$venv"' in DEMO
    assert ".venv/" not in DEMO  # every command runs in that environment

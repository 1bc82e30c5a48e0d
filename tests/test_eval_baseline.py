"""`axolotl-ipo eval CONFIG --baseline RUN`: which model a run names, the comparison's logic,
its table and plot, and the real CLI on two tiny trained runs (IPO and plain SFT)."""

import json
import math

import pytest
import yaml

from axolotl_ipo.errors import UserError
from axolotl_ipo.evaluation.compare import accuracy, compare, judge, reading, run_metrics
from axolotl_ipo.evaluation.metrics import paired_bootstrap
from axolotl_ipo.evaluation.report import format_comparison, plot_comparison
from axolotl_ipo.evaluation.runs import check_tokenizer, resolve_run, run_in_folder
from axolotl_ipo.evaluation.scoring import AnswerScore
from axolotl_ipo.pairs.checks import load_check

from helpers import (
    SFT_ROWS,
    axolotl,
    axolotl_ipo,
    base_config,
    read_jsonl,
    run,
    sft_config,
    write_config,
    write_jsonl,
)

# -- which model a run names ------------------------------------------------------------------


def _adapter(folder, base="org/base-model"):
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))
    return folder


def test_an_output_dir_with_an_adapter_names_its_base_from_adapter_config(tmp_path):
    found = resolve_run(str(_adapter(tmp_path / "out")), "--baseline")
    assert (found.path, found.kind, found.base_model) == (tmp_path / "out", "adapter",
                                                           "org/base-model")


def test_a_full_model_folder_has_no_base(tmp_path):
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "config.json").write_text("{}")
    found = resolve_run(str(tmp_path / "merged"), "--baseline")
    assert (found.kind, found.base_model) == ("full", None)


def test_a_config_names_its_output_dir_and_its_base_model_wins(tmp_path, monkeypatch):
    _adapter(tmp_path / "runs" / "sft", base="stale/path")
    config = tmp_path / "sft.yml"
    config.write_text(yaml.safe_dump({"base_model": "org/real", "output_dir": "runs/sft"}))
    monkeypatch.chdir(tmp_path)  # output_dir relative to where Axolotl ran, as Axolotl reads it
    found = resolve_run(str(config), "--baseline")
    assert (str(found.path), found.kind, found.base_model) == ("runs/sft", "adapter", "org/real")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing", None, "no such file or folder; pass a training run's output_dir"),
        ("", None, "holds neither a LoRA adapter (adapter_config.json) nor a model"),
        ("notes.txt", "x", "neither a model folder nor a YAML config"),
        ("c.yml", "base_model: m\n", "the config sets no output_dir"),
        ("c.yml", "a: [1\n", "not valid YAML at line 2"),
        ("c.yml", "output_dir: {p}/none\n", "output_dir {p}/none: holds neither"),
    ],
)
def test_what_is_not_a_run_is_one_line_naming_the_flag_and_the_fix(
    tmp_path, name, content, message
):
    target = tmp_path / name
    if content is not None:
        target.write_text(content.format(p=tmp_path))
    with pytest.raises(UserError) as err:
        resolve_run(str(target), "--baseline")
    text = str(err.value)
    assert text.startswith(f"--baseline {target}") and "\n" not in text
    assert message.format(p=tmp_path) in text


def test_an_adapter_that_names_no_base_needs_the_config(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError, match="names no base_model_name_or_path; pass the run's YAML"):
        run_in_folder(folder, None, "--baseline")
    assert run_in_folder(folder, "org/m", "--baseline").base_model == "org/m"


def test_a_run_with_another_tokenizer_is_refused(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from tiny_model import build_tiny_llama

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    same = run_in_folder(tiny_model_dir, None, "--baseline")
    check_tokenizer(same, tokenizer, "--baseline", False)  # the same tokenizer: accepted
    other = run_in_folder(build_tiny_llama(tmp_path / "other", vocab_size=300), None,
                          "--baseline")
    with pytest.raises(UserError, match=r"its tokenizer \(\d+ tokens\) is not the config's"):
        check_tokenizer(other, tokenizer, "--baseline", False)
    bare = _adapter(tmp_path / "bare")  # no tokenizer saved: nothing to compare
    check_tokenizer(run_in_folder(bare, None, "--baseline"), tokenizer, "--baseline", False)


# -- the comparison ---------------------------------------------------------------------------


def test_judge_applies_the_check_and_marks_a_raising_row_none():
    messages = [[{"role": "user", "content": q}] for q in ("Add 2 and 3.", "Hamlet?", "Sea?")]
    answers = [["5"], ["Shakespeare"], ["blue"]]
    verdicts = judge(load_check("contains"), messages, answers, ["it is 5", "Dickens", "Blue."])
    assert verdicts == [True, False, True]
    # `number` raises on a gold answer without a number: that prompt is not judged
    assert judge(load_check("number"), messages, answers, ["5.0", "7", "1"]) == [True, None, None]
    assert accuracy([True, None, False, False]) == pytest.approx(1 / 3)
    assert math.isnan(accuracy([None]))


def test_run_metrics_pool_gold_tokens_and_count_words():
    gold = [AnswerScore(-2.0, 1), AnswerScore(-4.0, 3)]
    metrics = run_metrics(gold, ["one two", "three"], [True, None])
    assert metrics == {"accuracy": 1.0, "gold_nll": 1.5, "answer_words": 1.5, "right": 1,
                       "check_errors": 1}


def test_compare_is_run_minus_baseline_on_prompts_judged_for_both():
    run_v = [True, True, False, True, None]
    base_v = [False, True, False, None, True]
    run_m = {"gold_nll": 2.0, "answer_words": 3.0}
    base_m = {"gold_nll": 2.5, "answer_words": 7.0}
    diff = compare(run_m, base_m, run_v, base_v)
    assert diff["accuracy"] == {**paired_bootstrap([0.0, 1.0, 0.0], [1.0, 1.0, 0.0]),
                                "prompts": 3}
    assert diff["accuracy"]["change"] == pytest.approx(1 / 3)
    assert diff["gold_nll"] == pytest.approx(-0.5) and diff["answer_words"] == pytest.approx(-4)


@pytest.mark.parametrize(
    ("low", "high", "start"),
    [(0.02, 0.3, "the run is better"), (-0.3, -0.01, "the run is worse"),
     (-0.1, 0.2, "no measurable difference"), (0.0, 0.2, "no measurable difference"),
     (float("nan"), float("nan"), "no reading")],
)
def test_reading_follows_the_interval(low, high, start):
    assert reading({"change": 0.1, "low": low, "high": high}).startswith(start)


def _report(run_errors=0):
    run = {"path": "out", "kind": "adapter", "base_model": "m", "accuracy": 0.75,
           "gold_nll": 2.25, "answer_words": 4.0, "right": 3, "check_errors": run_errors}
    base = {"path": "sft/merged", "kind": "full", "base_model": None, "accuracy": 0.5,
            "gold_nll": 2.5, "answer_words": 9.5, "right": 2, "check_errors": 0}
    diff = {"accuracy": {"change": 0.25, "low": -0.25, "high": 0.75, "prompts": 4},
            "gold_nll": -0.25, "answer_words": -5.5}
    return {"check": "number", "heldout": {"prompts": 4}, "runs": {"run": run, "baseline": base},
            "difference": diff, "reading": reading(diff["accuracy"])}


def test_comparison_table_shows_both_runs_the_difference_and_the_reading():
    lines = format_comparison(_report()).splitlines()
    assert lines[0] == "held-out comparison: 4 prompts, answer check `number`"
    assert lines[1] == "  run:      out (adapter on m)"
    assert lines[2] == "  baseline: sft/merged (full model)"
    assert lines[4].split() == ["accuracy", "(number)", "0.750", "0.500", "+0.250", "[-0.250,",
                                "+0.750]"]
    assert lines[5].split()[-3:] == ["2.250", "2.500", "-0.250"]
    assert lines[6].split()[-3:] == ["4.0", "9.5", "-5.5"]
    assert lines[-1] == "reading: no measurable difference (the 95% interval contains 0)"
    assert "the check raised on 2 answers" in format_comparison(_report(run_errors=2))


def test_comparison_plot_is_a_png(tmp_path):
    assert plot_comparison(_report(), tmp_path / "eval.png") == tmp_path / "eval.png"
    assert (tmp_path / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the real CLI on two tiny runs ------------------------------------------------------------

HELDOUT_ROWS = [
    {"instruction": "What is the capital of France?", "input": "", "output": "Paris"},
    {"instruction": "Who wrote Hamlet?", "input": "", "output": "Shakespeare"},
    {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
    {"instruction": "Name the sea.", "input": "", "output": "The sea"},
    {"instruction": "Write a poem about the moon.", "input": "", "output": "The moon is bright."},
    {"instruction": "Subtract 4 from 9.", "input": "", "output": "5"},
    {"instruction": "An empty answer", "input": "", "output": ""},
]


def _check_the_report(out, log, check, run_dir, baseline_dir):
    report = json.loads((out / "metrics.json").read_text())
    assert report["check"] == check
    assert report["heldout"]["prompts"] == 6 and report["heldout"]["invalid_rows"] == 1
    runs, diff = report["runs"], report["difference"]
    assert runs["run"]["path"] == str(run_dir) and runs["baseline"]["path"] == str(baseline_dir)
    verdicts = {}
    for name in ("run", "baseline"):
        rows = read_jsonl(out / f"predictions_{name}.jsonl")
        assert len(rows) == 6
        verdicts[name] = [row["right"] for row in rows]
        assert runs[name]["accuracy"] == pytest.approx(sum(verdicts[name]) / 6)
        assert runs[name]["kind"] == "adapter"
        for key in ("gold_nll", "answer_words"):
            assert isinstance(runs[name][key], float) and not math.isnan(runs[name][key])
    expected = paired_bootstrap([float(v) for v in verdicts["baseline"]],
                                [float(v) for v in verdicts["run"]])
    assert diff["accuracy"] == {**expected, "prompts": 6}
    assert diff["accuracy"]["change"] == pytest.approx(
        runs["run"]["accuracy"] - runs["baseline"]["accuracy"])
    assert diff["gold_nll"] == pytest.approx(runs["run"]["gold_nll"] - runs["baseline"]["gold_nll"])
    assert runs["run"]["gold_nll"] != runs["baseline"]["gold_nll"]  # two different models
    assert report["reading"] == reading(diff["accuracy"])
    acc = diff["accuracy"]
    assert f"accuracy ({check})" in log
    assert (f"{runs['run']['accuracy']:.3f}     {runs['baseline']['accuracy']:.3f}  "
            f"{acc['change']:+.3f} [{acc['low']:+.3f}, {acc['high']:+.3f}]") in log
    assert f"reading: {report['reading']}" in log
    assert (out / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot: {out / 'eval.png'}" in log
    return report


@pytest.mark.e2e
def test_eval_baseline_compares_an_ipo_run_with_a_plain_sft_run(tiny_model_dir, tmp_path):
    ipo_cfg = write_config(tmp_path, sft_config(tiny_model_dir, tmp_path))
    sft_work = tmp_path / "sft"
    sft_work.mkdir()
    sft_data = write_jsonl(sft_work / "sft.jsonl", [r for r in SFT_ROWS if "output" in r])
    sft_cfg = write_config(sft_work, base_config(
        tiny_model_dir, sft_work, datasets=[{"path": str(sft_data), "type": "alpaca"}],
        # Axolotl turns its LoRA kernels on for plain SFT, and they need CUDA
        lora_mlp_kernel=False, lora_qkv_kernel=False, lora_o_kernel=False,
    ))
    for cfg, work in ((ipo_cfg, tmp_path), (sft_cfg, sft_work)):
        code, log = run(axolotl("train", cfg), work)
        assert code == 0, log[-3000:]
    heldout = write_jsonl(tmp_path / "heldout.jsonl", HELDOUT_ROWS)
    argv = axolotl_ipo("eval", str(ipo_cfg), "--data", str(heldout), "--max-new-tokens", "8")

    # RUN as the baseline's config: its output_dir; the config's answer_check is none: contains
    code, log = run([*argv, "--baseline", str(sft_cfg)], tmp_path)
    assert code == 0, log[-3000:]
    assert "held-out comparison: 6 prompts, answer check `contains`" in log
    out = tmp_path / "out" / "ipo_eval_baseline"
    _check_the_report(out, log, "contains", tmp_path / "out", sft_work / "out")

    # RUN as the folder, a user's check that splits the answers about evenly
    other = tmp_path / "coin"
    code, log = run([*argv, "--baseline", str(sft_work / "out"), "--check", "user_checks:coin",
                     "--output", str(other)], tmp_path)
    assert code == 0, log[-3000:]
    report = _check_the_report(other, log, "user_checks:coin", tmp_path / "out", sft_work / "out")
    assert 0 < report["runs"]["run"]["right"] + report["runs"]["baseline"]["right"] < 12

    # RUN that is no model: one line, no traceback
    code, log = run([*argv, "--baseline", str(tmp_path / "nowhere")], tmp_path)
    assert code == 1 and "Traceback" not in log
    assert log.strip().splitlines()[-1] == (
        f"axolotl-ipo: error: --baseline {tmp_path / 'nowhere'}: no such file or folder; pass "
        "a training run's output_dir or its YAML config"
    )


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--check", "contains"], "--check judges the answers of --baseline's comparison"),
        (["--baseline", "{other}", "--no-generate"], "leave out --no-generate"),
        (["--baseline", "{other}", "--adapter", "none"], "--adapter none evaluates the base"),
        (["--baseline", "{other}", "--check", "nope"], "--check: unknown check 'nope'; use one"),
        (["--baseline", "{other}", "--check", "none"], "--check none judges every answer wrong"),
        (["--baseline", "{out}"], "--baseline {out} is the run itself"),
        (["--baseline", "{other}", "--type", "chatml"],
         "--data: held-out data '{data}' with type 'chatml' is not an SFT dataset"),
    ],
)
def test_eval_baseline_flag_mistakes_are_one_line(tiny_model_dir, tmp_path, args, message):
    cfg = write_config(tmp_path, sft_config(tiny_model_dir, tmp_path))
    heldout = write_jsonl(tmp_path / "heldout.jsonl", HELDOUT_ROWS)
    paths = {"out": _adapter(tmp_path / "out"), "other": _adapter(tmp_path / "other"),
             "data": heldout}
    argv = axolotl_ipo("eval", str(cfg), "--data", str(heldout),
                       *[arg.format(**paths) for arg in args])
    code, log = run(argv, tmp_path)
    assert code == 1 and "Traceback" not in log
    last = log.strip().splitlines()[-1]
    assert last.startswith("axolotl-ipo: error: ") and message.format(**paths) in last

"""research/skill_study/skill_study.py: its configs differ only where the arms differ, its ROUGE-L
is the textbook one, and arms train through the real Axolotl CLI on the tiny model and are
scored."""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from helpers import load_script, write_jsonl

skill_study = load_script("research/skill_study/skill_study.py")

ROWS = [
    {"instruction": f"What is {a} plus {b}?", "input": "", "output": f"{a + b} apples"}
    for a, b in ((1 + i, 2 + i) for i in range(8))
]


def make_study(tmp_path: Path, model: str = "m", **kw) -> skill_study.Study:
    train = write_jsonl(tmp_path / "train.jsonl", ROWS)
    heldout = write_jsonl(tmp_path / "heldout.jsonl", ROWS[:3])
    return skill_study.Study(train, heldout, kw.pop("check", "rouge"), tmp_path / "work", model,
                             **kw)


def fake_merged_sft(study: skill_study.Study) -> Path:
    """A stand-in for the `sft` arm's merged model, where the sft_then_* arms start."""
    merged = study.work / "sft" / "model" / "merged"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text("{}")
    return merged


def fake_axolotl_runs(monkeypatch) -> list[list[str]]:
    """Stand-ins for the study's Axolotl commands: training writes nothing, merge_lora writes
    the merged model; returns the list their arguments are recorded in."""
    calls: list[list[str]] = []

    def run(argv, log, what):
        calls.append(argv[2:])
        if argv[2] == "axolotl.cli.merge_lora":
            out = Path(argv[-1]).parent / "model" / "merged"
            out.mkdir(parents=True)
            (out / "config.json").write_text("{}")

    monkeypatch.setattr(skill_study, "run_logged", run)
    return calls


@pytest.mark.parametrize(("ref", "cand", "expected"), [
    ("the cat sat on the mat", "the cat sat on the mat", 1.0),
    ("the cat sat", "dogs bark", 0.0),
    # LCS "the cat the" = 3 of 6 reference and 4 candidate tokens: P 3/4, R 1/2, F 0.6
    ("the cat sat on the mat", "the cat and the", 0.6),
    ("", "anything", 0.0),
])
def test_rouge_l(ref, cand, expected):
    assert skill_study.rouge_l(ref, cand) == pytest.approx(expected)


def test_arms_differ_only_in_their_loss_and_data(tmp_path):
    study = make_study(tmp_path, steps=7)
    sft, ipo = skill_study.arm_config("sft", study), skill_study.arm_config("ipo", study)
    shared = {"base_model", "sequence_len", "adapter", "lora_r", "lora_alpha", "max_steps",
              "micro_batch_size", "learning_rate", "seed", "lr_scheduler", "optimizer"}
    assert {k: sft[k] for k in shared} == {k: ipo[k] for k in shared}
    assert sft["max_steps"] == 7 and "rl" not in sft and "plugins" not in sft
    assert sft["datasets"][0]["type"] == "chat_template"
    assert ipo["rl"] == "ipo" and ipo["datasets"] == [{"path": str(study.train), "type": "alpaca"}]
    assert "answer_check" not in ipo["rejection_sampling"]  # rouge scores, it does not judge
    # the SFT arm trains on the plugin's own rendering of the alpaca rows
    messages = [json.loads(x)["messages"] for x in
                (study.work / "sft_messages.jsonl").read_text().splitlines()]
    assert messages[0] == [{"role": "user", "content": "What is 1 plus 2?"},
                           {"role": "assistant", "content": "3 apples"}]
    with pytest.raises(ValueError, match="unknown arm"):
        skill_study.arm_config("rlhf", study)


def test_num_samples_reaches_every_sampled_arm_and_only_when_set(tmp_path):
    default = make_study(tmp_path, check="number")
    assert "num_samples" not in skill_study.arm_config("ipo", default)["rejection_sampling"]
    more = make_study(tmp_path, check="number", num_samples=4)
    for arm in ("ipo", "ipo_sft@0.5"):
        sampling = skill_study.arm_config(arm, more)["rejection_sampling"]
        assert sampling["num_samples"] == 4 and sampling["answer_check"] == "number"
    study, _, _ = skill_study.parse_args(["--train", "t", "--heldout", "h", "--check", "number",
                                          "--json", "o", "--num-samples", "3", "--seed", "7"])
    assert study.num_samples == 3 and study.seed == 7
    replicate = skill_study.arm_config("ipo", dataclasses.replace(more, seed=7))
    assert replicate["seed"] == 7 and replicate["rejection_sampling"]["seed"] == 7


def test_sft_then_ipo_starts_from_the_merged_sft_model(tmp_path):
    study = make_study(tmp_path)
    merged = study.work / "sft" / "model" / "merged"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text("{}")  # an existing merge is reused, not redone
    cfg = skill_study.arm_config("sft_then_ipo", study)
    ipo = skill_study.arm_config("ipo", study)
    assert cfg["base_model"] == str(merged) and ipo["base_model"] == "m"
    assert cfg["output_dir"] == str(study.work / "sft_then_ipo" / "model")
    assert {k: v for k, v in cfg.items() if k not in ("base_model", "output_dir",
            "dataset_prepared_path")} == {k: v for k, v in ipo.items() if k not in
                                          ("base_model", "output_dir", "dataset_prepared_path")}


def test_sft_cosine_is_the_sft_arm_with_a_cosine_schedule(tmp_path):
    study = make_study(tmp_path)
    cosine, sft = (skill_study.arm_config(n, study) for n in ("sft_cosine-s9", "sft-s9"))
    assert (cosine["lr_scheduler"], sft["lr_scheduler"]) == ("cosine", "constant")
    drop = ("lr_scheduler", "output_dir", "dataset_prepared_path")
    assert {k: v for k, v in cosine.items() if k not in drop} == {
        k: v for k, v in sft.items() if k not in drop}
    assert skill_study.parse_arm("sft_cosine@1.0") is None
    assert skill_study.pairs_of(skill_study.parse_arm("sft_cosine"), study) is None


def test_sft_then_ipo_needs_the_sft_arm(tmp_path):
    with pytest.raises(SystemExit, match="needs the sft arm"):
        skill_study.arm_config("sft_then_ipo", make_study(tmp_path))


def test_sft_then_sft_continues_sft_from_the_merged_sft_model_on_every_row(tmp_path):
    study = make_study(tmp_path)
    merged = fake_merged_sft(study)
    assert skill_study.parse_arm("sft_then_sft@1.0") is None  # SFT has no tau
    assert skill_study.parse_arm("sft_then_sft-n4") is None  # nor samples
    cfg = skill_study.arm_config("sft_then_sft-s9", study)
    sft = skill_study.arm_config("sft", study)
    assert cfg["base_model"] == str(merged) and cfg["max_steps"] == 9 and "rl" not in cfg
    assert cfg["output_dir"] == str(study.work / "sft_then_sft-s9" / "model")
    # the sft arm's rows and settings but for where it starts and how many steps it takes
    assert {k: v for k, v in cfg.items() if k not in ("base_model", "output_dir",
            "dataset_prepared_path", "max_steps")} == {k: v for k, v in sft.items() if k not in (
            "base_model", "output_dir", "dataset_prepared_path", "max_steps")}
    # and the start and steps of the IPO rounds it is the control of
    rounds = skill_study.arm_config("sft_then_ipo_sft@1.0-s9", study)
    assert (rounds["base_model"], rounds["max_steps"]) == (cfg["base_model"], cfg["max_steps"])
    assert skill_study.pairs_of(skill_study.parse_arm("sft_then_sft-s9"), study) is None


def test_the_control_arm_is_more_sft_on_the_prompts_sft_then_ipo_samples_wrong(tmp_path,
                                                                              monkeypatch):
    study = make_study(tmp_path, check="normalized", num_samples=4)
    merged = fake_merged_sft(study)
    name = "sft_then_sft_wrong-s9"
    arm, run = skill_study.parse_arm(name), study.work / name
    assert skill_study.parse_arm("sft_then_sft_wrong@1.0") is None  # SFT has no tau
    cfg, sft = skill_study.arm_config(name, study), skill_study.arm_config("sft", study)
    assert cfg["base_model"] == str(merged) and cfg["max_steps"] == 9 and "rl" not in cfg
    assert cfg["datasets"] == skill_study.chat_dataset(run / "wrong_messages.jsonl")
    assert {k: v for k, v in cfg.items() if k not in ("base_model", "output_dir", "datasets",
            "dataset_prepared_path", "max_steps")} == {k: v for k, v in sft.items() if k not in (
            "base_model", "output_dir", "datasets", "dataset_prepared_path", "max_steps")}

    calls = []

    def sample(argv, log_path, what):  # stands in for `axolotl-ipo sample CONFIG --output DIR`
        calls.append(argv)
        out = Path(argv[argv.index("--output") + 1])
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl(out / "pairs.jsonl", [{"row": 5, "rejected": "x"}, {"row": 2, "rejected": "y"}])

    monkeypatch.setattr(skill_study, "run_logged", sample)
    path = skill_study.wrong_rows_file(arm, study)
    assert calls[0][2:5] == ["axolotl_ipo.cli", "sample", str(run / "sample_config.yml")]
    # the very sampling of sft_then_ipo at the same steps: generator, seed, check, num_samples
    sampled = yaml.safe_load((run / "sample_config.yml").read_text())
    sibling = skill_study.arm_config("sft_then_ipo-s9", study)
    for key in ("base_model", "rejection_sampling", "datasets", "seed", "sequence_len"):
        assert sampled[key] == sibling[key]
    messages = [json.loads(x)["messages"] for x in path.read_text().splitlines()]
    assert messages == [[{"role": "user", "content": f"What is {a} plus {a + 1}?"},
                         {"role": "assistant", "content": f"{2 * a + 1} apples"}]
                        for a in (3, 6)]  # rows 2 and 5, in row order, with their gold answers
    assert skill_study.pairs_of(arm, study) == run / "pairs" / "pairs.jsonl"

    monkeypatch.setattr(skill_study, "run_logged", lambda argv, *_: write_jsonl(
        Path(argv[argv.index("--output") + 1]) / "pairs.jsonl", []))  # folder made above
    with pytest.raises(SystemExit, match="every training prompt right"):
        skill_study.wrong_rows_file(arm, study)


def test_an_arm_with_its_own_samples_per_prompt_differs_only_there(tmp_path):
    study = make_study(tmp_path, check="number", num_samples=4)
    fake_merged_sft(study)
    arm = skill_study.parse_arm("sft_then_ipo_sft@1.0-s60-n16")
    assert (arm.kind, arm.tau, arm.steps, arm.samples) == ("sft_then_ipo_sft", 1.0, 60, 16)
    many = skill_study.arm_config("sft_then_ipo_sft@1.0-s60-n16", study)
    four = skill_study.arm_config("sft_then_ipo_sft@1.0-s60", study)
    assert many["rejection_sampling"]["num_samples"] == 16
    assert four["rejection_sampling"]["num_samples"] == 4
    same = ("rejection_sampling", "output_dir", "dataset_prepared_path")
    assert {k: v for k, v in many.items() if k not in same} == {
        k: v for k, v in four.items() if k not in same}
    assert {**many["rejection_sampling"], "num_samples": 4} == four["rejection_sampling"]
    assert skill_study.parse_arm("selfplay_sft_2@1.0-s20-n8").run == "selfplay_sft@1.0-s20-n8"
    for name in ("sft-n4", "base-n4", "dpo-n4", "ipo-n0", "ipo-n16-s60"):
        assert skill_study.parse_arm(name) is None, name


def test_selfplay_arms_are_parsed_as_rounds_of_one_run(tmp_path):
    base = ["--train", "t", "--heldout", "h", "--check", "rouge", "--json", "o"]
    _, arms, _ = skill_study.parse_args([*base, "--arms", "base,selfplay_1,selfplay_3"])
    parsed = [skill_study.parse_arm(n) for n in arms]
    assert skill_study.selfplay_rounds(parsed) == {"selfplay": 3}
    assert skill_study.selfplay_rounds([skill_study.parse_arm("ipo")]) == {}
    sweep = [skill_study.parse_arm(n) for n in
             ("selfplay_sft_1@1.0-s20", "selfplay_sft_2@1.0-s20", "selfplay_sft_1@0.3")]
    assert [(a.kind, a.round, a.tau, a.steps) for a in sweep] == [
        ("selfplay_sft", 1, 1.0, 20), ("selfplay_sft", 2, 1.0, 20), ("selfplay_sft", 1, 0.3, None)]
    assert skill_study.selfplay_rounds(sweep) == {"selfplay_sft@1.0-s20": 2, "selfplay_sft@0.3": 1}
    for bad in ("selfplay_0", "selfplay_x", "selfplay_", "selfplay", "selfplay_sft",
                "selfplay_1-s0", "ipo_3"):
        with pytest.raises(SystemExit):
            skill_study.parse_args([*base, "--arms", f"base,{bad}"])


def test_selfplay_runs_its_recipe_at_its_tau_and_steps_per_round(tmp_path, monkeypatch):
    study = make_study(tmp_path, steps=60)
    calls = []
    monkeypatch.setattr(skill_study, "run_logged", lambda argv, log, what: calls.append(argv))
    arm = skill_study.parse_arm("selfplay_sft_3@1.0-s20")
    assert skill_study.selfplay(arm, study, 3) is not None
    run = study.work / "selfplay_sft@1.0-s20"
    cfg = yaml.safe_load((run / "config.yml").read_text())
    assert calls[0][-4:] == ["selfplay", str(run / "config.yml"), "--rounds", "3"]
    assert cfg["max_steps"] == 20 and cfg["ipo_tau"] == 1.0 and cfg["output_dir"] == str(run)
    assert cfg["ipo_sft_weight"] == study.sft_weight and cfg["rl"] == "ipo"
    plain = skill_study.parse_arm("selfplay_2")
    skill_study.selfplay(plain, study, 2)
    cfg = yaml.safe_load((study.work / "selfplay" / "config.yml").read_text())
    assert cfg["max_steps"] == 60 and cfg["ipo_tau"] == study.tau and cfg["ipo_sft_weight"] == 0


def test_selfplay_after_sft_starts_its_rounds_from_the_merged_sft_model(tmp_path, monkeypatch):
    study = make_study(tmp_path, steps=240)
    merged = fake_merged_sft(study)
    calls = []
    monkeypatch.setattr(skill_study, "run_logged", lambda argv, log, what: calls.append(argv))
    arm = skill_study.parse_arm("sft_then_selfplay_sft_2@1.0-s30")
    assert (arm.kind, arm.round, arm.tau, arm.steps) == ("sft_then_selfplay_sft", 2, 1.0, 30)
    assert arm.run == "sft_then_selfplay_sft@1.0-s30"
    skill_study.selfplay(arm, study, 2)
    run = study.work / arm.run
    cfg = yaml.safe_load((run / "config.yml").read_text())
    assert calls[0][-4:] == ["selfplay", str(run / "config.yml"), "--rounds", "2"]
    # round 1 is sft_then_ipo_sft at the same tau and steps: only where it is written differs
    one = skill_study.arm_config("sft_then_ipo_sft@1.0-s30", study)
    assert cfg["base_model"] == one["base_model"] == str(merged)
    drop = ("output_dir", "dataset_prepared_path")
    assert {k: v for k, v in cfg.items() if k not in drop} == {
        k: v for k, v in one.items() if k not in drop}
    for bad in ("sft_then_selfplay_sft", "sft_then_selfplay_sft_0", "sft_then_selfplay_2"):
        assert skill_study.parse_arm(bad) is None, bad


def test_nll_rounds_keep_solved_prompts_and_reseed_each_round(tmp_path, monkeypatch):
    """sft_then_selfplay_nll: the sft_then_selfplay_sft recipe plus `solved: nll`, run with
    `selfplay --reseed` (round k with seed + k - 1, as its control sft_then_sft_reseeded_K)."""
    study = make_study(tmp_path, steps=240)
    fake_merged_sft(study)
    calls = []
    monkeypatch.setattr(skill_study, "run_logged", lambda argv, log, what: calls.append(argv))
    arm = skill_study.parse_arm("sft_then_selfplay_nll_3@1.0-s30")
    assert (arm.kind, arm.round, arm.run) == ("sft_then_selfplay_nll", 3,
                                             "sft_then_selfplay_nll@1.0-s30")
    skill_study.selfplay(arm, study, 3)
    run = study.work / arm.run
    assert calls[0][-5:] == ["selfplay", str(run / "config.yml"), "--rounds", "3", "--reseed"]
    cfg = yaml.safe_load((run / "config.yml").read_text())
    assert cfg["rejection_sampling"]["solved"] == "nll" and cfg["ipo_sft_weight"] > 0
    sft = skill_study.parse_arm("sft_then_selfplay_sft_3@1.0-s30")
    skill_study.selfplay(sft, study, 3)
    assert calls[1][-1] == "3"  # the earlier rounds keep one seed
    other = yaml.safe_load((study.work / sft.run / "config.yml").read_text())
    drop = ("output_dir", "dataset_prepared_path")
    other["rejection_sampling"]["solved"] = "nll"
    assert {k: v for k, v in cfg.items() if k not in drop} == {
        k: v for k, v in other.items() if k not in drop}


def test_sft_rounds_restart_plain_sft_from_each_rounds_merged_model(tmp_path, monkeypatch):
    """The control of self-play after SFT: as many restarts and steps, plain SFT on every row."""
    study = make_study(tmp_path, steps=240)
    merged = fake_merged_sft(study)
    calls = fake_axolotl_runs(monkeypatch)
    arm = skill_study.parse_arm("sft_then_sft_rounds_2-s30")
    assert (arm.kind, arm.round, arm.steps, arm.run) == (
        "sft_then_sft_rounds", 2, 30, "sft_then_sft_rounds-s30")
    assert skill_study.selfplay_rounds([arm]) == {"sft_then_sft_rounds-s30": 2}
    assert skill_study.sft_rounds(arm, study, 2) is not None
    run = study.work / arm.run
    one, two = (yaml.safe_load((run / f"round-{k}" / "config.yml").read_text()) for k in (1, 2))
    assert calls == [["axolotl.cli.train", str(run / "round-1" / "config.yml")],
                     ["axolotl.cli.merge_lora", str(run / "round-1" / "config.yml")],
                     ["axolotl.cli.train", str(run / "round-2" / "config.yml")],
                     ["axolotl.cli.merge_lora", str(run / "round-2" / "config.yml")]]
    assert one["base_model"] == str(merged)
    assert two["base_model"] == str(run / "round-1" / "model" / "merged")
    # each round is the equal-steps control sft_then_sft-s30 but for where it starts
    control = skill_study.arm_config("sft_then_sft-s30", study)
    drop = ("output_dir", "dataset_prepared_path", "base_model")
    for cfg in (one, two):
        assert {k: v for k, v in cfg.items() if k not in drop} == {
            k: v for k, v in control.items() if k not in drop}
    model = skill_study.round_record(study, arm)["model"]
    assert model == str(run / "round-2" / "model" / "merged")
    assert skill_study.pairs_of(arm, study) is None
    assert skill_study.sft_rounds(arm, study, 2) is None and len(calls) == 4  # all reused
    for bad in ("sft_then_sft_rounds", "sft_then_sft_rounds_0", "sft_then_sft_rounds_1@1.0",
                "sft_then_sft_rounds_1-n4", "sft_then_sft_2"):
        assert skill_study.parse_arm(bad) is None, bad


def test_reseeded_sft_rounds_draw_their_own_order_of_the_rows(tmp_path, monkeypatch):
    """With one seed every restart gets the same order from Axolotl's seeded shuffle (a round
    shorter than an epoch repeats the same rows); the reseeded control runs round k with seed
    + k - 1 and shares round 1 with the plain restarts."""
    study = make_study(tmp_path, steps=240)
    merged = fake_merged_sft(study)
    calls = fake_axolotl_runs(monkeypatch)
    plain = skill_study.parse_arm("sft_then_sft_rounds_1-s30")
    assert skill_study.sft_rounds(plain, study, 1) is not None and len(calls) == 2
    arm = skill_study.parse_arm("sft_then_sft_reseeded_3-s30")
    assert (arm.kind, arm.round) == ("sft_then_sft_reseeded", 3)
    assert arm.run == "sft_then_sft_reseeded-s30"
    assert skill_study.sft_rounds(arm, study, 3) is not None
    shared = study.work / "sft_then_sft_rounds-s30" / "round-1"
    two, three = (study.work / arm.run / f"round-{k}" for k in (2, 3))
    assert calls[2:] == [["axolotl.cli.train", str(two / "config.yml")],
                         ["axolotl.cli.merge_lora", str(two / "config.yml")],
                         ["axolotl.cli.train", str(three / "config.yml")],
                         ["axolotl.cli.merge_lora", str(three / "config.yml")]]  # round 1 reused
    configs = [yaml.safe_load((d / "config.yml").read_text()) for d in (shared, two, three)]
    assert [c["seed"] for c in configs] == [study.seed, study.seed + 1, study.seed + 2]
    assert configs[0]["base_model"] == str(merged)
    assert configs[1]["base_model"] == str(shared / "model" / "merged")
    assert configs[2]["base_model"] == str(two / "model" / "merged")
    drop = ("output_dir", "dataset_prepared_path", "base_model", "seed")
    assert {k: v for k, v in configs[2].items() if k not in drop} == {
        k: v for k, v in configs[0].items() if k not in drop}
    first = skill_study.parse_arm("sft_then_sft_reseeded_1-s30")
    assert skill_study.round_record(study, first)["model"] == str(shared / "model" / "merged")
    assert skill_study.round_record(study, arm)["model"] == str(three / "model" / "merged")
    assert skill_study.pairs_of(arm, study) is None
    assert skill_study.parse_arm("sft_then_sft_reseeded_2@1.0") is None


def test_a_finished_arm_is_reused_only_with_the_same_settings(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(skill_study, "run_logged", lambda argv, log, what: calls.append(argv))
    study = make_study(tmp_path, check="number")
    assert skill_study.train("ipo", study) is not None and len(calls) == 1
    assert skill_study.train("ipo", study) is None and len(calls) == 1  # reused
    for other in (dataclasses.replace(study, seed=7), dataclasses.replace(study, num_samples=4)):
        with pytest.raises(SystemExit, match="trained with other settings .*use a new --work"):
            skill_study.train("ipo", other)
    arm = skill_study.parse_arm("selfplay_1")
    (study.work / "selfplay").mkdir()
    skill_study.selfplay(arm, study, 1)
    (study.work / "selfplay" / "selfplay.json").write_text('{"rounds": [{"round": 1}]}')
    assert skill_study.selfplay(arm, study, 1) is None
    with pytest.raises(SystemExit, match="seed"):
        skill_study.selfplay(arm, dataclasses.replace(study, seed=7), 1)


def test_an_arm_with_its_own_steps_has_its_own_run_and_only_the_steps_differ(tmp_path):
    study = make_study(tmp_path)
    sft, longer = skill_study.arm_config("sft", study), skill_study.arm_config("sft-s120", study)
    assert sft["max_steps"] == 60 and longer["max_steps"] == 120
    assert longer["output_dir"] == str(study.work / "sft-s120" / "model")
    drop = ("max_steps", "output_dir", "dataset_prepared_path")
    assert {k: v for k, v in sft.items() if k not in drop} == {
        k: v for k, v in longer.items() if k not in drop}
    both = skill_study.arm_config("ipo_sft@0.3-s30", study)
    assert both["max_steps"] == 30 and both["ipo_tau"] == 0.3


def test_sft_then_ipo_sft_adds_the_nll_term_to_sft_then_ipo(tmp_path):
    study = make_study(tmp_path)
    merged = fake_merged_sft(study)
    plain = skill_study.arm_config("sft_then_ipo@1.0", study)
    nll = skill_study.arm_config("sft_then_ipo_sft@1.0", study)
    assert nll["base_model"] == plain["base_model"] == str(merged)
    assert nll.pop("ipo_sft_weight") == study.sft_weight
    assert plain.pop("ipo_sft_weight") == 0.0  # pure IPO, whatever the plugin's default
    drop = ("output_dir", "dataset_prepared_path")
    assert {k: v for k, v in nll.items() if k not in drop} == {
        k: v for k, v in plain.items() if k not in drop}


def test_an_arm_at_its_own_tau_has_its_own_run_and_only_that_tau_differs(tmp_path):
    study = make_study(tmp_path)
    ipo, swept = skill_study.arm_config("ipo", study), skill_study.arm_config("ipo@1.0", study)
    assert ipo["ipo_tau"] == 0.1 and swept["ipo_tau"] == 1.0
    assert swept["output_dir"] == str(study.work / "ipo@1.0" / "model")
    pairs = study.work / "ipo" / "prepared" / "ipo_pairs" / "k" / "pairs.jsonl"
    pairs.parent.mkdir(parents=True)
    pairs.touch()
    assert skill_study.arm_config("dpo@0.5", study)["rl_beta"] == 0.5
    assert skill_study.arm_config("ipo_sft@2", study)["ipo_sft_weight"] == study.sft_weight
    drop = ("ipo_tau", "output_dir", "dataset_prepared_path")
    assert {k: v for k, v in ipo.items() if k not in drop} == {
        k: v for k, v in swept.items() if k not in drop}
    base = ["--train", "t", "--heldout", "h", "--check", "rouge", "--json", "o"]
    _, arms, _ = skill_study.parse_args([*base, "--arms", "sft,ipo@1.0,ipo_sft@0.5"])
    assert arms == ["sft", "ipo@1.0", "ipo_sft@0.5"]
    for bad in ("sft@1.0", "base@1", "ipo@x", "ipo@0", "ipo@-1", "ipo@", "base-s10", "ipo@1@2"):
        with pytest.raises(SystemExit):
            skill_study.parse_args([*base, "--arms", bad])


def test_summary_has_paired_intervals():
    results = {"base": {"scores": [0.0, 0.0, 1.0, 0.0], "gold_nll": 3.0, "words": 9.0},
               "sft": {"scores": [1.0, 0.0, 1.0, 0.0], "gold_nll": 2.0, "words": 2.0},
               "ipo": {"scores": [1.0, 1.0, 1.0, 0.0], "gold_nll": 2.5, "words": 3.0}}
    arms = skill_study.summarise(results)
    assert arms["ipo"]["accuracy"] == 0.75 and arms["ipo"]["change_vs_sft"] == 0.25
    assert arms["ipo"]["change_vs_base"] == 0.5
    lo, hi = arms["ipo"]["ci_vs_sft"]
    assert 0.0 <= lo <= 0.25 <= hi <= 1.0 and hi > lo  # one of four prompts differs
    assert "ci_vs_sft" not in arms["sft"] and arms["sft"]["ci_vs_base"][1] >= 0.25
    assert "| ipo | 0.750 | +0.250" in skill_study.table(arms)
    arms["ipo"]["rejected_score"] = 0.125
    assert skill_study.table(arms).splitlines()[-1].endswith("| 0.125 |")
    alone = skill_study.table({"x": arms["sft"]}).splitlines()  # no comparison columns
    assert [line.count("|") for line in alone] == [7, 7, 7]
    assert alone[0] == ("| arm | accuracy | gold NLL/token | words | preference accuracy | "
                        "its rejected answers' score |")
    arms["ipo"]["pref_accuracy"] = 0.9
    assert "| 3.0 | 0.900 | 0.125 |" in skill_study.table(arms)


def test_versus_adds_a_paired_comparison_with_the_arm_named():
    results = {"sft": {"scores": [1.0, 0.0, 1.0, 0.0], "gold_nll": 2.0, "words": 2.0},
               "sft-s120": {"scores": [1.0, 1.0, 0.0, 0.0], "gold_nll": 2.0, "words": 2.0},
               "sft_then_ipo": {"scores": [1.0, 1.0, 1.0, 1.0], "gold_nll": 2.5, "words": 3.0}}
    arms = skill_study.summarise(results, ("sft-s120",))
    assert arms["sft_then_ipo"]["change_vs_sft-s120"] == 0.5
    assert arms["sft"]["change_vs_sft-s120"] == 0.0 and "ci_vs_sft-s120" not in arms["sft-s120"]
    header, _, *rows = skill_study.table(arms, ("sft-s120",)).splitlines()
    assert "vs sft-s120 [95% CI]" in header
    assert "vs base" not in header  # a column only for an arm in the table
    assert rows[-1].startswith("| sft_then_ipo | 1.000 | +0.500") and "| +0.500 [" in rows[-1]
    base = ["--train", "t", "--heldout", "h", "--check", "number", "--json", "o"]
    with pytest.raises(SystemExit):  # a comparison with an arm that is not run
        skill_study.parse_args([*base, "--arms", "base,sft", "--versus", "sft-s120"])
    _, _, args = skill_study.parse_args([*base, "--arms", "sft,sft-s120", "--versus", "sft-s120"])
    assert args.versus == ("sft-s120",)


@pytest.mark.e2e
def test_arms_train_through_axolotl_and_are_scored(tiny_model_dir, tmp_path):
    out = tmp_path / "study.json"
    study = make_study(tmp_path, str(tiny_model_dir))
    argv = ["--train", str(study.train), "--heldout", str(study.heldout), "--check", "normalized",
            "--arms", "base,sft,ipo,dpo", "--steps", "2", "--sequence-len", "128",
            "--sample-tokens", "8", "--answer-tokens", "8", "--base-model", str(tiny_model_dir),
            "--work", str(study.work), "--json", str(out)]
    assert skill_study.main(argv) == 0
    report = json.loads(out.read_text())
    assert list(report["arms"]) == ["base", "sft", "ipo", "dpo"]
    assert report["date"] and report["machine"]["cpus"] >= 1 and report["machine"]["axolotl"]
    for name in ("sft", "ipo", "dpo"):
        assert (study.work / name / "model" / "adapter_model.safetensors").is_file()
        assert report["arms"][name]["n"] == 3 and "ci_vs_base" in report["arms"][name]
        assert ("ci_vs_sft" in report["arms"][name]) == (name != "sft")
        # trained weights differ from the base: the gold answers' NLL moved
        assert report["arms"][name]["gold_nll"] != report["arms"]["base"]["gold_nll"]
    # the rejected answers each arm trained on, scored by the study's check against the gold
    assert "rejected_score" not in report["arms"]["sft"]
    assert report["arms"]["dpo"]["rejected_score"] == report["arms"]["ipo"]["rejected_score"]
    assert 0 <= report["arms"]["ipo"]["rejected_score"] <= 1
    pairs = skill_study.read_jsonl(skill_study.pairs_file(study.work / "ipo"))
    assert report["arms"]["ipo"]["pairs"] == len(pairs) > 0
    ipo_cfg = (study.work / "ipo" / "config.yml").read_text()
    assert "answer_check: normalized" in ipo_cfg and "rl: ipo" in ipo_cfg
    dpo_cfg = (study.work / "dpo" / "config.yml").read_text()
    assert str(skill_study.pairs_file(study.work / "ipo")) in dpo_cfg  # the very pairs of ipo
    # a rerun reuses every trained arm and its evaluation
    assert skill_study.main(argv) == 0
    assert set(json.loads(out.read_text())["train_seconds"].values()) == {None}


@pytest.mark.e2e
def test_sft_then_ipo_and_selfplay_rounds(tiny_model_dir, tmp_path):
    """Intel's order (IPO on the merged SFT model) and two self-play rounds, each scored."""
    out = tmp_path / "study.json"
    study = make_study(tmp_path, str(tiny_model_dir))
    argv = ["--train", str(study.train), "--heldout", str(study.heldout), "--check", "normalized",
            "--arms", "base,sft,sft_then_ipo,sft_then_sft_wrong,selfplay_1,selfplay_2,"
                      "sft_then_selfplay_sft_2,sft_then_sft,sft_then_sft_rounds_2-s1",
            "--steps", "2",
            "--sequence-len", "128", "--sample-tokens", "8", "--answer-tokens", "8",
            "--base-model", str(tiny_model_dir), "--work", str(study.work), "--json", str(out)]
    assert skill_study.main(argv) == 0
    arms = json.loads(out.read_text())["arms"]
    assert list(arms) == ["base", "sft", "sft_then_ipo", "sft_then_sft_wrong", "selfplay_1",
                          "selfplay_2", "sft_then_selfplay_sft_2", "sft_then_sft",
                          "sft_then_sft_rounds_2-s1"]
    merged = study.work / "sft" / "model" / "merged"
    cfg = (study.work / "sft_then_ipo" / "config.yml").read_text()
    assert f"base_model: {merged}" in cfg and "rl: ipo" in cfg
    sampled = skill_study.pairs_file(study.work / "sft_then_ipo")  # in the shared store
    assert sampled.parent.parent == study.work / "pair_store"
    assert json.loads(sampled.read_text().splitlines()[0])["generator"].endswith(str(merged))
    # the control samples the same pairs, then SFT-trains on their rows' gold answers
    control = study.work / "sft_then_sft_wrong"
    assert (control / "pairs" / "pairs.jsonl").read_bytes() == sampled.read_bytes()
    rows = sorted({p["row"] for p in skill_study.read_jsonl(sampled)})
    trained = (control / "wrong_messages.jsonl").read_text().splitlines()
    all_rows = (study.work / "sft_messages.jsonl").read_text().splitlines()
    assert rows and trained == [all_rows[i] for i in rows]
    assert (control / "model" / "adapter_model.safetensors").is_file()
    assert arms["sft_then_sft_wrong"]["pairs"] == arms["sft_then_ipo"]["pairs"] == len(rows)
    rounds = json.loads((study.work / "selfplay" / "selfplay.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert rounds[1]["generator"] == rounds[0]["model"]  # round 2 samples from round 1's model
    for name in ("selfplay_1", "selfplay_2"):
        assert arms[name]["n"] == 3 and arms[name]["pairs"] > 0 and "ci_vs_sft" in arms[name]
        assert 0 <= arms[name]["rejected_score"] <= 1
    assert arms["selfplay_2"]["gold_nll"] != arms["selfplay_1"]["gold_nll"]
    # self-play after SFT: round 1 samples from the merged SFT model, round 2 from round 1's
    after = json.loads((study.work / "sft_then_selfplay_sft" / "selfplay.json").read_text())
    assert [r["generator"] for r in after["rounds"]] == [str(merged), after["rounds"][0]["model"]]
    assert arms["sft_then_selfplay_sft_2"]["pairs"] > 0
    # the equal-steps control: plain SFT on every row from the merged SFT model, no pairs
    cont = yaml.safe_load((study.work / "sft_then_sft" / "config.yml").read_text())
    assert cont["base_model"] == str(merged) and "rl" not in cont
    assert (study.work / "sft_then_sft" / "model" / "adapter_model.safetensors").is_file()
    assert "pairs" not in arms["sft_then_sft"] and "ci_vs_sft" in arms["sft_then_sft"]
    # its restart control: two plain SFT rounds, round 2 from round 1's merged model
    restarts = study.work / "sft_then_sft_rounds-s1"
    second = yaml.safe_load((restarts / "round-2" / "config.yml").read_text())
    assert second["base_model"] == str(restarts / "round-1" / "model" / "merged")
    assert (restarts / "round-2" / "model" / "merged" / "config.json").is_file()
    assert "pairs" not in arms["sft_then_sft_rounds_2-s1"]
    assert arms["sft_then_sft_rounds_2-s1"]["gold_nll"] != arms["sft"]["gold_nll"]


def test_rejected_score_is_the_check_of_each_pairs_rejected_answer_against_its_rows_gold(tmp_path):
    study = make_study(tmp_path, check="normalized")
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"row": 0, "prompt": "p", "chosen": "3 apples<eos>", "rejected": "3 apples<eos>"},
        {"row": 1, "prompt": "p", "chosen": "5 apples<eos>", "rejected": "3 apples<eos>"},
    ])  # row 1's gold is "5 apples": only the first rejected answer is right
    assert skill_study.rejected_score(pairs, study, "<eos>") == {"pairs": 2, "rejected_score": 0.5}
    assert skill_study.rejected_score(pairs, study, "")["rejected_score"] == 0.0


def test_the_guard_and_the_defaults_arms(tmp_path):
    """Recipe arms train on every row unless --guard; the `defaults` arm sets no IPO key at all
    (the plugin's defaults, the guard on); -wWEIGHT sets an ipo_sft arm's weight."""
    plain = skill_study.arm_config("ipo_sft@0.1-w20", make_study(tmp_path))
    assert plain["ipo_guard_rows"] == 0 and plain["ipo_sft_weight"] == 20.0
    guarded = skill_study.arm_config("ipo_sft@0.1-w20", make_study(tmp_path, guard=True))
    assert "ipo_guard_rows" not in guarded
    defaults = skill_study.arm_config("defaults", make_study(tmp_path))
    assert not {"ipo_tau", "ipo_sft_weight", "ipo_guard_rows"} & set(defaults)
    assert defaults["rl"] == "ipo" and "answer_check" not in defaults["rejection_sampling"]
    assert skill_study.parse_arm("defaults@0.5") is None  # the defaults have no tau of their own
    assert skill_study.parse_arm("ipo@0.1-w2") is None  # only the NLL recipes have a weight

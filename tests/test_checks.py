"""Answer checks, k samples per prompt, chosen/truncated policies (fast: a fake generator)."""

import json
import logging
import re
from fractions import Fraction

import pytest

from axolotl_ipo.config import IPOConfigError, normalise
from axolotl_ipo.pairs.build import build_pairs
from axolotl_ipo.pairs.checks import check_fingerprint, final_number, load_check
from axolotl_ipo.pairs.judge import PairPolicy
from axolotl_ipo.pairs.sampler import Completion, SamplingSettings
from axolotl_ipo.pairs.store import PairStore
from axolotl_ipo.pairs.summary import PairsSummary
from axolotl_ipo.sft_rows import extract_examples

EOS = "<|im_end|>"

NUMBER_CASES = [  # (sample, gold, judged right)
    ("The answer is 1,000.", "1000", True),
    ("1000", "1,000", True),
    ("That makes 3.0", "3", True),
    ("It costs $5.", "5", True),
    ("She has 9 apples left.", "9 apples", True),
    ("First 4, then 2 + 3 = 5", "5", True),
    ("so -2.5 degrees", "-2.5", True),
    ("3/4 of the cake", "0.75", True),
    ("$1,234.50 in total", "1234.5", True),
    ("It is 5, not 6", "5", False),  # the final number counts
    ("No idea.", "5", False),
    ("-3", "3", False),
    ("12 apples", "9 apples", False),
    ("1,000,000", "1000", False),
]


@pytest.mark.parametrize(("sample", "gold", "right"), NUMBER_CASES)
def test_number_check_judges_answer_forms(sample, gold, right):
    assert load_check("number")([], [gold], sample) is right


def test_number_parsing_and_a_gold_without_number():
    assert final_number("1,000 and .5") == Fraction(1, 2)
    assert final_number("x2 or y") is None
    assert load_check("number")([], ["nine", "9"], "it is 9") is True  # any gold answer
    with pytest.raises(ValueError, match="has no number"):
        load_check("number")([], ["nine"], "9")


def test_text_checks_and_none():
    assert load_check("normalized")([], ["The Beatles"], "beatles.") is True
    assert load_check("normalized")([], ["Beatles"], "The Beatles were a band") is False
    assert load_check("contains")([], ["x", "Eiffel Tower"], "It is the Eiffel tower.") is True
    assert load_check("contains")([], ["Paris"], "Parisian") is False
    assert load_check("none")([], ["Paris"], "Paris") is False


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("nosuch", "unknown check 'nosuch'"),
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("user_checks:missing", "module 'user_checks' has no function 'missing'"),
        (":f", "unknown check ':f'"),
    ],
)
def test_bad_check_names_are_one_line_config_errors(name, fragment):
    with pytest.raises(IPOConfigError) as err:
        normalise({"rl": "ipo", "rejection_sampling": {"answer_check": name}})
    message = str(err.value)
    assert "\n" not in message and message.startswith("rejection_sampling.answer_check: ")
    assert fragment in message


def test_user_check_loads_and_its_source_is_in_the_fingerprint():
    import user_checks

    assert load_check("user_checks:never_right") is user_checks.never_right
    assert len(check_fingerprint("user_checks:coin")["source_sha256"]) == 64


def test_a_builtin_check_is_keyed_by_its_code_and_the_helpers_it_calls(monkeypatch):
    """Changing what a built-in check does changes the pair cache key by itself: no hand bump
    of PAIRS_FORMAT_VERSION (`number` calls final_number, which uses the _NUMBER pattern)."""
    from axolotl_ipo.pairs import checks

    before = check_fingerprint("number")
    assert before["name"] == "number" and len(before["source_sha256"]) == 64
    assert check_fingerprint("number") == before
    assert check_fingerprint("contains") != before

    def final_number(text):  # a behaviour change in a helper
        return None

    monkeypatch.setattr(checks, "final_number", final_number)
    assert check_fingerprint("number") != before
    monkeypatch.undo()
    monkeypatch.setattr(checks, "_NUMBER", re.compile(r"\d+"))
    assert check_fingerprint("number") != before


def test_several_greedy_samples_are_a_config_error():
    with pytest.raises(IPOConfigError, match=r"num_samples: 3 with temperature 0") as err:
        normalise({"rl": "ipo", "rejection_sampling": {"num_samples": 3, "temperature": 0}})
    assert "\n" not in str(err.value)


def test_answers_column_is_read():
    rows = [
        {"instruction": "q", "output": "a", "answers": ["a", "b"]},
        {"instruction": "q", "output": "a", "answers": "c"},
        {"instruction": "q", "output": "a", "answers": {"text": ["d"]}},
        {"instruction": "q", "output": "a"},
        {"instruction": "q", "output": "a", "answers": [1, 2]},
    ]
    found, bad = extract_examples(rows, "alpaca", "d", answers_field="answers")
    assert [ex.answers for ex in found] == [("a", "b"), ("c",), ("d",), ()]
    assert bad[0].row == 4 and "rejection_sampling.answers_field" in bad[0].message
    assert extract_examples(rows[:1], "alpaca", "d")[0][0].answers == ()


# -- k samples per prompt, with a fake generator -------------------------------------------


class CountingGenerator:
    """Answers 'q<i> try<n>' for the n-th time it sees prompt i; 'long' prompts are cut."""

    name = "fake:tries"

    def __init__(self, log):
        self.log, self.seen = log, {}

    def generate(self, prompts, settings, seed):
        self.log.append((len(prompts), seed))
        out = []
        for prompt in prompts:
            tag = prompt.split("user\n")[1].split("<")[0].split()[0]
            n = self.seen.get(tag, 0)
            self.seen[tag] = n + 1
            reason = "length" if "long" in prompt and n == 0 else "stop"
            out.append(Completion(f"{tag} try{n}", 3, reason))
        return out

    def close(self):
        pass


RIGHT = {"q0 try0", "q0 try1", "q1 try0", "q1 try1", "q1 try2", "q3 try0"}


def right_by_table(prompt_messages, gold, sample):
    if sample.startswith("q2"):
        raise KeyError("no verdict for q2")
    return sample in RIGHT


def examples(n=5, long=()):
    rows = [
        {"instruction": f"q{i} {'long' if i in long else ''}", "output": f"gold {i}"}
        for i in range(n)
    ]
    return extract_examples(rows, "alpaca", "data.jsonl")[0]


def run(tmp_path, tokenizer, policy, log, name="s", exs=None, **kwargs):
    settings = SamplingSettings(batch_size=5, seed=7)
    store = PairStore.open(tmp_path / name, {"t": name})
    result = build_pairs(
        exs or examples(),
        tokenizer,
        lambda: CountingGenerator(log),
        settings,
        store,
        progress=False,
        policy=policy,
        **kwargs,
    )
    return settings, result, {r["row"]: r for r in store.read_pairs()}


@pytest.fixture
def tokenizer(tiny_model_dir, monkeypatch):
    """The tiny model's tokenizer; `user_checks:by_table` judges by the RIGHT table."""
    import user_checks
    from transformers import AutoTokenizer

    monkeypatch.setattr(user_checks, "by_table", right_by_table, raising=False)
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_first_wrong_sample_is_rejected_and_solved_prompts_are_counted(
    tmp_path, tokenizer, caplog
):
    log = []
    policy = PairPolicy("user_checks:by_table", num_samples=3)
    with caplog.at_level(logging.WARNING, logger="axolotl_ipo.pairs.build"):
        settings, result, pairs = run(tmp_path, tokenizer, policy, log)
    # q0: right, right, wrong -> try2; q1: all right; q2: the check raised; q3, q4: first wrong
    assert sorted(pairs) == [0, 3, 4]
    assert pairs[0]["rejected"] == f"q0 try2{EOS}" and pairs[0]["rejected_sample"] == 2
    assert pairs[3]["rejected"] == f"q3 try1{EOS}" and pairs[4]["rejected"] == f"q4 try0{EOS}"
    assert pairs[0]["chosen"] == f"gold 0{EOS}" and pairs[0]["chosen_source"] == "gold"
    assert (pairs[0]["samples"], pairs[0]["samples_right"]) == (3, 2)
    # round k samples only the prompts still open, seeded from (seed, batch, k)
    assert log == [(5, settings.sample_seed(0, 0)), (3, settings.sample_seed(0, 1)),
                   (2, settings.sample_seed(0, 2))]
    assert settings.sample_seed(0, 0) == settings.batch_seed(0) != settings.sample_seed(0, 1)
    s = result.summary
    assert (s.pairs_out, s.already_solved, s.check_errors) == (3, 1, 1)
    assert (s.samples_judged, s.samples_right) == (3 + 3 + 1 + 2 + 1, 2 + 3 + 1)
    assert "data.jsonl', row 2: KeyError: 'no verdict for q2'" in caplog.text
    assert "check errors                    1" in s.format()
    assert json.loads(result.store.summary_path.read_text())["already_solved"] == 1


def test_solved_nll_keeps_solved_prompts_with_chosen_on_both_sides(tmp_path, tokenizer):
    policy = PairPolicy("user_checks:by_table", num_samples=3, solved="nll")
    _, result, pairs = run(tmp_path, tokenizer, policy, [], "nll")
    # q1's three samples were right: kept, rejected = chosen; q2 (the check raised) still dropped
    assert sorted(pairs) == [0, 1, 3, 4]
    assert pairs[1]["chosen"] == pairs[1]["rejected"] == f"gold 1{EOS}" and pairs[1]["solved"]
    assert not any(pairs[i].get("solved") for i in (0, 3, 4))
    assert pairs[0]["rejected"] == f"q0 try2{EOS}"  # real pairs are those of `solved: drop`
    s = result.summary
    assert (s.pairs_out, s.solved_kept, s.already_solved, s.check_errors) == (3, 1, 1, 1)
    assert "solved kept for NLL only" in s.format()
    # the policy is part of the cache key; `drop` keeps the key stores had before the option
    assert policy.to_dict()["solved"] == "nll" and "solved" not in PairPolicy("none").to_dict()


def test_correct_sample_is_chosen_and_truncated_samples_can_be_dropped(tmp_path, tokenizer):
    policy = PairPolicy("user_checks:by_table", 3, chosen="correct_sample")
    _, _, pairs = run(tmp_path, tokenizer, policy, [], "c")
    assert (pairs[0]["chosen"], pairs[0]["chosen_source"]) == (f"q0 try0{EOS}", "sample")
    assert (pairs[3]["chosen"], pairs[3]["rejected"]) == (f"q3 try0{EOS}", f"q3 try1{EOS}")
    assert (pairs[4]["chosen"], pairs[4]["chosen_source"]) == (f"gold 4{EOS}", "gold")
    assert pairs[4]["samples"] == 3  # no right sample: sampled k times looking for one

    exs = examples(long=(4,))
    keep = run(tmp_path, tokenizer, PairPolicy("none"), [], "keep", exs)[2]
    drop = run(tmp_path, tokenizer, PairPolicy("none", truncated="drop"), [], "drop", exs)
    assert keep[4]["rejected"] == f"q4 try0{EOS}" and keep[4]["finish_reason"] == "length"
    assert 4 not in drop[2] and drop[1].summary.truncated_dropped == 1
    drop3 = run(tmp_path, tokenizer, PairPolicy("none", 2, truncated="drop"), [], "d3", exs)[2]
    assert drop3[4]["rejected"] == f"q4 try1{EOS}" and drop3[4]["rejected_sample"] == 1


def test_k_samples_are_identical_on_one_and_two_ranks(tmp_path, tiny_model_dir, tokenizer):
    from axolotl_ipo.pairs.sampler import load_generator

    policy = PairPolicy("user_checks:coin", num_samples=3)
    settings = SamplingSettings(max_new_tokens=6, temperature=1.0, batch_size=2, seed=3)
    exs = examples(7)

    def make():
        return load_generator("transformers", tiny_model_dir)

    def go(store, **kw):
        return build_pairs(exs, tokenizer, make, settings, store, progress=False, policy=policy,
                           **kw)

    single = go(PairStore.open(tmp_path / "one", {"t": 1}))
    two = PairStore.open(tmp_path / "two", {"t": 1})
    for rank in (1, 0):
        go(two, rank=rank, world_size=2, barrier=lambda: None)
    assert two.pairs_path.read_bytes() == single.path.read_bytes()
    rows = two.read_pairs()
    assert single.summary.samples_judged > 7 and any(r["rejected_sample"] > 0 for r in rows)


def test_no_pairs_message_names_the_check_and_the_counts():
    summary = PairsSummary(
        rows_in=9, invalid={"missing_field": 1}, dropped={"already_solved": 7, "check_error": 1},
        samples_judged=8, samples_right=7, answer_check="contains",
    )
    message = summary.no_pairs_message()
    assert "\n" not in message
    assert "rejection_sampling.answer_check 'contains' judged 7 of 8 samples right" in message
    assert "7 prompts already solved, 1 check errors" in message

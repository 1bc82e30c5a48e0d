import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from axolotl_ipo.pairs import store as store_mod
from axolotl_ipo.pairs.build import build_pairs, plan_batches, render_prompts
from axolotl_ipo.pairs.sampler import Completion, SamplingSettings
from axolotl_ipo.pairs.store import PairStore
from axolotl_ipo.sft_rows import InvalidRow, extract_examples

REPO = Path(__file__).resolve().parents[1]
EOS = "<|im_end|>"


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    return tiny_model_dir


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


class FakeGenerator:
    """Deterministic in (prompt, seed); answers 'EMPTY'/'ECHO' prompts specially."""

    name = "fake:v1"

    def __init__(self, log):
        self.log = log

    def generate(self, prompts, settings, seed):
        self.log.append((len(prompts), seed))
        out = []
        for p in prompts:
            if "EMPTY" in p:
                out.append(Completion(f"  {EOS}\n", 1, "stop"))
            elif "ECHO" in p:
                out.append(Completion("the   gold\nanswer ", 3, "stop"))
            else:
                h = hashlib.sha256(f"{p}|{seed}".encode()).hexdigest()[:8]
                out.append(Completion(f"sampled {h}", 4, "length"))
        return out

    def close(self):
        self.log.append("closed")


def factory(calls, log=None):
    log = [] if log is None else log

    def make():
        calls.append(1)
        return FakeGenerator(log)

    return make


def alpaca_rows(n, special=None):
    special = special or {}
    return [
        {
            "instruction": special.get(i, f"question number {i} " + "word " * (i % 5)),
            "output": "the gold answer" if special.get(i) == "ECHO" else f"gold {i}",
        }
        for i in range(n)
    ]


def examples_for(rows, source="data.jsonl"):
    examples, invalid = extract_examples(rows, "alpaca", source)
    return examples, invalid


def read_bytes(result):
    return Path(result.path).read_bytes()


# -- fast tests with a fake generator --------------------------------------------------------


def test_plan_batches_sorted_longest_first_stable():
    assert plan_batches([3, 5, 3, 1, 5], 2) == [[1, 4], [0, 2], [3]]
    assert plan_batches([], 4) == []


def test_plan_batches_by_token_budget():
    """rows x (longest prompt in the batch + new tokens) <= budget; longest first."""
    lengths = [3, 5, 3, 1, 5, 2]
    # greedily: (5+3) x 2 = 16 fits 20, x 3 = 24 does not; (3+3) x 3 = 18 fits; then [3]:
    # 3 batches, so the 6 rows are spread 2 per batch
    assert plan_batches(lengths, None, 20, 3) == [[1, 4], [0, 2], [5, 3]]
    assert plan_batches([10, 1, 1, 1], None, 12) == [[0], [1, 2, 3]]  # cannot be evened
    assert plan_batches(lengths, 1, 100, 3) == [[1], [4], [0], [2], [5], [3]]  # both caps
    assert plan_batches([50, 1], None, 20, 3) == [[0], [1]]  # over the budget: alone
    assert plan_batches([1] * 10, None, 1000, 0) == [list(range(10))]
    assert [len(b) for b in plan_batches([40] * 128, None, 8192, 32)] == [64, 64]  # not 113+15
    assert [len(b) for b in plan_batches([40] * 100, 30, None)] == [30, 30, 30, 10]  # rows fixed
    with pytest.raises(ValueError, match="needs batch_size or batch_tokens"):
        plan_batches(lengths, None, None)


def test_batch_size_alone_turns_the_token_budget_off():
    from axolotl_ipo.args import DEFAULT_BATCH_TOKENS, VLLM_BATCH_SIZE, RejectionSamplingArgs

    assert RejectionSamplingArgs().batch_tokens == DEFAULT_BATCH_TOKENS
    assert RejectionSamplingArgs().batch_size is None
    assert RejectionSamplingArgs(batch_size=16).batch_tokens is None
    both = RejectionSamplingArgs(batch_size=16, batch_tokens=4096)
    assert (both.batch_size, both.batch_tokens) == (16, 4096)
    # a dumped and re-read config keeps its meaning
    again = RejectionSamplingArgs(**RejectionSamplingArgs(batch_size=16).model_dump())
    assert (again.batch_size, again.batch_tokens) == (16, None)
    vllm = RejectionSamplingArgs(backend="vllm")
    assert (vllm.batch_size, vllm.batch_tokens) == (VLLM_BATCH_SIZE, None)
    assert RejectionSamplingArgs(backend="vllm", batch_tokens=4096).batch_size is None
    with pytest.raises(ValueError, match="batch_tokens: null needs rejection_sampling.batch_size"):
        RejectionSamplingArgs(batch_tokens=None)


def test_render_prompts_and_too_long(tokenizer):
    examples, _ = examples_for(
        [{"instruction": "hi", "output": "o"}, {"instruction": "x " * 200, "output": "o"}]
    )
    rendered, invalid = render_prompts(examples, tokenizer, sequence_len=64)
    assert [r.index for r in rendered] == [0]
    assert rendered[0].text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert rendered[0].n_tokens == len(
        tokenizer(rendered[0].text, add_special_tokens=False)["input_ids"]
    )
    (bad,) = invalid
    assert (bad.source, bad.row, bad.field, bad.kind) == (
        "data.jsonl",
        1,
        "prompt_messages",
        "prompt_too_long",
    )
    assert "sequence_len=64" in bad.message and bad.message.startswith(
        "dataset 'data.jsonl', row 1, field 'prompt_messages': the prompt is "
    )


def test_template_errors_are_rows_and_missing_template_is_config_error(tokenizer):
    from copy import deepcopy

    tok = deepcopy(tokenizer)
    tok.chat_template = (
        "{% if messages[0]['content'] == 'boom' %}{{ raise_exception('no boom') }}{% endif %}"
        "{{ messages[0]['content'] }}"
    )
    examples, _ = examples_for(
        [{"instruction": "boom", "output": "o"}, {"instruction": "fine", "output": "o"}]
    )
    rendered, invalid = render_prompts(examples, tok)
    assert [r.text for r in rendered] == ["fine"]
    assert invalid[0].kind == "template_error" and "no boom" in invalid[0].message
    tok.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        render_prompts(examples, tok)


def test_build_pairs_rows_filters_summary(tmp_path, tokenizer):
    rows = alpaca_rows(7, {2: "EMPTY", 4: "ECHO"}) + [{"instruction": "no answer"}]
    examples, invalid = examples_for(rows)
    examples.append(examples[0].__class__([{"role": "user", "content": "y " * 300}], "g", "b", 0))
    settings = SamplingSettings(max_new_tokens=4, batch_size=3, seed=1)
    store = PairStore.open(tmp_path, {"t": 1})
    calls = []
    res = build_pairs(
        examples,
        tokenizer,
        factory(calls),
        settings,
        store,
        sequence_len=128,
        invalid_rows=invalid,
        progress=False,
    )
    assert calls == [1]
    pairs = store.read_pairs()
    assert [p["row"] for p in pairs] == [0, 1, 3, 5, 6]
    p0 = pairs[0]
    assert p0["prompt"] == tokenizer.apply_chat_template(
        examples[0].prompt_messages, add_generation_prompt=True, tokenize=False
    )
    assert p0["chosen"] == f"gold 0{EOS}" and p0["rejected"].startswith("sampled ")
    assert p0["rejected"].endswith(EOS) and p0["rejected"].count(EOS) == 1
    assert p0["sampling"] == settings.to_dict() and p0["generator"] == "fake:v1"
    assert (p0["source"], p0["index"], p0["rejected_tokens"], p0["finish_reason"]) == (
        "data.jsonl",
        0,
        4,
        "length",
    )
    s = res.summary
    assert (s.rows_in, s.pairs_out, s.cached) == (9, 5, False)
    assert s.invalid == {"missing_field": 1, "prompt_too_long": 1}
    assert s.dropped == {"empty_rejected": 1, "rejected_equals_chosen": 1}
    assert s.batches == 3 and s.batches_sampled == 3
    assert s.tokens_generated == 5 * 4 + 1 + 3 and s.truncated == 5
    table = s.format()
    assert "pairs out" in table and "dropped: empty_rejected" in table
    invalid_lines = [json.loads(x) for x in store.invalid_path.read_text().splitlines()]
    assert [(x["source"], x["row"], x["kind"]) for x in invalid_lines] == [
        ("data.jsonl", 7, "missing_field"),
        ("b", 0, "prompt_too_long"),
    ]
    assert json.loads(store.summary_path.read_text())["pairs_out"] == 5


def test_cache_hit_never_creates_generator(tmp_path, tokenizer):
    examples, _ = examples_for(alpaca_rows(5))
    settings = SamplingSettings(batch_size=2)
    calls = []
    first = build_pairs(
        examples,
        tokenizer,
        factory(calls),
        settings,
        PairStore.open(tmp_path, {"t": 2}),
        progress=False,
    )
    again = build_pairs(
        examples,
        tokenizer,
        factory(calls),
        settings,
        PairStore.open(tmp_path, {"t": 2}),
        progress=False,
    )
    assert calls == [1]
    assert again.cached and not first.cached and again.path == first.path
    assert again.summary.pairs_out == first.summary.pairs_out == 5


def test_resume_samples_only_missing_batches(tmp_path, tokenizer):
    examples, _ = examples_for(alpaca_rows(7))
    settings = SamplingSettings(batch_size=2, seed=5)
    ref = build_pairs(
        examples,
        tokenizer,
        factory([]),
        settings,
        PairStore.open(tmp_path / "ref", {"t": 3}),
        progress=False,
    )
    store = PairStore.open(tmp_path / "run", {"t": 3})
    log = []
    build_pairs(examples, tokenizer, factory([], log), settings, store, progress=False)
    for i in (1, 2):
        store.shard_path(i).unlink()
    store.complete_path.unlink()
    log.clear()
    res = build_pairs(examples, tokenizer, factory([], log), settings, store, progress=False)
    assert log == [(2, settings.batch_seed(1)), (2, settings.batch_seed(2)), "closed"]
    assert read_bytes(res) == read_bytes(ref)
    assert res.summary.batches_sampled == 2 and res.summary.pairs_out == 7


def test_crash_during_merge_then_rerun(tmp_path, tokenizer, monkeypatch):
    examples, _ = examples_for(alpaca_rows(5))
    settings = SamplingSettings(batch_size=2)
    ref = build_pairs(
        examples,
        tokenizer,
        factory([]),
        settings,
        PairStore.open(tmp_path / "ref", {"t": 4}),
        progress=False,
    )
    real = store_mod.atomic_write

    def failing(path, data):
        if Path(path).name == "summary.json":
            raise OSError("killed")
        return real(path, data)

    monkeypatch.setattr(store_mod, "atomic_write", failing)
    store = PairStore.open(tmp_path / "run", {"t": 4})
    with pytest.raises(OSError):
        build_pairs(examples, tokenizer, factory([]), settings, store, progress=False)
    assert not store.is_complete()
    monkeypatch.setattr(store_mod, "atomic_write", real)
    calls = []
    res = build_pairs(examples, tokenizer, factory(calls), settings, store, progress=False)
    assert calls == [] and read_bytes(res) == read_bytes(ref)


def test_plan_change_without_key_change_is_refused(tmp_path, tokenizer):
    settings = SamplingSettings(batch_size=2)
    store = PairStore.open(tmp_path, {"t": 5})
    examples, _ = examples_for(alpaca_rows(4))
    store.ensure_plan({"stale": True})
    with pytest.raises(RuntimeError, match="different batch plan"):
        build_pairs(examples, tokenizer, factory([]), settings, store, progress=False)


def test_no_usable_rows_and_bad_ranks(tmp_path, tokenizer):
    store = PairStore.open(tmp_path, {"t": 6})
    settings = SamplingSettings()
    bad = InvalidRow("d", 0, "output", "missing", "missing_field")
    with pytest.raises(ValueError, match=r"no usable rows .*1 invalid.*dataset 'd', row 0"):
        build_pairs([], tokenizer, factory([]), settings, store, invalid_rows=[bad])
    with pytest.raises(ValueError, match="needs a barrier"):
        build_pairs([], tokenizer, factory([]), settings, store, rank=0, world_size=2)
    with pytest.raises(ValueError, match="rank 2 is not in"):
        build_pairs(
            [], tokenizer, factory([]), settings, store, rank=2, world_size=2, barrier=lambda: None
        )


def test_every_prompt_over_sequence_len_is_a_user_error(tmp_path, tokenizer):
    """The user fixes sequence_len or the data: one line (UserError), never a traceback."""
    from axolotl_ipo.errors import UserError

    examples, _ = examples_for(alpaca_rows(3))
    store = PairStore.open(tmp_path, {"t": "long"})
    with pytest.raises(UserError) as err:
        build_pairs(examples, tokenizer, factory([]), SamplingSettings(), store,
                    sequence_len=4, progress=False)
    message = str(err.value)
    assert message.startswith("no usable rows to build pairs from (3 invalid: prompt_too_long=3)")
    assert "raise sequence_len" in message and "\n" not in message


def test_a_process_reports_what_it_sampled_not_what_another_merged(tmp_path, tokenizer):
    """Two `sample` runs on one store: the other one merges (and records its own counts) after
    this one; this one's summary still says what this one sampled."""
    examples, _ = examples_for(alpaca_rows(6))
    store = PairStore.open(tmp_path, {"t": "own"})
    waits = []

    def other_run_merges_meanwhile():
        waits.append(1)
        store.record_rank_counts(0, {"batches_sampled": 76, "tokens_this_run": 9999,
                                     "generation_seconds": 1.0})
        if store.is_complete():
            recorded = store.read_summary()
            recorded.update(batches_sampled=76, tokens_this_run=9999, generation_seconds=1.0)
            store_mod.atomic_write(store.summary_path, json.dumps(recorded))

    result = build_pairs(examples, tokenizer, factory([]), SamplingSettings(batch_size=2), store,
                         barrier=other_run_merges_meanwhile, progress=False)
    assert len(waits) == 2
    assert (result.summary.batches_sampled, result.summary.tokens_this_run) == (3, 6 * 4)


def test_turns_after_the_last_answer_are_counted_and_reported(tmp_path, tokenizer, caplog):
    rows = [{"messages": [{"role": "user", "content": f"q{i}"},
                          {"role": "assistant", "content": f"a{i}"}]
             + [{"role": "user", "content": "and then?"}] * (i % 2)} for i in range(4)]
    examples, invalid = extract_examples(rows, "chat_template", "chat.jsonl")
    assert invalid == []
    store = PairStore.open(tmp_path, {"t": "after"})
    with caplog.at_level("WARNING", logger="axolotl_ipo.pairs.build"):
        result = build_pairs(examples, tokenizer, factory([]), SamplingSettings(batch_size=2),
                             store, progress=False)
    assert result.summary.turns_after_answer == 2 and result.summary.pairs_out == 4
    assert "turns after the last answer left out  2" in result.summary.format()
    (warning,) = [r.getMessage() for r in caplog.records if "after their last" in r.getMessage()]
    assert "2 conversation(s)" in warning and "dataset 'chat.jsonl', row 1" in warning


# -- real tiny model -------------------------------------------------------------------------


def real_factory(model_dir, calls):
    from axolotl_ipo.pairs.sampler import load_generator

    def make():
        calls.append(1)
        return load_generator("transformers", model_dir)

    return make


def test_one_vs_two_ranks_identical(tmp_path, tokenizer, model_dir):
    examples, _ = examples_for(alpaca_rows(7))
    settings = SamplingSettings(max_new_tokens=6, temperature=1.0, batch_size=2, seed=3)
    parts = {"t": 7}
    single = build_pairs(
        examples,
        tokenizer,
        real_factory(model_dir, []),
        settings,
        PairStore.open(tmp_path / "one", parts),
        progress=False,
    )
    two = PairStore.open(tmp_path / "two", parts)
    calls = []
    r1 = build_pairs(
        examples,
        tokenizer,
        real_factory(model_dir, calls),
        settings,
        two,
        rank=1,
        world_size=2,
        barrier=lambda: None,
        progress=False,
    )
    assert two.done_batches() == {1, 3} and not two.is_complete()
    assert r1.summary.batches_sampled == 2
    r0 = build_pairs(
        examples,
        tokenizer,
        real_factory(model_dir, calls),
        settings,
        two,
        rank=0,
        world_size=2,
        barrier=lambda: None,
        progress=False,
    )
    assert calls == [1, 1] and two.is_complete()
    assert r0.summary.batches_sampled == 4  # the whole run's: rank 0's 2 and rank 1's 2
    assert r0.summary.tokens_this_run == r0.summary.tokens_generated
    assert read_bytes(r0) == read_bytes(single)
    assert len(two.read_pairs()) + sum(r0.summary.dropped.values()) == 7


KILL_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from transformers import AutoTokenizer
    from axolotl_ipo.pairs.build import build_pairs
    from axolotl_ipo.pairs.sampler import SamplingSettings, load_generator
    from axolotl_ipo.sft_rows import extract_examples
    from axolotl_ipo.pairs.store import PairStore

    model_dir, data, root = sys.argv[1:4]

    class Slow:
        def __init__(self, inner):
            self.inner, self.name = inner, inner.name

        def generate(self, prompts, settings, seed):
            out = self.inner.generate(prompts, settings, seed)
            time.sleep(0.1)
            return out

        def close(self):
            self.inner.close()

    rows = json.load(open(data))
    examples, _ = extract_examples(rows, "alpaca", "data.jsonl")
    settings = SamplingSettings(**json.loads(sys.argv[4]))
    build_pairs(examples, AutoTokenizer.from_pretrained(model_dir),
                lambda: Slow(load_generator("transformers", model_dir)), settings,
                PairStore.open(root, {"t": "kill"}), progress=False)
    """
)


def kill_at(script, runs, log):
    """Start one sampler per (args, store, k); SIGKILL each once its store has k batches."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    err = open(log, "ab")  # a file, not a pipe: a full pipe would block the sampler
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), *args],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        for args, _, _ in runs
    ]
    try:
        deadline = time.monotonic() + 90
        pending = set(range(len(runs)))
        while pending:
            for i in sorted(pending):
                _, store, k = runs[i]
                if len(store.done_batches()) >= k:
                    os.kill(procs[i].pid, signal.SIGKILL)
                    pending.discard(i)
                elif procs[i].poll() is not None:
                    raise AssertionError(f"sampler exited early: {Path(log).read_text()}")
            assert time.monotonic() < deadline, "sampler too slow"
            time.sleep(0.005)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        err.close()
    assert [p.returncode for p in procs] == [-signal.SIGKILL] * len(procs)


def test_resume_after_sigkill_is_byte_identical(tmp_path, tokenizer, model_dir):
    rows = alpaca_rows(20)
    examples, _ = examples_for(rows)
    knobs = {"max_new_tokens": 8, "temperature": 1.0, "batch_size": 2, "seed": 9}
    settings = SamplingSettings(**knobs)
    ref = build_pairs(
        examples,
        tokenizer,
        real_factory(model_dir, []),
        settings,
        PairStore.open(tmp_path / "ref", {"t": "kill"}),
        progress=False,
    )
    assert ref.summary.batches == 10

    script = tmp_path / "sampler.py"
    script.write_text(KILL_SCRIPT)
    data = tmp_path / "rows.json"
    data.write_text(json.dumps(rows))
    store = PairStore.open(tmp_path / "run", {"t": "kill"})
    args = [str(model_dir), str(data), str(tmp_path / "run"), json.dumps(knobs)]
    seen = []
    for k in (1, 3, 5):  # kill the same store three times, each time further on
        kill_at(script, [(args, store, k)], tmp_path / "sampler.log")
        done = store.done_batches()
        assert k <= len(done) < 10 and not store.is_complete()
        seen.append(len(done))
    assert seen == sorted(seen)
    calls = []
    res = build_pairs(
        examples, tokenizer, real_factory(model_dir, calls), settings, store, progress=False
    )
    assert calls == [1] and res.summary.batches_sampled == 10 - seen[-1]
    assert read_bytes(res) == read_bytes(ref)
    assert res.summary.tokens_generated == ref.summary.tokens_generated


def test_inspect_counts_solved_rows_apart_from_identical_pairs(tmp_path):
    from axolotl_ipo.pairs.report import report

    rows = [{"prompt": "p0", "chosen": "a", "rejected": "b"},
            {"prompt": "p1", "chosen": "c", "rejected": "c"},  # a real pair gone identical
            {"prompt": "p2", "chosen": "d", "rejected": "d", "solved": True}]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    text = report(path)
    assert "2 pairs (+ 1 solved prompts kept for the NLL term)" in text
    assert "identical chosen/rejected: 1 (50.0%)" in text


def test_real_pairs_leave_out_solved_rows_kept_for_the_nll_term():
    from axolotl_ipo.pairs.build import real_pairs

    rows = [{"chosen": "a", "rejected": "b"}, {"chosen": "c", "rejected": "c", "solved": True}]
    assert real_pairs(rows) == rows[:1]

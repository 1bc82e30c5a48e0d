import importlib
import importlib.util
import os
import sys
import types

import pytest
import torch

from axolotl_ipo.pairs.sampler import (
    Completion,
    Generator,
    SamplingSettings,
    derive_seed,
    load_generator,
)
from axolotl_ipo.pairs.sampler.transformers_backend import TransformersGenerator


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    return tiny_model_dir


@pytest.fixture(scope="module")
def gen(model_dir):
    return load_generator("transformers", model_dir)


def prompts(gen, n=3):
    tok = gen.tokenizer
    texts = ["hello", "Write a haiku about rain and leaves please", "two plus two?"][:n]
    return [
        tok.apply_chat_template(
            [{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False
        )
        for t in texts
    ]


def test_settings_validation_and_dict():
    s = SamplingSettings(stop_tokens=["<|im_end|>"])
    assert s.stop_tokens == ("<|im_end|>",)
    assert s.to_dict() == {
        "max_new_tokens": 256,
        "temperature": 0.7,
        "top_p": 1.0,
        "seed": 42,
        "batch_size": None,
        "batch_tokens": 8192,
        "stop_tokens": ["<|im_end|>"],
    }
    assert SamplingSettings(temperature=0).greedy
    bad_settings = (
        {"temperature": -1}, {"top_p": 0}, {"batch_size": 0}, {"batch_tokens": 0},
        {"max_new_tokens": 0}, {"batch_tokens": None},
    )
    for bad in bad_settings:
        with pytest.raises(ValueError):
            SamplingSettings(**bad)
    assert s.batch_seed(3) == derive_seed(42, 3) != derive_seed(42, 4)
    assert 0 <= derive_seed(2**70, -5) < 2**63


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown sampler backend 'foo'"):
        load_generator("foo", "x")
    with pytest.raises(ValueError, match="unknown sampler backend 'hf'"):
        load_generator("hf", "x")  # the config's Literal never allowed it


def test_transformers_generate_shapes_and_determinism(gen):
    assert isinstance(gen, Generator) and isinstance(gen, TransformersGenerator)
    assert gen.name.startswith("transformers:")
    settings = SamplingSettings(max_new_tokens=6, temperature=1.0)
    ps = prompts(gen)
    state = torch.random.get_rng_state()
    a = gen.generate(ps, settings, seed=7)
    assert torch.equal(state, torch.random.get_rng_state()), "global RNG must be untouched"
    b = gen.generate(ps, settings, seed=7)
    c = gen.generate(ps, settings, seed=8)
    assert a == b and a != c
    assert len(a) == 3 and all(isinstance(x, Completion) for x in a)
    for comp in a:
        assert comp.n_tokens <= 6 and comp.finish_reason in ("stop", "length")
        assert "<|im_start|>" not in comp.text and "assistant" not in comp.text[:9]
    assert gen.generate([], settings, seed=1) == []


def test_left_padding_matches_single_prompt_greedy(gen):
    settings = SamplingSettings(max_new_tokens=5, temperature=0)
    ps = prompts(gen)
    batch = gen.generate(ps, settings, seed=0)
    alone = [gen.generate([p], settings, seed=123)[0] for p in ps]
    assert [c.text for c in batch] == [c.text for c in alone]
    assert all(c.finish_reason == "length" and c.n_tokens == 5 for c in batch)


def test_shared_prefix_runs_once_and_changes_nothing(model_dir, gen):
    """Prompts sharing a system prompt run it once (its cache is kept) and give the
    completions they give without sharing, greedy and sampled, for any batch mix."""
    tok = gen.tokenizer
    system = {"role": "system", "content": "You are a careful assistant who answers briefly."}
    texts = ["hi", "Name three rivers in Europe, please", "two plus two?", "why?"]
    ps = [
        tok.apply_chat_template([system, {"role": "user", "content": t}],
                                add_generation_prompt=True, tokenize=False)
        for t in texts
    ]
    plain = TransformersGenerator(model_dir, share_prefix=False)
    shared = TransformersGenerator(model_dir)
    for settings in (SamplingSettings(max_new_tokens=6, temperature=0),
                     SamplingSettings(max_new_tokens=6, temperature=1.0)):
        want = plain.generate(ps, settings, seed=3)
        assert shared.generate(ps, settings, seed=3) == want
        assert plain._prefix is None and len(shared._prefix[0]) >= 8
    # a prompt that is the others' whole prefix keeps its last token to run
    ids = tok(ps[0], add_special_tokens=False)["input_ids"]
    head = tok.decode(ids[:-1])
    greedy = SamplingSettings(max_new_tokens=4, temperature=0)
    assert shared.generate([head, ps[0]], greedy, 0) == plain.generate([head, ps[0]], greedy, 0)


def test_stop_token_cuts_completion(gen):
    ps = prompts(gen, 1)
    settings = SamplingSettings(max_new_tokens=6, temperature=0)
    enc = gen.tokenizer(ps, add_special_tokens=False, return_tensors="pt")
    config = gen._generation_config(settings, gen.stop_ids(settings), settings.max_new_tokens)
    with torch.inference_mode():
        out = gen.model.generate(**enc, generation_config=config).sequences
    new = out[0, enc["input_ids"].shape[1] :].tolist()
    stop_tok = gen.tokenizer.convert_ids_to_tokens(new[2])
    first = new.index(new[2])
    comp = gen.generate(ps, SamplingSettings(6, 0, stop_tokens=(stop_tok,)), seed=0)[0]
    assert comp.finish_reason == "stop" and comp.n_tokens == first + 1
    assert comp.text == gen.tokenizer.decode(new[:first], skip_special_tokens=True)
    with pytest.raises(ValueError, match="not a single token"):
        gen.stop_ids(SamplingSettings(stop_tokens=("no such token",)))


def test_finished_rows_leave_the_batch_and_nothing_else_changes(model_dir, monkeypatch):
    """Rows that hit a stop token are dropped between generate() segments: greedy answers are
    those of one uninterrupted generate() call, and the later segments run fewer rows."""
    from axolotl_ipo.pairs.sampler import transformers_backend

    monkeypatch.setattr(transformers_backend, "DROP_FINISHED_EVERY", 3)
    whole = TransformersGenerator(model_dir, drop_finished=False)
    ps = prompts(whole, 3)
    free = SamplingSettings(max_new_tokens=12, temperature=0)
    with torch.inference_mode():
        ids = whole._decode(*whole._encode(ps), free, whole.stop_ids(free))
    # a stop token that ends one row within the first segment and another row after it
    stop = next(t for row in ids for t in row[:3] if any(t not in other[:4] for other in ids))
    stop = whole.tokenizer.convert_ids_to_tokens(stop)
    settings = SamplingSettings(max_new_tokens=12, temperature=0, stop_tokens=(stop,))
    want = whole.generate(ps, settings, seed=0)
    assert min(c.n_tokens for c in want) <= 3 < max(c.n_tokens for c in want)
    dropping = TransformersGenerator(model_dir)
    rows = []
    real = dropping.model.generate
    monkeypatch.setattr(dropping.model, "generate",
                        lambda **kw: rows.append(kw["input_ids"].shape[0]) or real(**kw))
    assert dropping.generate(ps, settings, seed=0) == want
    assert rows[0] == 3 and rows[1] < 3 and len(rows) > 1
    # sampled answers too: each row draws from the random stream it had in the full batch
    sampled = SamplingSettings(max_new_tokens=12, temperature=1.0, stop_tokens=(stop,))
    rows.clear()
    assert dropping.generate(ps, sampled, seed=5) == whole.generate(ps, sampled, seed=5)
    assert len(rows) > 1 and min(rows) < 3


def test_checkpoint_generation_defaults_ignored(model_dir, tmp_path):
    import json
    import shutil

    other = tmp_path / "m"
    shutil.copytree(model_dir, other)
    cfg = json.loads((other / "generation_config.json").read_text())
    cfg.update({"repetition_penalty": 5.0, "top_k": 1, "do_sample": True, "temperature": 0.01})
    (other / "generation_config.json").write_text(json.dumps(cfg))
    g2 = TransformersGenerator(other)
    gen = TransformersGenerator(model_dir)
    settings = SamplingSettings(max_new_tokens=6, temperature=1.0)
    ps = prompts(gen)
    assert g2.generate(ps, settings, 3) == gen.generate(ps, settings, 3)
    g2.close()


def test_vllm_import_never_fails_and_errors_clearly(monkeypatch):
    mod = importlib.import_module("axolotl_ipo.pairs.sampler.vllm_backend")
    monkeypatch.setattr(mod, "vllm_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"install 'axolotl-ipo\[vllm\]' with your torch") as err:
        load_generator("vllm", "some/model")
    assert "rejection_sampling.backend: transformers" in str(err.value)
    monkeypatch.setattr(mod, "vllm_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    package = types.ModuleType("vllm")
    package.__path__ = []
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = types.SimpleNamespace(device_type="")  # no CUDA, no CPU build
    monkeypatch.setitem(sys.modules, "vllm", package)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    with pytest.raises(RuntimeError, match="finds no device to run on") as err:
        load_generator("vllm", "some/model")
    assert "rejection_sampling.backend: transformers" in str(err.value)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_on_this_machine_says_which_key_to_change():
    with pytest.raises(RuntimeError, match=r"rejection_sampling\.backend: vllm needs vLLM"):
        load_generator("vllm", "some/model")


class _MistralLikeTokenizer:
    """What vLLM's default tokenizer mode returns for a repo in Mistral's own format
    (mistral-common): no `unk_token_id`, and it does not read `[INST]` in text as a token."""

    eos_token_id = 2

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}  # a different encoding than the HF one

    def convert_tokens_to_ids(self, token):
        return 0


def test_vllm_backend_plumbing_with_fake_vllm(monkeypatch, gen, model_dir):
    calls = {}

    class FakeParams:
        def __init__(self, **kw):
            self.kw = kw

    class FakeLLM:
        def __init__(self, **kw):
            calls["llm"] = kw

        def get_tokenizer(self):
            return _MistralLikeTokenizer()

        def generate(self, inputs, params, use_tqdm):
            calls["inputs"], calls["params"] = inputs, params
            out = types.SimpleNamespace(text="hi", token_ids=[5, 6, 1], finish_reason="stop")
            return [types.SimpleNamespace(outputs=[out]) for _ in inputs]

    fake = types.SimpleNamespace(LLM=FakeLLM, SamplingParams=FakeParams)
    mod = importlib.import_module("axolotl_ipo.pairs.sampler.vllm_backend")
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setattr(mod, "vllm_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    g = load_generator(
        "vllm", model_dir, max_model_len=128, gpu_memory_utilization=0.5, tensor_parallel_size=2
    )
    assert g.name == f"vllm:{model_dir}" and calls["llm"]["max_model_len"] == 128
    assert calls["llm"]["gpu_memory_utilization"] == 0.5
    assert calls["llm"]["tensor_parallel_size"] == 2
    assert calls["llm"]["tokenizer_mode"] == "hf", "never mistral-common's tokenizer"
    ps = prompts(gen, 2)
    settings = SamplingSettings(max_new_tokens=9, temperature=0.5, top_p=0.9,
                                stop_tokens=("<|im_start|>",))
    res = g.generate(ps, settings, seed=11)
    assert res == [Completion("hi", 3, "stop")] * 2
    assert (
        calls["inputs"][0]["prompt_token_ids"]
        == gen.tokenizer(ps[0], add_special_tokens=False)["input_ids"]
    ), "prompts encoded by the checkpoint's HF tokenizer, as the chat template rendered them"
    kw = [p.kw for p in calls["params"]]
    assert kw[0]["seed"] == derive_seed(11, 0) and kw[1]["seed"] == derive_seed(11, 1)
    assert kw[0]["max_tokens"] == 9 and kw[0]["top_p"] == 0.9 and kw[0]["temperature"] == 0.5
    im_start = gen.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert kw[0]["stop_token_ids"] == [gen.tokenizer.eos_token_id, im_start]


def test_stop_tokens_with_a_tokenizer_without_unk_token_id():
    from axolotl_ipo.pairs.sampler.base import stop_token_ids

    tokenizer = types.SimpleNamespace(convert_tokens_to_ids={"<end>": 7}.get)
    assert stop_token_ids(tokenizer, [2], ("<end>",), "/m") == [2, 7]
    with pytest.raises(ValueError, match="'<nope>' is not a single token"):
        stop_token_ids(tokenizer, [2], ("<nope>",), "/m")


def test_model_fingerprint(model_dir, tmp_path):
    import shutil

    from axolotl_ipo.pairs.sampler import model_fingerprint

    fp = model_fingerprint(model_dir)
    assert set(fp["files"]) >= {"config.json", "model.safetensors"}
    other = tmp_path / "copy"
    shutil.copytree(model_dir, other)
    assert model_fingerprint(other)["files"] == fp["files"]
    weights = other / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert model_fingerprint(other)["files"] != fp["files"]
    assert model_fingerprint("org/model", "abc") == {"id": "org/model", "revision": "abc"}
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no weight files"):
        model_fingerprint(tmp_path / "empty")


def test_a_hub_model_is_keyed_by_the_commit_the_local_cache_holds(tmp_path, monkeypatch):
    """A model re-pushed under the same id is a new commit in the HF cache: a new key."""
    import huggingface_hub.constants

    from axolotl_ipo.pairs.sampler import model_fingerprint

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert model_fingerprint("org/model") == {"id": "org/model", "revision": None}  # not cached
    repo = tmp_path / "models--org--model"
    for commit in ("a" * 40, "b" * 40):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        assert model_fingerprint("org/model") == {"id": "org/model", "revision": "main",
                                                  "commit": commit}
    (repo / "refs" / "v1").write_text("a" * 40)
    assert model_fingerprint("org/model", "v1")["commit"] == "a" * 40


class _FakeEngine:
    """Stands in for `vllm`: records the environment its engine process would start with."""

    def __init__(self, tokenizer):
        self.seen_env: dict = {}
        self.shutdowns = 0
        engine = self

        class LLM:
            def __init__(self, **kw):
                engine.seen_env = {
                    key: os.environ.get(key)
                    for key in ("CUDA_VISIBLE_DEVICES", "VLLM_ENABLE_V1_MULTIPROCESSING")
                }
                core = types.SimpleNamespace(shutdown=engine.shutdown)
                self.llm_engine = types.SimpleNamespace(engine_core=core)

            def get_tokenizer(self):
                return tokenizer

        self.LLM = LLM

    def shutdown(self):
        self.shutdowns += 1


@pytest.fixture
def fake_vllm(monkeypatch, gen):
    engine = _FakeEngine(gen.tokenizer)
    mod = importlib.import_module("axolotl_ipo.pairs.sampler.vllm_backend")
    monkeypatch.setitem(sys.modules, "vllm", engine)
    monkeypatch.setattr(mod, "vllm_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "init", lambda: None)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    return engine


def test_vllm_engine_runs_on_this_ranks_gpu_and_shuts_down(monkeypatch, fake_vllm, model_dir):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    g = load_generator("vllm", model_dir)
    assert fake_vllm.seen_env == {
        "CUDA_VISIBLE_DEVICES": "6", "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4,6", "the rank's own view is restored"
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ
    g.close()
    assert fake_vllm.shutdowns == 1 and g.llm is None

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    load_generator("vllm", model_dir)
    assert fake_vllm.seen_env["CUDA_VISIBLE_DEVICES"] == "1"
    monkeypatch.setenv("WORLD_SIZE", "1")
    load_generator("vllm", model_dir)
    assert fake_vllm.seen_env["CUDA_VISIBLE_DEVICES"] is None, "one process: vLLM's own choice"


def test_vllm_tensor_parallel_needs_a_single_process(monkeypatch, fake_vllm, model_dir):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match=r"rejection_sampling\.tensor_parallel_size: 2 needs"):
        load_generator("vllm", model_dir, tensor_parallel_size=2)
    monkeypatch.setenv("WORLD_SIZE", "1")
    load_generator("vllm", model_dir, tensor_parallel_size=2)


def test_transformers_sampler_loads_a_whole_copy_under_zero3(model_dir, gen):
    """Axolotl registers its DeepSpeed config with transformers before load_datasets; under
    ZeRO-3 from_pretrained would partition the sampler's copy (and here fail on the missing
    deepspeed package). The registration must survive for the training model."""
    from transformers.integrations import deepspeed as hf_deepspeed

    class Zero3Config:  # what Axolotl's HfTrainerDeepSpeedConfig answers
        config = {"zero_optimization": {"stage": 3}}

        def is_zero3(self):
            return True

    registered = Zero3Config()
    hf_deepspeed.set_hf_deepspeed_config(registered)
    try:
        assert hf_deepspeed.is_deepspeed_zero3_enabled()
        copy = TransformersGenerator(model_dir)
        assert hf_deepspeed.is_deepspeed_zero3_enabled(), "registration restored"
        assert hf_deepspeed._hf_deepspeed_config_weak_ref() is registered
    finally:
        hf_deepspeed.unset_hf_deepspeed_config()
    settings = SamplingSettings(max_new_tokens=4, temperature=0)
    assert copy.generate(prompts(gen), settings, 0) == gen.generate(prompts(gen), settings, 0)
    copy.close()


def test_sampling_defaults_come_from_the_config_keys():
    """One source for every default: SamplingSettings() is `rejection_sampling: {}`."""
    from axolotl_ipo.args import RejectionSamplingArgs

    declared = RejectionSamplingArgs()
    settings = SamplingSettings()
    for key in ("max_new_tokens", "temperature", "top_p", "seed", "batch_size", "batch_tokens"):
        assert getattr(settings, key) == getattr(declared, key), key


def test_inverse_cdf_draws_follow_the_distribution():
    """The draw replacing torch.multinomial: frequencies match softmax(scores / T) after top-p,
    zero-probability tokens are never drawn, exactly one token per row stays finite."""
    from axolotl_ipo.pairs.sampler.inverse_cdf import InverseCdfSampler, sampling_processors

    probs = torch.tensor([0.0, 0.5, 0.0, 0.3, 0.2, 0.0])
    scores = probs.log().expand(40000, -1).clone()  # -inf where the probability is 0
    torch.manual_seed(0)
    out = InverseCdfSampler()(None, scores)
    assert torch.isfinite(out).sum(-1).eq(1).all()
    freq = torch.bincount(out.argmax(-1), minlength=6).float() / len(out)
    assert torch.allclose(freq, probs, atol=0.01) and freq[[0, 2, 5]].sum() == 0
    # temperature 0.5 squares and renormalises; top-p 0.7 keeps the two most likely
    torch.manual_seed(1)
    drawn = sampling_processors(0.5, 0.7)(None, scores.clone()).argmax(-1)
    freq = torch.bincount(drawn, minlength=6).float() / len(drawn)
    want = torch.tensor([0.0, 0.25, 0.0, 0.09, 0.0, 0.0]) / 0.34
    assert torch.allclose(freq, want, atol=0.01)


def test_sampling_uses_the_inverse_cdf_draw_not_multinomial(gen, monkeypatch):
    """generate() samples through the draw (torch.multinomial is never called) and stays
    seeded: same seed, same completions."""
    def refuse(*args, **kwargs):
        raise AssertionError("torch.multinomial called")

    monkeypatch.setattr(torch, "multinomial", refuse)
    settings = SamplingSettings(max_new_tokens=5, temperature=1.0, top_p=0.9)
    ps = prompts(gen)
    assert gen.generate(ps, settings, seed=4) == gen.generate(ps, settings, seed=4)


def test_wrapping_a_loaded_model_leaves_its_tokenizer_and_generation_config_alone(model_dir):
    """`from_model` wraps the caller's objects: sampling with it changes neither."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from axolotl_ipo.pairs.sampler import SamplingSettings
    from axolotl_ipo.pairs.sampler.transformers_backend import TransformersGenerator

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "right"
    tokenizer.pad_token = None
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = GenerationConfig(top_k=7, eos_token_id=tokenizer.eos_token_id)
    model.generation_config = config
    generator = TransformersGenerator.from_model(model, tokenizer, "eval")
    out = generator.generate(["Add 2 and 3.", "Who wrote Hamlet?"],
                             SamplingSettings(max_new_tokens=4, temperature=1.0), seed=1)
    assert len(out) == 2
    assert tokenizer.padding_side == "right" and tokenizer.pad_token is None
    assert model.generation_config is config and config.top_k == 7

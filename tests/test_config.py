"""`rl: ipo` normalisation and every config error, with the message a user sees."""

import pytest

from axolotl_ipo.config import IPOConfigError, is_active, normalise, trainer_loss_args
from axolotl_ipo.upstream import axolotl as upstream_axolotl


def ipo_cfg(**keys) -> dict:
    return {"base_model": "m", "rl": "ipo", "datasets": [{"path": "d.jsonl", "type": "alpaca"}],
            **keys}


def test_rl_ipo_becomes_native_dpo_with_ipo_loss():
    cfg = normalise(ipo_cfg(ipo_tau=0.3, ipo_sft_weight=0))
    assert cfg["rl"] == "dpo" and cfg["dpo_loss_type"] == ["ipo"]
    assert cfg["rl_beta"] == 0.3 and cfg["ipo_tau"] == 0.3


@pytest.mark.parametrize(("keys", "tau", "weight"), [
    ({"ipo_tau": 0.1}, 0.1, 20.0), ({"ipo_tau": 0.5}, 0.5, 4.0), ({"rl_beta": 1.0}, 1.0, 2.0),
    ({"ipo_tau": 0.1, "ipo_sft_weight": 3.0}, 0.1, 3.0),
])
def test_the_default_adds_the_nll_term_at_2_over_tau(keys, tau, weight):
    """With no `ipo_sft_weight` the NLL term pulls the gold answers up twice as hard as IPO at
    step 0 (weight 2/tau); an explicit tau keeps its meaning, an explicit weight wins."""
    cfg = normalise(ipo_cfg(**keys))
    assert cfg["ipo_tau"] == tau and cfg["ipo_sft_weight"] == weight
    assert trainer_loss_args(cfg) == {"loss_type": ["ipo", "sft"], "loss_weights": [1.0, weight],
                                      "beta": tau}
    snapshot = dict(cfg)
    assert normalise(cfg) == snapshot  # idempotent: the resolved weight is written


@pytest.mark.parametrize(("keys", "weight"), [({}, None), ({"ipo_sft_weight": 3.0}, 3.0),
                                               ({"ipo_tau": "auto"}, None)])
def test_no_tau_means_auto_measured_at_step_0(keys, weight):
    """No tau key: `ipo_tau: auto` (set at step 0 from the held-out rows); the trainer is built
    with tau 0.1 and its default weight until then, and an explicit weight is kept as written.
    Axolotl gets no `rl_beta` to hold on to."""
    cfg = normalise(ipo_cfg(**keys))
    assert cfg["ipo_tau"] == "auto" and cfg["ipo_sft_weight"] == weight
    assert cfg.get("rl_beta") is None
    start_weight = 20.0 if weight is None else weight
    assert trainer_loss_args(cfg) == {"loss_type": ["ipo", "sft"],
                                      "loss_weights": [1.0, start_weight], "beta": 0.1}
    snapshot = dict(cfg)
    assert normalise(cfg) == snapshot


def test_auto_tau_is_the_start_nll_plus_one_nat():
    from axolotl_ipo.args import auto_tau

    assert auto_tau(4.0) == pytest.approx(0.1)  # target margin 5 nats per token
    assert auto_tau(7.3) == pytest.approx(1 / 16.6)
    assert auto_tau(0.0) == pytest.approx(0.5)


def test_normalising_twice_changes_nothing():
    once = normalise(ipo_cfg(ipo_tau=0.3))
    snapshot = {key: value for key, value in once.items()}
    assert normalise(once) == snapshot


def test_sft_weight_adds_trls_sft_loss_on_the_chosen_answer():
    cfg = normalise(ipo_cfg(ipo_sft_weight=0.5))
    assert cfg["dpo_loss_type"] == ["ipo", "sft"] and cfg["dpo_loss_weights"] == [1.0, 0.5]
    snapshot = dict(cfg)
    assert normalise(cfg) == snapshot  # idempotent with the SFT term too
    assert trainer_loss_args(cfg) == {"loss_type": ["ipo", "sft"], "loss_weights": [1.0, 0.5],
                                      "beta": 0.1}


@pytest.mark.parametrize("weight", [0, 0.0])
def test_a_zero_sft_weight_is_pure_ipo(weight):
    cfg = normalise(ipo_cfg(ipo_sft_weight=weight))
    assert cfg["dpo_loss_type"] == ["ipo"] and "dpo_loss_weights" not in cfg
    assert trainer_loss_args(cfg) == {"loss_type": ["ipo"], "beta": 0.1}


def test_user_sft_datasets_are_kept_verbatim_before_axolotl_coerces_them():
    datasets = [{"path": "c.jsonl", "type": "chat_template", "field_messages": "conversations",
                 "message_property_mappings": {"role": "from", "content": "value"}}]
    cfg = normalise(ipo_cfg(datasets=datasets))
    assert cfg["ipo_sft_datasets"] == datasets


@pytest.mark.parametrize(
    ("keys", "tau"),
    [({"rl_beta": 0.2}, 0.2), ({"dpo_beta": 0.3}, 0.3), ({"trl": {"beta": 0.4}}, 0.4),
     ({"ipo_tau": 0.5, "rl_beta": 0.5}, 0.5)],
)
def test_tau_comes_from_ipo_tau_or_beta_keys(keys, tau):
    cfg = normalise(ipo_cfg(**keys))
    assert cfg["rl_beta"] == tau and cfg["ipo_tau"] == tau
    assert "dpo_beta" not in cfg


def test_inactive_config_is_untouched():
    cfg = {"base_model": "m", "rl": "dpo", "datasets": [{"path": "p", "type": "chatml.intel"}]}
    before = dict(cfg)
    assert not is_active(cfg)
    assert normalise(cfg) == before


def test_native_keys_follow_the_installed_axolotl():
    assert upstream_axolotl.supports_dpo_loss_type()
    assert upstream_axolotl.native_ipo_keys() == {"rl": "dpo", "dpo_loss_type": ["ipo"]}


@pytest.mark.parametrize(
    ("keys", "fragments"),
    [
        ({"ipo_tau": 0}, ["ipo_tau must be > 0, got 0", "ipo_tau: 0.1"]),
        ({"ipo_tau": -0.5}, ["ipo_tau must be > 0, got -0.5"]),
        ({"ipo_tau": "small"},
         ["ipo_tau must be a number or `auto`, got 'small'", "ipo_tau: 0.1"]),
        ({"ipo_tau": True}, ["ipo_tau must be a number or `auto`, got True"]),
        ({"ipo_tau": "auto", "rl_beta": 0.2},
         ["ipo_tau: auto and rl_beta: 0.2 disagree", "remove `rl_beta`"]),
        ({"ipo_tau": 0.1, "rl_beta": 0.2},
         ["ipo_tau: 0.1 and rl_beta: 0.2 disagree", "remove `rl_beta`"]),
        ({"ipo_tau": 0.1, "dpo_beta": 0.2}, ["ipo_tau: 0.1 and dpo_beta: 0.2 disagree"]),
        ({"ipo_tau": 0.1, "trl": {"beta": 0.3}}, ["ipo_tau: 0.1 and trl.beta: 0.3 disagree"]),
        ({"rl_beta": 0.1, "dpo_beta": 0.2}, ["disagree", "ipo_tau"]),
        ({"rl_beta": -1.0}, ["rl_beta must be > 0 for IPO, got -1.0"]),
        ({"dpo_label_smoothing": 0.1},
         ["dpo_label_smoothing: 0.1 cannot be used with IPO", "Remove `dpo_label_smoothing`"]),
        ({"dpo_loss_type": ["ipo", "sigmoid"]},
         ["dpo_loss_type: ['ipo', 'sigmoid'] mixes other losses", "Remove `dpo_loss_type`"]),
        ({"dpo_loss_type": ["sft"]}, ["dpo_loss_type: ['sft'] differs", "ipo_sft_weight"]),
        ({"ipo_sft_weight": 1.0, "dpo_loss_type": ["ipo"]},
         ["dpo_loss_type: ['ipo'] differs", "ipo_sft_weight: 0"]),
        ({"ipo_sft_weight": 0, "dpo_loss_type": ["ipo", "sft"]},
         ["dpo_loss_type: ['ipo', 'sft'] mixes other losses", "Remove `dpo_loss_type`"]),
        ({"ipo_sft_weight": 0.1, "dpo_loss_weights": [1.0, 0.2]},
         ["dpo_loss_weights: [1.0, 0.2] cannot be used", "ipo_sft_weight"]),
        ({"ipo_sft_weight": -0.5},
         ["ipo_sft_weight: Input should be greater than or equal to 0 (got -0.5)"]),
        ({"ipo_sft_weight": "much"}, ["ipo_sft_weight", "(got 'much')"]),
        ({"rejection_sampling": {"temperature": -1}},
         ["rejection_sampling.temperature", "greater than or equal to 0", "(got -1)"]),
        ({"rejection_sampling": {"batch_size": "many"}},
         ["rejection_sampling.batch_size", "valid integer", "(got 'many')"]),
        ({"rejection_sampling": {"backend": "tgi"}},
         ["rejection_sampling.backend", "'transformers' or 'vllm'"]),
        ({"rejection_sampling": {"max_new_token": 64}},
         ["rejection_sampling.max_new_token", "Extra inputs are not permitted"]),
    ],
)
def test_config_errors_name_the_key_and_the_fix(keys, fragments):
    with pytest.raises(IPOConfigError) as err:
        normalise(ipo_cfg(**keys))
    for fragment in fragments:
        assert fragment in str(err.value)
    assert "\n" not in str(err.value)  # one line


@pytest.mark.parametrize("rl", [None, "dpo", "kto"])
def test_plugin_keys_without_rl_ipo_are_an_error(rl):
    cfg = {"base_model": "m", "ipo_tau": 0.1, **({"rl": rl} if rl else {})}
    with pytest.raises(IPOConfigError, match=r"ipo_tau set but `rl: .*`.*Add `rl: ipo`"):
        normalise(cfg)


def test_native_spelling_with_plugin_keys_is_accepted():
    cfg = normalise({"base_model": "m", "rl": "dpo", "dpo_loss_type": ["ipo"], "ipo_tau": 0.2})
    assert cfg["rl_beta"] == 0.2
    assert cfg["ipo_sft_weight"] == 0.0 and cfg["dpo_loss_type"] == ["ipo"]  # pure, as written


def test_sft_entries_with_nested_mappings_pass_axolotl_validation(monkeypatch):
    """Axolotl's loader wraps the YAML in DictDefault, whose nested mappings answer None for any
    attribute; one kept inside `ipo_sft_datasets` broke pydantic's serializer in validation."""
    from axolotl.cli.config import prepare_plugins
    from axolotl.integrations.base import PluginManager
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault

    monkeypatch.setattr(PluginManager, "_instance", None)
    mappings = {"role": "from", "content": "value"}
    cfg = DictDefault({
        **ipo_cfg(datasets=[{"path": "c.jsonl", "type": "chat_template",
                             "field_messages": "conversations",
                             "message_property_mappings": mappings}]),
        "plugins": ["axolotl_ipo.IPOPlugin"], "micro_batch_size": 1, "learning_rate": 1e-4,
        "gradient_accumulation_steps": 1, "output_dir": "out",
    })
    prepare_plugins(cfg)
    validated = validate_config(cfg)
    assert validated.ipo_sft_datasets[0]["message_property_mappings"] == mappings


def test_vllm_settings_reach_the_engine():
    from axolotl_ipo.args import sampling_args
    from axolotl_ipo.pairs.from_config import _generator_options

    cfg = {"sequence_len": 1024, "trust_remote_code": True, "rejection_sampling": {
        "backend": "vllm", "tensor_parallel_size": 2, "gpu_memory_utilization": 0.6,
        "max_new_tokens": 128}}
    assert _generator_options(cfg, sampling_args(cfg)) == {
        "gpu_memory_utilization": 0.6, "tensor_parallel_size": 2, "trust_remote_code": True,
        "max_model_len": 1024 + 128,
    }
    cfg["rejection_sampling"]["backend"] = "transformers"
    assert _generator_options(cfg, sampling_args(cfg)) == {"trust_remote_code": True}


@pytest.mark.parametrize(
    ("keys", "message"),
    [({"ipo_sft_weight": 0, "rejection_sampling": {"solved": "nll", "answer_check": "number"}},
      "rejection_sampling.solved: nll keeps solved prompts only for the NLL term, but "
      "ipo_sft_weight is 0.0; set `ipo_sft_weight` > 0"),
     ({"ipo_sft_weight": 1.0, "rejection_sampling": {"solved": "nll"}},
      "rejection_sampling.solved: nll needs an answer_check")],
    ids=["no_sft_weight", "no_check"],
)
def test_solved_nll_needs_a_check_and_the_nll_term(keys, message):
    with pytest.raises(IPOConfigError) as err:
        normalise(ipo_cfg(**keys))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_solved_nll_with_both_is_accepted():
    cfg = normalise(ipo_cfg(ipo_sft_weight=1.0,
                            rejection_sampling={"solved": "nll", "answer_check": "number"}))
    assert cfg["dpo_loss_weights"] == [1.0, 1.0]


@pytest.mark.parametrize(("keys", "suggestion"), [
    ({"rejection_sampling": {"temprature": 0.7}}, "did you mean `temperature`?"),
    ({"rejection_sampling": {"num_sample": 2}}, "did you mean `num_samples`?"),
])
def test_a_misspelt_key_gets_a_suggestion(keys, suggestion):
    with pytest.raises(IPOConfigError) as err:
        normalise({"rl": "ipo", **keys})
    message = str(err.value)
    assert message.endswith(suggestion) and "\n" not in message
    assert message.startswith(f"rejection_sampling.{next(iter(keys['rejection_sampling']))}: ")

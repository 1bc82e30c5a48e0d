"""A CUDA build of torch on a machine without an NVIDIA driver (what `pip install torch` gives
on a user's CPU machine). Simulated: torch.cuda raises what it raises there."""

import os

import axolotl.utils.environment as environment
import pytest
import torch
from axolotl.utils.dict import DictDefault
from axolotl.utils.trainer import prepare_optim_env

from axolotl_ipo.plugin import IPOPlugin
from axolotl_ipo.upstream import axolotl as upstream_axolotl

NO_DRIVER = "Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU"


@pytest.fixture
def cuda_build_without_driver(monkeypatch):
    """Two CPU ranks whose torch.cuda has no driver; environment and Axolotl restored after."""

    def no_driver(*args, **kwargs):
        raise RuntimeError(NO_DRIVER)

    saved = dict(os.environ)
    monkeypatch.setattr(torch.cuda, "can_device_access_peer", no_driver)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(environment, "check_cuda_p2p_support", environment.check_cuda_p2p_support)
    os.environ.update(WORLD_SIZE="2", LOCAL_RANK="0", RANK="0")
    os.environ.pop("ACCELERATE_USE_CPU", None)
    yield
    os.environ.clear()
    os.environ.update(saved)


def axolotl_prepares_the_run() -> None:
    """What every Axolotl rank runs after the plugins registered (`load_cfg`)."""
    prepare_optim_env(DictDefault({"bf16": False, "fp16": False}))


def test_without_the_plugin_axolotl_crashes_every_cpu_rank(cuda_build_without_driver):
    with pytest.raises(RuntimeError, match="Found no NVIDIA driver"):
        axolotl_prepares_the_run()


def test_an_ipo_config_lets_cpu_ranks_through_the_p2p_probe(cuda_build_without_driver):
    IPOPlugin().register(DictDefault({"rl": "ipo"}))
    axolotl_prepares_the_run()
    assert os.environ["ACCELERATE_USE_CPU"] == "1"
    assert environment.check_cuda_p2p_support() is True


def test_the_plugin_stays_inert_for_other_configs(cuda_build_without_driver):
    IPOPlugin().register(DictDefault({"rl": "dpo"}))
    with pytest.raises(RuntimeError, match="Found no NVIDIA driver"):
        axolotl_prepares_the_run()


def test_a_real_cuda_error_still_surfaces(cuda_build_without_driver, monkeypatch):
    upstream_axolotl.guard_cuda_p2p_check()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(RuntimeError, match="Found no NVIDIA driver"):
        environment.check_cuda_p2p_support()


def test_guarding_twice_wraps_once(cuda_build_without_driver):
    upstream_axolotl.guard_cuda_p2p_check()
    guarded = environment.check_cuda_p2p_support
    upstream_axolotl.guard_cuda_p2p_check()
    assert environment.check_cuda_p2p_support is guarded


def validated(raw: dict, monkeypatch) -> DictDefault:
    """Axolotl's own registration + validation of a raw config, as `load_cfg` runs them."""
    from axolotl.cli.config import prepare_plugins
    from axolotl.integrations.base import PluginManager
    from axolotl.utils.config import validate_config

    monkeypatch.setattr(PluginManager, "_instance", None)
    cfg = DictDefault({"micro_batch_size": 1, "learning_rate": 1e-4, "output_dir": "out",
                       "gradient_accumulation_steps": 1, "base_model": "m", "adapter": "lora",
                       "datasets": [{"path": "d.jsonl", "type": "alpaca"}],
                       "plugins": ["axolotl_ipo.IPOPlugin"], **raw})
    prepare_plugins(cfg)
    return validate_config(cfg)


def test_lora_kernels_are_switched_off_for_ipo_configs_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = validated({"rl": "ipo", "lora_mlp_kernel": True}, monkeypatch)
    keys = upstream_axolotl.lora_kernel_keys()
    assert {"lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel"} <= set(keys)
    assert all(cfg[key] is False for key in keys), {key: cfg[key] for key in keys}


def test_lora_kernels_are_left_alone_with_cuda_or_for_configs_that_are_not_ours(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert validated({"rl": "ipo", "lora_mlp_kernel": True}, monkeypatch).lora_mlp_kernel is True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    sft = validated({"lora_mlp_kernel": True}, monkeypatch)
    assert sft.lora_mlp_kernel is True and sft.lora_qkv_kernel is None

"""The Axolotl adapter: which releases we support, what each one supports, and every Axolotl
function, class and module the package uses apart from the plugin base class."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import re
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from functools import lru_cache
from importlib.metadata import version
from importlib.resources import files
from typing import Any

from axolotl_ipo.upstream.trl import ipo_losses

LOG = logging.getLogger("axolotl_ipo")

# Every Axolotl name this module touches or copies ("module:attribute", or a module alone);
# tests/test_upstream.py resolves each on the installed release. Pydantic fields count as
# attributes. The feature probes below (`dpo_loss_type`, `RLType.IPO`, the entry-point group)
# are not here: a release may lack one, and the probe answers for it.
REQUIRED = (
    "axolotl.cli.config:load_cfg",
    "axolotl.loaders:load_tokenizer",
    "axolotl.common.datasets:load_preference_datasets",
    "axolotl.utils.data.shared:load_dataset_with_config",
    "datasets.packaged_modules.json.json",  # DATASETS_JSON_LOGGER: load_dataset_entry's quiet log
    "axolotl.prompt_strategies.user_defined:load",  # custom_prompt_renderer
    "axolotl.prompt_strategies.user_defined:UserDefinedDatasetConfig",
    "axolotl.prompt_strategies.alpaca_w_system:SystemDataPrompter.build_prompt_w_system",
    "axolotl.prompt_strategies.alpaca_w_system:"
    "InstructionWSystemPromptTokenizingStrategy.parse_instruction_fields",
    "axolotl.utils.dict:DictDefault",
    "axolotl.utils.data.rl:_drop_long_sequences",  # what count_too_long copies
    "axolotl.utils.environment:check_cuda_p2p_support",  # guard_cuda_p2p_check
    "axolotl.utils.schemas.config:AxolotlInputConfig",
    "axolotl.utils.schemas.config:AxolotlInputConfig.dpo_loss_weights",  # native_ipo_keys
    "axolotl.utils.schemas.enums:RLType",
    "axolotl.integrations.base:BasePlugin",  # plugin.py's base class
    "axolotl.cli.train",  # TRAIN_MODULE
    "axolotl.cli.merge_lora",  # MERGE_MODULE
    "axolotl.loaders.model:ModelLoader",  # seeds_lora_init's probe
    "axolotl.utils.trainer:setup_deepspeed_env",  # validating_config skips it
    "axolotl.utils.trainer:prepare_optim_env",  # its caller, which looks it up in that module
    "axolotl.utils.config:load_model_config",  # validating_config: a stand-in when offline
    "axolotl.utils.config:normalize_config",  # its caller, which looks it up in that module
    "transformers:PretrainedConfig",  # validating_config's stand-in model config
)

TRAIN_MODULE = "axolotl.cli.train"  # `python -m` these: self-play's training and LoRA merge
MERGE_MODULE = "axolotl.cli.merge_lora"


@lru_cache(maxsize=1)
def supported_releases() -> tuple[str, ...]:
    """The Axolotl releases we support and test, oldest first (`upstream/releases.txt`)."""
    text = files("axolotl_ipo.upstream").joinpath("releases.txt").read_text(encoding="utf-8")
    lines = (line.split() for line in text.splitlines() if not line.startswith("#"))
    return tuple(fields[0] for fields in lines if fields)


def _minor(release: str) -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", release).groups()
    return int(major), int(minor)


def supported_range() -> str:
    """The supported minors in words, e.g. "between 0.19 and 0.21"."""
    oldest, newest = supported_releases()[0], supported_releases()[-1]
    return "between {}.{} and {}.{}".format(*_minor(oldest), *_minor(newest))


def check_installed_release() -> str:
    """The installed Axolotl's version; RuntimeError outside the supported minors (the
    Dockerfile's build check)."""
    installed = axolotl_version()
    releases = supported_releases()
    if not _minor(releases[0]) <= _minor(installed) <= _minor(releases[-1]):
        raise RuntimeError(
            f"axolotl {installed} is installed; axolotl-ipo supports axolotl releases "
            f"{supported_range()} (axolotl_ipo/upstream/releases.txt)"
        )
    return installed


@lru_cache(maxsize=1)
def axolotl_version() -> str:
    return version("axolotl")


@lru_cache(maxsize=1)
def supports_dpo_loss_type() -> bool:
    """`rl: dpo` + `dpo_loss_type: [ipo]`: Axolotl's announced replacement for `rl: ipo`."""
    from axolotl.utils.schemas.config import AxolotlInputConfig

    return "dpo_loss_type" in AxolotlInputConfig.model_fields


@lru_cache(maxsize=1)
def supports_native_rl_ipo() -> bool:
    from axolotl.utils.schemas.enums import RLType

    return "ipo" in {member.value for member in RLType}


def native_ipo_keys(sft_weight: float | None = None) -> dict:
    """The config keys that make the installed Axolotl train with TRL's IPO loss (plus TRL's
    `sft` loss on the chosen answer, weighted by ``sft_weight``, when it is > 0)."""
    if supports_dpo_loss_type():
        losses = ipo_losses(sft_weight)
        keys = {"rl": "dpo", "dpo_loss_type": losses["loss_type"]}
        if "loss_weights" in losses:
            keys["dpo_loss_weights"] = losses["loss_weights"]
        return keys
    if supports_native_rl_ipo() and not sft_weight:
        return {"rl": "ipo"}
    raise RuntimeError(
        f"axolotl {axolotl_version()} supports neither `dpo_loss_type` nor `rl: ipo` (or, with "
        "ipo_sft_weight, no `dpo_loss_weights`); install an axolotl release "
        f"{supported_range()}, or report this at axolotl-ipo."
    )


@lru_cache(maxsize=1)
def autoloads_entry_point_plugins() -> bool:
    """Axolotl >= 0.21 registers every installed `axolotl.plugins` entry point itself."""
    import axolotl.integrations.base as base

    return hasattr(base, "PLUGIN_ENTRY_POINT_GROUP")


def load_cfg(path: str) -> Any:
    """A config file loaded and validated as `axolotl train` does (listed plugins registered);
    raises pydantic's ValidationError for an invalid config."""
    from axolotl.cli.config import load_cfg as load

    return load(path)


def load_tokenizer(cfg: Any) -> Any:
    """The tokenizer training uses, as Axolotl loads it (its chat_template setting included)."""
    from axolotl.loaders import load_tokenizer as load

    return load(cfg)


def config_dict(mapping: Mapping[str, Any]) -> Any:
    """``mapping`` as Axolotl's config type (`DictDefault`: a missing key answers None)."""
    from axolotl.utils.dict import DictDefault

    return DictDefault(mapping)


def load_preference_datasets(cfg: Any) -> Any:
    """Axolotl's RL data pipeline over ``cfg.datasets`` (a TrainDatasetMeta)."""
    from axolotl.common.datasets import load_preference_datasets as load

    return load(cfg=cfg)


# datasets' JSON builder logs "Failed to load JSON from file ..." at ERROR before it raises; the
# caller replaces the error with one line naming the bad line (`preflight.dataset_problem`).
DATASETS_JSON_LOGGER = "datasets.packaged_modules.json.json"


def load_dataset_entry(entry: Mapping[str, Any], use_auth_token: bool = False) -> Any:
    """A `datasets:` entry's rows through Axolotl's own loader (local files, hub, cloud, URLs,
    data_files): a Dataset or a DatasetDict. The JSON builder's error log is held back."""
    from axolotl.utils.data.shared import load_dataset_with_config

    json_log = logging.getLogger(DATASETS_JSON_LOGGER)
    level = json_log.level
    json_log.setLevel(logging.CRITICAL)
    try:
        return load_dataset_with_config(config_dict(entry), use_auth_token)
    finally:
        json_log.setLevel(level)


def custom_prompt_renderer(type_cfg: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], str]:
    """For Axolotl's custom instruct format (`type:` a mapping of `field_*`, `format`,
    `no_input_format`, `system_format`, `system_prompt`): a row -> the text its SFT puts before
    the answer. Axolotl's own `user_defined` strategy reads the row's fields and its prompter
    renders them (`tokenize_prompt` up to the answer), so the pairs' prompts match SFT's."""
    from axolotl.prompt_strategies.user_defined import UserDefinedDatasetConfig, load

    known = {f.name for f in dataclasses.fields(UserDefinedDatasetConfig)}
    settings = {key: value for key, value in type_cfg.items() if key in known and value is not None}
    strategy = load(None, config_dict({"train_on_inputs": False, "sequence_len": 0}),
                    UserDefinedDatasetConfig(**settings))

    def render(row: Mapping[str, Any]) -> str:
        instruction, extra, _, system = strategy.parse_instruction_fields(row)
        return next(iter(strategy.prompter.build_prompt_w_system(system, instruction, extra)))

    return render


def count_too_long(rows: Sequence[Mapping[str, Any]], tokenizer: Any, sequence_len: Any) -> int:
    """How many pair rows Axolotl's RL loader finds longer than ``sequence_len`` (0 without a
    limit): it keeps a pair only if prompt + chosen and prompt + rejected each fit, counting
    tokens without special tokens (`axolotl.utils.data.rl._drop_long_sequences`, the same in
    0.19 and 0.21; tests compare the two), and drops (the default `excess_length_strategy`) or
    truncates the rest."""
    if not sequence_len or not rows:
        return 0

    def lengths(key: str) -> list[int]:
        texts = [str(row[key]) for row in rows]
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    prompt, chosen, rejected = lengths("prompt"), lengths("chosen"), lengths("rejected")
    limit = int(sequence_len)
    return sum(
        p + max(c, r) > limit for p, c, r in zip(prompt, chosen, rejected, strict=True)
    )


def guard_cuda_p2p_check() -> None:
    """Let Axolotl's NCCL peer-to-peer probe answer "no GPU pairs" on CPU-only ranks.

    `axolotl.utils.environment.check_cuda_p2p_support` (called by `prepare_optim_env` for
    every multi-rank run) calls `torch.cuda.can_device_access_peer` and catches only the
    AssertionError of a CPU build of torch; a CUDA build without an NVIDIA driver raises
    RuntimeError ("Found no NVIDIA driver") and every CPU rank crashes. Without CUDA there is
    no pair of GPUs, so the answer is True (Axolotl's newer probe says the same for < 2 GPUs).
    """
    import axolotl.utils.environment as environment

    probe = getattr(environment, "check_cuda_p2p_support", None)
    if probe is None or getattr(probe, "axolotl_ipo_guarded", False):
        return

    @functools.wraps(probe)
    def guarded() -> bool:
        try:
            return probe()
        except RuntimeError as err:
            import torch

            if torch.cuda.is_available():
                raise
            LOG.debug("no CUDA device, so no GPU peer-to-peer to probe (%s)", err)
            return True

    guarded.axolotl_ipo_guarded = True
    environment.check_cuda_p2p_support = guarded


@lru_cache(maxsize=1)
def seeds_lora_init() -> bool:
    """Axolotl >= 0.21 draws a new LoRA adapter's initialisation from `seed` itself
    (``ModelLoader._reinit_lora_from_seed``); 0.19 from torch's unseeded generator, so two runs
    of one config start from different adapters."""
    from axolotl.loaders.model import ModelLoader

    return hasattr(ModelLoader, "_reinit_lora_from_seed")


def seed_lora_init(cfg: Mapping[str, Any]) -> None:
    """Seed torch with the config's `seed` just before Axolotl creates the adapter (the
    plugin's `pre_lora_load`), on the releases that do not: `seed` then fixes the run."""
    if cfg.get("seed") is None or seeds_lora_init():
        return
    import torch

    torch.manual_seed(int(cfg["seed"]))


@lru_cache(maxsize=1)
def lora_kernel_keys() -> tuple[str, ...]:
    """Axolotl's `lora_*_kernel` switches (fused Triton LoRA kernels: CUDA only)."""
    from axolotl.utils.schemas.config import AxolotlInputConfig

    fields = AxolotlInputConfig.model_fields
    return tuple(sorted(k for k in fields if k.startswith("lora_") and k.endswith("_kernel")))


def disable_lora_kernels_without_cuda(cfg: MutableMapping) -> None:
    """Without CUDA, switch Axolotl's Triton LoRA kernels off before it validates the config.

    Axolotl auto-enables them for LoRA SFT configs (0.19-0.21 skip RL configs, which is what an
    IPO config becomes) and uses them wherever a config sets them; on a CUDA build of torch
    without a GPU they crash the first forward ("Found no NVIDIA driver")."""
    import torch

    if torch.cuda.is_available():
        return
    for key in lora_kernel_keys():
        if cfg.get(key):
            LOG.warning("%s: true needs a CUDA GPU; turned off (no CUDA device here)", key)
        cfg[key] = False


def _offline_miss(err: BaseException) -> bool:
    """The hub could not be asked (offline mode, no connection) and the file is not cached."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError)):
            return True
        if "couldn't connect to" in str(seen):  # transformers' text for the same miss
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def validating_config(not_checked: list[str]) -> Iterator[None]:
    """Load a config as `axolotl train` does, minus what only training can do; what was left
    out is appended to ``not_checked`` as a sentence.

    - DeepSpeed: Axolotl's `prepare_optim_env` calls `setup_deepspeed_env`, which imports
      DeepSpeed and initialises torch.distributed ("MASTER_ADDR expected, but not set" in one
      process; "No module named 'deepspeed'" without it): skipped, its config is read by
      `axolotl-ipo check` itself.
    - A hub model whose config is neither cached nor reachable (offline, no network):
      `normalize_config` reads the model's config (`load_model_config`); a bare config stands in
      for it, so the checks that need the model type do not run.
    """
    # first, as `axolotl train` does: it configures Axolotl's logging before torchao and torch
    # load (imported the other way round, 0.19 prints their load warnings)
    import axolotl.cli.config  # noqa: F401
    import axolotl.utils.config as config_module
    import axolotl.utils.trainer as trainer_module
    from transformers import PretrainedConfig

    real_setup, real_load = trainer_module.setup_deepspeed_env, config_module.load_model_config

    def skip_deepspeed_setup(cfg: Any, stage: Any = None) -> None:
        LOG.debug("check: DeepSpeed setup skipped (stage %s)", stage)

    def model_config_or_stand_in(cfg: Any) -> Any:
        try:
            return real_load(cfg)
        except Exception as err:
            name = cfg.base_model_config or cfg.base_model
            if not _offline_miss(err):
                raise
            not_checked.append(
                f"base_model {name}: its config is not in the local Hugging Face cache and the "
                "hub cannot be reached, so Axolotl's checks that need the model (its type, "
                "vocabulary, chat template) did not run; run check online, or after the model "
                "is downloaded"
            )
            return PretrainedConfig()

    trainer_module.setup_deepspeed_env = skip_deepspeed_setup
    config_module.load_model_config = model_config_or_stand_in
    try:
        yield
    finally:
        trainer_module.setup_deepspeed_env = real_setup
        config_module.load_model_config = real_load

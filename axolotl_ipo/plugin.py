"""The Axolotl plugin: thin hooks that delegate to the modules that do the work."""

from __future__ import annotations

from pathlib import Path

# Axolotl's plugin interface, the one Axolotl import outside axolotl_ipo/upstream/: its module
# says "to create a new plugin, you need to inherit from the BasePlugin class" (upstream.PUBLIC).
from axolotl.integrations.base import BasePlugin

from axolotl_ipo import (
    auto_tau,
    config,
    dataset_type,
    distributed,
    heldout_guard,
    preflight,
    sft_datasets,
)
from axolotl_ipo.callbacks import METRICS_FILE, IPODiagnosticsCallback, IPOMetricsCallback
from axolotl_ipo.errors import exit_on_user_error
from axolotl_ipo.pairs import from_config
from axolotl_ipo.upstream import axolotl as upstream_axolotl
from axolotl_ipo.upstream.transformers import add_callback_first


class IPOPlugin(BasePlugin):
    """`plugins: [axolotl_ipo.IPOPlugin]` + `rl: ipo`: IPO through Axolotl's DPO pipeline.

    Inert unless the config says `rl: ipo` or sets one of the plugin's keys (Axolotl 0.21
    loads installed plugins for every config).
    """

    def get_input_args(self) -> str:
        return "axolotl_ipo.args.IPOArgs"

    @exit_on_user_error
    def register(self, cfg):
        if not config.is_active(cfg):
            return
        config.normalise(cfg)
        preflight.check_model_paths(cfg)
        upstream_axolotl.disable_lora_kernels_without_cuda(cfg)
        distributed.prepare_ranks(cfg)

    @exit_on_user_error
    def load_datasets(self, cfg, preprocess: bool = False):
        """SFT datasets become sampled pairs; preference datasets pass through unchanged.

        Also the first hook after Axolotl resolves `device_map` and before the model loads.
        """
        if not config.is_active(cfg):
            return None
        distributed.fix_cpu_device_map(cfg)
        sft_datasets.refuse_sft_test_datasets(cfg.get("test_datasets"))
        rows = sft_datasets.training_rows(cfg)
        self._guard_examples = rows.heldout if rows else []
        result = from_config.build_pairs_for_config(cfg, rows=rows)
        if result is None:
            return None
        _, preference = sft_datasets.sft_sources(cfg)
        entries = [dataset_type.pairs_dataset_entry(result.path)]
        entries += [dict(cfg.datasets[index]) for index in preference]
        cfg.datasets = [upstream_axolotl.config_dict(entry) for entry in entries]
        return upstream_axolotl.load_preference_datasets(cfg)

    def pre_lora_load(self, cfg, model):
        """`seed` fixes the LoRA initialisation on every supported release."""
        if config.is_active(cfg):
            upstream_axolotl.seed_lora_init(cfg)

    def get_training_args(self, cfg):
        """Applied after Axolotl's own DPO settings: IPO [+ SFT] with beta = tau, whatever the
        release."""
        if not config.is_active(cfg):
            return {}
        return config.trainer_loss_args(cfg)

    def add_callbacks_post_trainer(self, cfg, trainer):
        if not config.is_active(cfg):
            return []
        examples = getattr(self, "_guard_examples", [])
        self._guard = heldout_guard.guard_callback(cfg, examples, trainer.processing_class)
        tau, weight = config.loss_settings(cfg)
        self._loss = auto_tau.LossSettings(tau, weight, auto=config.is_auto_tau(cfg))
        return [IPOMetricsCallback(cfg.output_dir, self._loss, self._guard)]

    def post_trainer_create(self, cfg, trainer):
        """The `ipo/...` diagnostics and the collapse guard go first, so every logger
        integration receives their metrics; `ipo_tau: auto` right after the guard, whose step-0
        score it uses."""
        if not config.is_active(cfg):
            return
        pure_ipo = config.trainer_loss_args(cfg)["loss_type"] == ["ipo"]
        add_callback_first(trainer, IPODiagnosticsCallback(pure_ipo))
        if config.is_auto_tau(cfg):
            add_callback_first(trainer, auto_tau.AutoTauCallback(
                trainer, self._loss, getattr(self, "_guard", None), cfg.get("ipo_sft_weight"),
                Path(cfg.output_dir) / METRICS_FILE))
        if getattr(self, "_guard", None) is not None:
            add_callback_first(trainer, self._guard)

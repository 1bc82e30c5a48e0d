"""The Axolotl plugin: thin hooks that delegate to the modules that do the work."""

from __future__ import annotations

from axolotl.integrations.base import BasePlugin

from axolotl_ipo import config, distributed
from axolotl_ipo.callbacks import IPOMetricsCallback


class IPOPlugin(BasePlugin):
    """`plugins: [axolotl_ipo.IPOPlugin]` + `rl: ipo`: IPO through Axolotl's DPO pipeline.

    Inert unless the config says `rl: ipo` or sets one of the plugin's keys (Axolotl 0.21
    loads installed plugins for every config).
    """

    def get_input_args(self) -> str:
        return "axolotl_ipo.args.IPOArgs"

    def register(self, cfg):
        if not config.is_active(cfg):
            return
        config.normalise(cfg)
        distributed.request_cpu_process_group()

    def load_datasets(self, cfg, preprocess: bool = False):
        """The first hook after Axolotl resolves `device_map`, and before it loads the model."""
        if not config.is_active(cfg):
            return None
        distributed.fix_cpu_device_map(cfg)
        return None

    def get_training_args(self, cfg):
        """Applied after Axolotl's own DPO settings: IPO with beta = tau, whatever the release."""
        if not config.is_active(cfg):
            return {}
        return {"loss_type": ["ipo"], "beta": float(cfg.ipo_tau)}

    def add_callbacks_post_trainer(self, cfg, trainer):
        if not config.is_active(cfg):
            return []
        return [IPOMetricsCallback(cfg.output_dir, float(cfg.ipo_tau))]

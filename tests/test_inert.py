"""A config that asks for neither `rl: ipo` nor a plugin key validates exactly as without us."""

import axolotl.integrations.base as plugin_base
import pytest
import yaml

from axolotl_ipo.upstream import axolotl as upstream_axolotl


def load_validated(path, monkeypatch, with_plugin: bool) -> dict:
    from axolotl.cli.config import load_cfg
    from axolotl.integrations.base import PluginManager

    monkeypatch.setattr(PluginManager, "_instance", None)
    if upstream_axolotl.autoloads_entry_point_plugins():
        original = plugin_base.entry_points

        def entry_points_maybe_without_us(**kwargs):
            points = original(**kwargs)
            return points if with_plugin else [p for p in points if "axolotl_ipo" not in p.value]

        monkeypatch.setattr(plugin_base, "entry_points", entry_points_maybe_without_us)
    cfg = yaml.safe_load(path.read_text())
    if with_plugin:
        cfg["plugins"] = ["axolotl_ipo.IPOPlugin"]
    path.write_text(yaml.safe_dump(cfg))
    validated = load_cfg(str(path)).to_dict()
    loaded = "axolotl_ipo.IPOPlugin" in PluginManager.get_instance().plugins
    assert loaded == with_plugin
    validated.pop("plugins", None)
    validated.pop("axolotl_config_path", None)
    return validated


@pytest.mark.parametrize(
    "extra",
    [
        {"rl": "dpo", "dpo_loss_type": ["ipo"], "rl_beta": 0.2,
         "datasets": [{"path": "prefs.jsonl", "split": "train", "type": "chatml"}]},
        {"datasets": [{"path": "sft.jsonl", "type": "alpaca"}]},
    ],
    ids=["native-dpo-ipo", "sft"],
)
def test_config_without_ipo_is_untouched(tiny_model_dir, tmp_path, monkeypatch, extra):
    base = {"base_model": str(tiny_model_dir), "output_dir": str(tmp_path / "out"),
            "sequence_len": 64, "micro_batch_size": 1, "num_epochs": 1, "learning_rate": 1e-4,
            "bf16": False, "fp16": False, **extra}
    path = tmp_path / "cfg.yml"
    path.write_text(yaml.safe_dump(base))
    without = load_validated(path, monkeypatch, with_plugin=False)
    path.write_text(yaml.safe_dump(base))
    with_plugin = load_validated(path, monkeypatch, with_plugin=True)
    assert with_plugin == without
    assert not any(key.startswith("ipo") or key == "rejection_sampling" for key in with_plugin)

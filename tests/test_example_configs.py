"""Every example config passes Axolotl's own validation with the plugin (no model is loaded)."""

from pathlib import Path

import pytest
import yaml

from axolotl_ipo.config import is_active

CONFIGS = sorted((Path(__file__).parents[1] / "example_configs").glob("*.yml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_example_config_validates(path, monkeypatch):
    from axolotl.cli.config import prepare_plugins
    from axolotl.integrations.base import PluginManager
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault

    monkeypatch.setattr(PluginManager, "_instance", None)
    cfg = DictDefault(yaml.safe_load(path.read_text()))
    assert "axolotl_ipo.IPOPlugin" in cfg.plugins
    prepare_plugins(cfg)
    validated = validate_config(cfg)
    assert is_active(validated)
    assert validated.rl == "dpo" and validated.dpo_loss_type == ["ipo"]
    assert validated.rl_beta == validated.ipo_tau
    assert validated.bf16 is False and validated.fp16 is False

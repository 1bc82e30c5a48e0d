"""A test-only Axolotl plugin: each rank writes a digest of its trained LoRA weights."""

import hashlib
import os
from pathlib import Path

from axolotl.integrations.base import BasePlugin


class RankProbePlugin(BasePlugin):
    def post_train(self, cfg, model):
        digest = hashlib.sha256()
        for name, param in sorted(model.named_parameters()):
            if "lora_" in name:
                digest.update(param.detach().float().cpu().numpy().tobytes())
        rank = os.environ.get("RANK", "0")
        Path(cfg.output_dir, f"rank{rank}.digest").write_text(digest.hexdigest())

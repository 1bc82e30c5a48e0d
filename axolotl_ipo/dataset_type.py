"""The Axolotl dataset type that reads a pairs.jsonl: `type: axolotl_ipo.sampled_pairs`.

Axolotl resolves a dataset `type:` only as a two-part dotted name, so the public name is the
package's `axolotl_ipo.sampled_pairs`, which calls :func:`sampled_pairs` here. The rows then go
through Axolotl's preference pipeline to TRL's DPO trainer with `loss_type: ipo`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PAIRS_TYPE = "axolotl_ipo.sampled_pairs"  # the dataset `type:` that reads a pairs.jsonl


def pairs_dataset_entry(path: Path) -> dict[str, Any]:
    return {"path": str(path), "split": "train", "type": PAIRS_TYPE}


def sampled_pairs(cfg: Any = None, **kwargs: Any):
    """Axolotl preference `type:` for a pairs.jsonl: keeps prompt/chosen/rejected and drops
    the provenance columns (source, row, generator, ...) before TRL sees the rows."""

    def transform(sample: dict[str, Any]) -> dict[str, Any]:
        return {key: sample[key] for key in ("prompt", "chosen", "rejected")}

    return transform, {"remove_columns": "__all__"}

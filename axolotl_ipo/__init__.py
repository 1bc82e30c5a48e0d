"""axolotl-ipo: IPO for Axolotl with one flag, with pairs sampled from SFT data.

Data flow, one name per stage: the config (`config`, its keys in `args`) -> SFT rows
(`sft_datasets`, `sft_rows`) -> sampler (`pairs/sampler`) -> judge (`pairs/checks`,
`pairs/judge`) -> pairs and their store (`pairs/build`, `pairs/store`; `pairs/from_config` runs
the stage) -> Axolotl dataset type (`dataset_type`, `plugin`) -> TRL's IPO loss.
"""

__version__ = "0.1.0"


def sampled_pairs(cfg=None, **kwargs):
    """Dataset `type: axolotl_ipo.sampled_pairs` (Axolotl resolves only two-part names)."""
    from axolotl_ipo.dataset_type import sampled_pairs as transform

    return transform(cfg, **kwargs)


def __getattr__(name: str):
    # Lazy, so `import axolotl_ipo` (e.g. by the CLI) does not import Axolotl.
    if name == "IPOPlugin":
        from axolotl_ipo.plugin import IPOPlugin

        return IPOPlugin
    raise AttributeError(f"module 'axolotl_ipo' has no attribute {name!r}")

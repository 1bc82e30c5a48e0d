"""The key table of the usage guide (docs/usage.md, linked from the README) is the args model's
keys and defaults: a key added, renamed or given a new default in axolotl_ipo/args.py without
that table fails here."""

import re
from pathlib import Path

from axolotl_ipo.args import IPOArgs, RejectionSamplingArgs

README = Path(__file__).parents[1] / "docs" / "usage.md"  # the README links to it
INTERNAL = {"ipo_sft_datasets", "rejection_sampling"}  # saved by the plugin / the section itself


def readme_keys() -> dict[str, str]:
    rows = re.findall(r"^\| `([a-z_.]+)` \| ([^|]+) \|", README.read_text(encoding="utf-8"), re.M)
    return {key: default.strip() for key, default in rows}


def declared() -> dict[str, object]:
    keys = {k: f.default for k, f in IPOArgs.model_fields.items() if k not in INTERNAL}
    keys.update({f"rejection_sampling.{k}": f.default
                 for k, f in RejectionSamplingArgs.model_fields.items()})
    return keys


def test_every_key_is_in_the_readme_table_and_nothing_else():
    assert set(readme_keys()) == set(declared())


def test_the_readme_defaults_are_the_declared_ones():
    table = readme_keys()
    for key, default in declared().items():
        if default is None:  # documented by what None means (base_model, rl_beta, unset)
            continue
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        assert shown in table[key].strip("`"), f"{key}: README says {table[key]}, args.py {default}"

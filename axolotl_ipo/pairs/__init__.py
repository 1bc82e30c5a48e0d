"""Preference pairs from SFT rows, in the order the data flows:

`sampler/` (k answers per prompt: transformers or vLLM) -> `checks.py` (is an answer right?) ->
`judge.py` (a prompt's judged answers -> chosen, rejected or a drop reason) -> `build.py`
(render, plan, sample, commit, merge) -> `store.py` (cache key, batch commits, resume,
`pairs.jsonl`). `from_config.py` runs the stage for an Axolotl config; `summary.py` and
`report.py` are what it prints and what `axolotl-ipo inspect` prints.

Imports nothing on purpose: `args.py` imports `checks` before Axolotl is loaded.
"""

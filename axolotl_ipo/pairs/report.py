"""`axolotl-ipo inspect PAIRS.jsonl`: what a pairs file holds, before you train on it."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from axolotl_ipo.errors import UserError
from axolotl_ipo.jsonl import numbered_lines

from .build import real_pairs
from .judge import normalise_answer, strip_end


def read_pairs(path: Path) -> list[dict]:
    rows = []
    for number, line in numbered_lines(path.read_text(encoding="utf-8")):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}, line {number}: not JSON ({err.msg}); fix the line") from None
        if not isinstance(row, dict):
            raise UserError(
                f"{path}, line {number}: a JSON {type(row).__name__}, not a pair object; "
                "not a pairs file"
            )
        missing = [key for key in ("prompt", "chosen", "rejected") if key not in row]
        if missing:
            raise UserError(f"{path}, line {number}: no {', '.join(missing)}; not a pairs file")
        rows.append(row)
    return rows


def _stats(lengths: list[int]) -> str:
    if not lengths:
        return "-"
    return (
        f"mean {statistics.fmean(lengths):7.1f}  median {statistics.median(lengths):6.0f}  "
        f"min {min(lengths):5d}  max {max(lengths):6d}"
    )


def report(path: Path, examples: int = 3, end_token: str | None = None) -> str:
    """Counts, lengths and examples of the pairs; solved prompts kept for the NLL term
    (`solved: nll`, rejected = chosen by design) are counted apart, not as identical pairs.
    The end token left out of the answers is ``end_token``, else each row's own (`end_token`,
    recorded since pairs format 3), else none."""
    every = read_pairs(path)
    rows = real_pairs(every)
    solved = len(every) - len(rows)
    ends = [row.get("end_token") or "" if end_token is None else end_token for row in rows]
    chosen = [strip_end(row["chosen"], end) for row, end in zip(rows, ends, strict=True)]
    rejected = [strip_end(row["rejected"], end) for row, end in zip(rows, ends, strict=True)]
    pairs = zip(chosen, rejected, strict=True)
    identical = sum(normalise_answer(good) == normalise_answer(bad) for good, bad in pairs)
    sources = sorted({row.get("source", "?") for row in rows})
    kept = f" (+ {solved} solved prompts kept for the NLL term)" if solved else ""
    lines = [
        f"{path}: {len(rows)} pairs{kept} from {len(sources)} source(s): {', '.join(sources)}",
        f"chosen chars    {_stats([len(text) for text in chosen])}",
        f"rejected chars  {_stats([len(text) for text in rejected])}",
        f"identical chosen/rejected: {identical} ({identical / max(len(rows), 1):.1%})",
    ]
    cut = sum(row.get("finish_reason") == "length" for row in rows)
    if any("finish_reason" in row for row in rows):
        lines.append(f"rejected cut at max_new_tokens: {cut} ({cut / max(len(rows), 1):.1%})")
    for row, good, bad in list(zip(rows, chosen, rejected, strict=True))[:examples]:
        lines += [
            "",
            f"--- {row.get('source', '?')} row {row.get('row', '?')}",
            f"prompt:   {row['prompt'][-300:]!r}",
            f"chosen:   {good[:300]!r}",
            f"rejected: {bad[:300]!r}",
        ]
    return "\n".join(lines)

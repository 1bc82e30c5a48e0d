"""The run summary of pair building: counts, tokens, throughput, a small table."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PairsSummary"]


@dataclass
class PairsSummary:
    """What happened to the rows. Token counts cover every sampled answer in the store
    (earlier, interrupted runs included); ``tokens_this_run`` and ``generation_seconds``
    cover only the batches this process sampled in this run."""

    rows_in: int = 0
    pairs_out: int = 0  # rows with a rejected answer unlike the chosen one
    solved_kept: int = 0  # solved prompts kept for the NLL term alone (`solved: nll`)
    invalid: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    batches_sampled: int = 0
    tokens_generated: int = 0
    truncated: int = 0
    samples_judged: int = 0
    samples_right: int = 0
    answer_check: str = "none"
    too_long: int = 0  # pairs over sequence_len, which Axolotl's RL loader drops (or truncates)
    turns_after_answer: int = 0  # conversations whose turns after the last answer were left out
    tokens_this_run: int = 0
    generation_seconds: float = 0.0
    wall_seconds: float = 0.0
    generator: str = ""
    cached: bool = False

    @property
    def already_solved(self) -> int:
        """Prompts whose samples were all judged right (dropped, or kept with `solved: nll`)."""
        return self.dropped.get("already_solved", 0) + self.solved_kept

    @property
    def check_errors(self) -> int:
        """Rows skipped because the answer check raised."""
        return self.dropped.get("check_error", 0)

    @property
    def truncated_dropped(self) -> int:
        """Prompts left without a wrong sample that ended on its own (`truncated: drop`)."""
        return self.dropped.get("truncated", 0)

    def _other_drops(self) -> dict[str, int]:
        named = ("already_solved", "check_error", "truncated")
        return {k: v for k, v in self.dropped.items() if k not in named}

    def no_pairs_message(self) -> str:
        """The one-line error when no pair is left."""
        return (
            f"no pairs left to train on: rejection_sampling.answer_check {self.answer_check!r} "
            f"judged {self.samples_right} of {self.samples_judged} samples right; "
            f"{self.already_solved} prompts already solved, {self.check_errors} check errors, "
            f"{self.truncated_dropped} truncated dropped, other drops {self._other_drops()}, "
            f"{sum(self.invalid.values())} invalid of {self.rows_in} rows. Use another "
            "answer_check, raise rejection_sampling.num_samples, or add data."
        )

    @property
    def tokens_per_second(self) -> float:
        if self.generation_seconds <= 0:
            return 0.0
        return self.tokens_this_run / self.generation_seconds

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["tokens_per_second"] = round(self.tokens_per_second, 3)
        data["already_solved"] = self.already_solved
        data["check_errors"] = self.check_errors
        data["truncated_dropped"] = self.truncated_dropped
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairsSummary:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def _too_long_text(self) -> str:
        if not self.too_long:
            return "0"
        return f"{self.too_long} (Axolotl drops these by default: raise sequence_len)"

    def format(self) -> str:
        """A small two-column table for logs."""
        lines: list[tuple[str, str]] = [
            ("rows in", str(self.rows_in)),
            ("pairs out", str(self.pairs_out)),
        ]
        lines += [(f"invalid: {k}", str(v)) for k, v in sorted(self.invalid.items())]
        lines += [(f"dropped: {k}", str(v)) for k, v in sorted(self._other_drops().items())]
        lines += [
            ("answer check", self.answer_check),
            ("samples judged right", f"{self.samples_right} / {self.samples_judged}"),
            ("prompts already solved", str(self.already_solved)),
            *([("solved kept for NLL only", str(self.solved_kept))] if self.solved_kept else []),
            ("check errors", str(self.check_errors)),
            ("truncated dropped", str(self.truncated_dropped)),
            ("rejected cut at max_new_tokens", str(self.truncated)),
            ("pairs over sequence_len", self._too_long_text()),
            *([("turns after the last answer left out", str(self.turns_after_answer))]
              if self.turns_after_answer else []),
            ("batches (sampled now / all)", f"{self.batches_sampled} / {self.batches}"),
            ("tokens generated", str(self.tokens_generated)),
            ("tokens/s (this run)", f"{self.tokens_per_second:.1f}"),
            ("wall time", f"{self.wall_seconds:.1f} s"),
        ]
        if self.generator:
            lines.append(("generator", self.generator))
        if self.cached:
            lines.append(("cache", "hit: nothing sampled"))
        width = max(len(k) for k, _ in lines)
        rule = "-" * (width + 2 + max(len(v) for _, v in lines))
        body = [f"{k.ljust(width)}  {v}" for k, v in lines]
        return "\n".join(["IPO pairs", rule, *body, rule])

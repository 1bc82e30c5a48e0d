"""The illustrative bandit experiments of Azar et al. (2023), "A General Theoretical Paradigm to
Understand Learning from Human Preferences" (arXiv 2310.12036), Section 5.1.

A tabular policy pi = softmax(theta) over a few named actions is trained against a uniform
reference policy on a fixed list of preference pairs "winner>loser", with Adam (lr 0.01, 18,000
steps, mini-batches of 9 pairs drawn with replacement from the list), once with the DPO loss
-log sigmoid(beta * h) and once with the IPO loss (h - 1/(2 tau))^2 (Eq. 17 of the paper), where
h = log(pi(w)/pi_ref(w)) - log(pi(l)/pi_ref(l)). `preference_loss` is the same arithmetic as TRL's
DPOTrainer with loss_type "sigmoid" and "ipo" (TRL's `beta` is the paper's tau for IPO);
tests/test_bandit.py checks that against TRL itself. Seeds run side by side as rows of one theta.

Closed-form IPO optimum (`closed_form_ipo`). With a uniform reference, log pi_ref(w) = log pi_ref(l)
and the softmax normaliser cancels in h, so h = theta_w - theta_l. Sampling pairs uniformly with
replacement from a list in which pair (w, l) appears n_wl times makes the expected loss

    L(theta) = sum_{(w,l)} n_wl (theta_w - theta_l - 1/(2 tau))^2 / N,

a weighted linear least-squares problem A theta ~ b/(2 tau) with one row e_w - e_l per listed pair
(duplicates carry their weight) and b = 1. It fixes theta only up to a constant (softmax ignores
it), and uniquely so when the pairs connect all actions; `numpy.linalg.lstsq` returns the
minimum-norm solution. Examples:
  * "y1>y2": theta_1 - theta_2 = 1/(2 tau), so pi(y1) = sigmoid(1/(2 tau)).
  * "a>b,b>c,a>c": with x = theta_a - theta_b and y = theta_b - theta_c the loss is
    (x - c)^2 + (y - c)^2 + (x + y - c)^2 with c = 1/(2 tau); setting the gradient to zero gives
    x = y = 2c/3 = 1/(3 tau), so pi is proportional to (exp(2/(3 tau)), exp(1/(3 tau)), 1).
DPO has no such interior optimum on these lists: every listed pair is won by the same action each
time, so -log sigmoid(beta h) only tends to 0 as h -> infinity and the policy turns greedy for
every beta.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

TAUS = (0.1, 0.5, 1.0, 2.0)
PAPER_DATASETS = {"one pair": "y1>y2", "total order": "a>b,b>c,a>c"}
LOSSES = ("ipo", "dpo")
LR = 0.01
STEPS = 18_000
BATCH_SIZE = 9
SEEDS = 10
RECORDS = 200  # learning-curve points, log-spaced in the step number


def parse_pairs(spec: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Parse "a>b,b>c" into action names (in order of appearance) and (winner, loser) indices."""
    actions: list[str] = []
    pairs: list[tuple[int, int]] = []
    for item in spec.split(","):
        names = [name.strip() for name in item.split(">")]
        if len(names) != 2 or not all(names) or names[0] == names[1]:
            raise ValueError(f"expected 'winner>loser' with two different actions, got {item!r}")
        for name in names:
            if name not in actions:
                actions.append(name)
        pairs.append((actions.index(names[0]), actions.index(names[1])))
    return actions, pairs


def preference_loss(
    chosen_logratios: torch.Tensor,
    rejected_logratios: torch.Tensor,
    loss: str,
    beta: float | torch.Tensor,
) -> torch.Tensor:
    """Per-pair loss from log(pi/pi_ref) of the winner and the loser.

    "dpo": -log sigmoid(beta * h), TRL's loss_type "sigmoid".
    "ipo": (h - 1/(2 beta))^2, TRL's loss_type "ipo" (Eq. 17 of the paper, beta = tau). TRL feeds
    it log-ratios averaged over each completion's tokens; a bandit action is a single token.
    """
    h = chosen_logratios - rejected_logratios
    if loss == "dpo":
        return -F.logsigmoid(beta * h)
    if loss == "ipo":
        return (h - 1 / (2 * beta)) ** 2
    raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")


def closed_form_ipo(n_actions: int, pairs: list[tuple[int, int]], tau: float) -> np.ndarray:
    """Action probabilities at the minimum of the IPO loss over the pair list (module docstring)."""
    design = np.zeros((len(pairs), n_actions))
    for row, (winner, loser) in enumerate(pairs):
        design[row, winner] += 1.0
        design[row, loser] -= 1.0
    target = np.full(len(pairs), 1 / (2 * tau))
    theta = np.linalg.lstsq(design, target, rcond=None)[0]
    probs = np.exp(theta - theta.max())
    return probs / probs.sum()


@dataclass
class Run:
    """Probabilities from one simulation over several taus and seeds."""

    taus: tuple[float, ...]
    final: np.ndarray  # [tau, seed, action] at the last step
    curve: np.ndarray  # [record, tau, action], mean over seeds
    steps: np.ndarray  # [record] step number of each record


def simulate(
    n_actions: int,
    pairs: list[tuple[int, int]],
    loss: str,
    taus: tuple[float, ...],
    seeds: int = SEEDS,
    steps: int = STEPS,
) -> Run:
    """Train one softmax policy per (tau, seed), all as rows of one theta updated by one Adam.

    Adam's update is elementwise, so the rows do not interact. theta starts at 0 (pi = pi_ref).
    Seed s draws its mini-batches from torch.Generator().manual_seed(s), shared across taus.
    """
    winners = torch.tensor([w for w, _ in pairs])
    losers = torch.tensor([loser for _, loser in pairs])
    draws = [
        torch.randint(
            len(pairs), (steps, BATCH_SIZE), generator=torch.Generator().manual_seed(seed)
        )
        for seed in range(seeds)
    ]
    # [step, tau * seed, batch], row = tau_index * seeds + seed
    batches = torch.stack(draws, dim=1).repeat(1, len(taus), 1)
    beta = torch.tensor(taus, dtype=torch.float32).repeat_interleave(seeds)[:, None]
    theta = torch.zeros(len(taus) * seeds, n_actions, requires_grad=True)
    optimizer = torch.optim.Adam([theta], lr=LR)
    ref_logp = -float(np.log(n_actions))
    record_at = set(np.geomspace(1, steps, RECORDS).round().astype(int).tolist())

    def snapshot() -> torch.Tensor:
        return torch.softmax(theta.detach(), dim=-1).view(len(taus), seeds, n_actions)

    records = [(0, snapshot())]
    for step in range(steps):
        logp = torch.log_softmax(theta, dim=-1)
        chosen = logp.gather(1, winners[batches[step]]) - ref_logp
        rejected = logp.gather(1, losers[batches[step]]) - ref_logp
        optimizer.zero_grad()
        preference_loss(chosen, rejected, loss, beta).mean(dim=1).sum().backward()
        optimizer.step()
        if step + 1 in record_at:
            records.append((step + 1, snapshot()))
    final = records[-1][1].numpy()
    curve = np.stack([probs.mean(dim=1).numpy() for _, probs in records])
    return Run(taus, final, curve, np.array([step for step, _ in records]))


def run_grid(datasets: dict[str, str], seeds: int, steps: int) -> dict[tuple[str, str], Run]:
    """Both losses at every tau in TAUS on each named pair list."""
    grid = {}
    for name, spec in datasets.items():
        actions, pairs = parse_pairs(spec)
        for loss in LOSSES:
            grid[name, loss] = simulate(len(actions), pairs, loss, TAUS, seeds, steps)
    return grid


def _fmt(probs: np.ndarray) -> str:
    return ", ".join(f"{p:.3f}" for p in probs)


def format_table(datasets: dict[str, str], grid: dict[tuple[str, str], Run]) -> str:
    """Markdown table of final probabilities (mean over seeds) and the closed-form IPO optimum."""
    lines = [
        "| dataset | actions | tau | IPO simulated | IPO closed form | DPO simulated |",
        "|---|---|---|---|---|---|",
    ]
    for name, spec in datasets.items():
        actions, pairs = parse_pairs(spec)
        for i, tau in enumerate(TAUS):
            ipo = grid[name, "ipo"].final[i].mean(axis=0)
            dpo = grid[name, "dpo"].final[i].mean(axis=0)
            exact = closed_form_ipo(len(actions), pairs, tau)
            lines.append(
                f"| {name} (`{spec}`) | {', '.join(actions)} | {tau:g} "
                f"| {_fmt(ipo)} | {_fmt(exact)} | {_fmt(dpo)} |"
            )
    return "\n".join(lines)


def plot_grid(datasets: dict[str, str], grid: dict[tuple[str, str], Run], path: Path) -> None:
    """Learning curves: one row per (dataset, loss), one column per tau; dashed = IPO optimum."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(grid)
    fig, axes = plt.subplots(
        len(rows), len(TAUS), figsize=(3.2 * len(TAUS), 2.4 * len(rows)), sharex=True, sharey=True
    )
    axes = np.atleast_2d(axes)
    for r, (name, loss) in enumerate(rows):
        actions, pairs = parse_pairs(datasets[name])
        run = grid[name, loss]
        for c, tau in enumerate(TAUS):
            ax = axes[r, c]
            exact = closed_form_ipo(len(actions), pairs, tau)
            for a, action in enumerate(actions):
                (line,) = ax.plot(run.steps, run.curve[:, c, a], label=f"pi({action})")
                if loss == "ipo":
                    ax.axhline(exact[a], color=line.get_color(), linestyle="--", linewidth=0.8)
            strength = "tau" if loss == "ipo" else "beta"
            ax.set_title(f"{loss.upper()}, {name}, {strength}={tau:g}", fontsize=9)
            ax.set_xscale("symlog", linthresh=1)
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            if c == 0:
                ax.set_ylabel("probability")
                ax.legend(fontsize=7, loc="center right")
            if r == len(rows) - 1:
                ax.set_xlabel("Adam step (log scale)")
    fig.suptitle("Action probabilities (mean over seeds); dashed: closed-form IPO optimum")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _single_run(args: argparse.Namespace) -> dict:
    """Print one run's table; return its JSON summary."""
    actions, pairs = parse_pairs(args.pairs)
    start = time.perf_counter()
    run = simulate(len(actions), pairs, args.loss, (args.tau,), args.seeds, args.steps)
    seconds = time.perf_counter() - start
    mean, std = run.final[0].mean(axis=0), run.final[0].std(axis=0)
    exact = closed_form_ipo(len(actions), pairs, args.tau)
    print(
        f"pairs {args.pairs}  loss {args.loss}  tau {args.tau:g}  seeds {args.seeds}  "
        f"steps {args.steps}  ({seconds:.1f} s)"
    )
    print(f"{'action':>8} {'simulated':>10} {'std':>8} {'closed-form IPO':>16}")
    for a, action in enumerate(actions):
        print(f"{action:>8} {mean[a]:>10.4f} {std[a]:>8.4f} {exact[a]:>16.4f}")
    return {
        "pairs": args.pairs,
        "loss": args.loss,
        "tau": args.tau,
        "seeds": args.seeds,
        "steps": args.steps,
        "seconds": round(seconds, 2),
        "probs": dict(zip(actions, mean.tolist(), strict=True)),
        "probs_std": dict(zip(actions, std.tolist(), strict=True)),
        "closed_form": dict(zip(actions, exact.tolist(), strict=True)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="a>b,b>c,a>c", help='preference pairs, e.g. "a>b,b>c"')
    parser.add_argument("--loss", choices=LOSSES, default="ipo")
    parser.add_argument("--tau", type=float, default=0.5, help="tau for IPO, beta for DPO")
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument(
        "--table",
        action="store_true",
        help=f"markdown table for both paper datasets, both losses, tau in {TAUS}",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        help="PNG of learning curves, both losses, tau in TAUS: for --pairs, or with --table "
        "for both paper datasets",
    )
    args = parser.parse_args(argv)
    if args.table and args.json:
        parser.error("--json reports a single run; drop it with --table")
    torch.set_num_threads(1)  # tensors of a few dozen numbers: extra threads only contend
    summary = None
    if args.table:
        datasets = PAPER_DATASETS
        start = time.perf_counter()
        grid = run_grid(datasets, args.seeds, args.steps)
        print(f"seeds {args.seeds}, steps {args.steps}, {time.perf_counter() - start:.1f} s\n")
        print(format_table(datasets, grid))
    else:
        summary = _single_run(args)
        datasets = {args.pairs: args.pairs}
        grid = run_grid(datasets, args.seeds, args.steps) if args.plot else {}
    if args.plot:
        plot_grid(datasets, grid, args.plot)
        print(f"wrote {args.plot}")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()

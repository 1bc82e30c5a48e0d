"""research/skill_study/pool_replicates.py: replicates are averaged per held-out row, then
compared."""

from __future__ import annotations

import json

import pytest

from helpers import load_script

pool = load_script("research/skill_study/pool_replicates.py")


def report(tmp_path, seed, arm, versus):
    path = tmp_path / f"seed{seed}.json"
    path.write_text(json.dumps({"study": {"seed": str(seed)}, "arms": {
        "arm": {"scores": arm}, "sft": {"scores": versus}}}))
    return path


def test_pooled_change_is_the_mean_over_rows_of_the_replicates_mean(tmp_path, capsys):
    a = report(tmp_path, 1, [1, 1, 0, 0], [1, 0, 0, 0])  # +0.25
    b = report(tmp_path, 2, [1, 1, 1, 0], [1, 0, 0, 0])  # +0.50
    assert pool.main([str(a), str(b), "--arm", "arm", "--versus", "sft",
                      "--json", str(tmp_path / "out.json")]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])["comparisons"][0]
    assert result["change"] == pytest.approx(0.375) and result["rows"] == 4
    assert result["accuracy"] == pytest.approx(0.625) and result["versus_accuracy"] == 0.25
    assert [r["change"] for r in result["per_replicate"]] == [0.25, 0.5]
    assert [r["seed"] for r in result["per_replicate"]] == ["1", "2"]
    # over seeds: mean 0.375, sd 0.177, t(1) 12.706 -> half-width 12.706 * 0.125 = 1.588
    assert result["seed_ci"] == pytest.approx([0.375 - 1.5883, 0.375 + 1.5883], abs=1e-3)
    lo, hi = result["ci"]
    assert 0 <= lo <= 0.375 <= hi <= 0.75
    assert json.loads((tmp_path / "out.json").read_text())["comparisons"][0] == result


def test_replicates_without_scores_or_of_other_rows_are_refused(tmp_path):
    a = report(tmp_path, 1, [1, 0], [0, 0])
    b = report(tmp_path, 2, [1, 0, 1], [0, 0, 0])
    with pytest.raises(SystemExit, match="different numbers of held-out rows"):
        pool.main([str(a), str(b), "--arm", "arm", "--versus", "sft"])
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"arms": {"arm": {"accuracy": 0.5}, "sft": {"scores": [0]}}}))
    with pytest.raises(SystemExit, match="no per-row scores; rerun the study"):
        pool.main([str(old), "--arm", "arm", "--versus", "sft"])
    with pytest.raises(SystemExit, match="no arm 'ipo'"):
        pool.main([str(a), "--arm", "ipo", "--versus", "sft"])


def test_the_seed_interval_is_a_t_interval_over_the_replicates_changes():
    assert pool.seed_interval([0.1]) is None
    lo, hi = pool.seed_interval([0.04, 0.03, -0.025, 0.055, 0.03])
    # mean 0.026, sd 0.0303, t(4) 2.776: 0.026 -+ 0.0376
    assert (lo, hi) == pytest.approx((-0.0116, 0.0636), abs=5e-4)


def test_two_runs_of_one_replicate_are_merged_only_when_their_shared_arms_agree(tmp_path,
                                                                                  capsys):
    def run(name, study, arms):
        path = tmp_path / name
        path.write_text(json.dumps({"study": study, "arms": {
            arm: {"scores": scores} for arm, scores in arms.items()}}))
        return str(path)

    study = {"seed": "7", "steps": "240"}
    old = run("old.json", study, {"sft": [1, 0, 1, 0], "sft-s300": [1, 0, 0, 0]})
    new = run("new.json", study, {"sft": [1, 0, 1, 0], "rounds": [1, 1, 1, 0]})
    assert pool.main([f"{new}+{old}", "--arm", "rounds", "--versus", "sft-s300"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])["comparisons"][0]
    assert result["change"] == pytest.approx(0.5) and result["per_replicate"][0]["seed"] == "7"
    retrained = run("retrained.json", study, {"sft": [1, 1, 1, 0], "rounds": [1, 1, 1, 0]})
    with pytest.raises(SystemExit, match="arm 'sft' scores differently .* at 1 rows"):
        pool.main([f"{retrained}+{old}", "--arm", "rounds", "--versus", "sft-s300"])
    moved = run("moved.json", {**study, "work": "elsewhere"}, {"rounds": [1, 1, 1, 0]})
    assert pool.main([f"{moved}+{old}", "--arm", "rounds", "--versus", "sft-s300"]) == 0
    other = run("other.json", {"seed": "11", "steps": "240"}, {"rounds": [1, 1, 1, 0]})
    with pytest.raises(SystemExit, match="study settings differ: seed"):
        pool.main([f"{other}+{old}", "--arm", "rounds", "--versus", "sft-s300"])


def test_several_arms_against_one_versus_are_pooled_and_plotted(tmp_path, capsys):
    def run(seed, arms):
        path = tmp_path / f"s{seed}.json"
        path.write_text(json.dumps({"study": {"seed": str(seed)}, "arms": {
            arm: {"scores": scores} for arm, scores in arms.items()}}))
        return str(path)

    a = run(1, {"sft": [1, 0, 0, 0], "rounds": [1, 1, 0, 0], "restart": [1, 1, 1, 0]})
    b = run(2, {"sft": [0, 0, 0, 0], "rounds": [1, 1, 1, 0], "restart": [1, 0, 0, 0]})
    png = tmp_path / "plots" / "forest.png"
    assert pool.main([a, b, "--arm", "rounds", "--arm", "restart", "--arm", "sft",
                      "--versus", "sft", "--label", "rounds=two rounds", "--target", "0.03",
                      "--plot", str(png)]) == 0
    results = json.loads(capsys.readouterr().out.splitlines()[-1])["comparisons"]
    # sft against itself is left out; each arm's change is its own mean over the replicates
    assert [(r["arm"], r["versus"]) for r in results] == [("rounds", "sft"), ("restart", "sft")]
    assert [r["change"] for r in results] == pytest.approx([0.5, 0.375])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    with pytest.raises(SystemExit):
        pool.main([a, "--arm", "sft", "--versus", "sft"])
    with pytest.raises(SystemExit):
        pool.main([a, "--arm", "rounds", "--versus", "sft", "--label", "no-equals-sign"])

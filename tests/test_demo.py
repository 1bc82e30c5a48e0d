"""scripts/demo.sh: it sets up the newest supported release; its study command is one
`research/skill_study/skill_study.py` accepts, compares the rounds with the restart control at
equal steps after SFT, and `demo.sh nq` keeps the NQ-open job on a config that exists."""

import shlex

from helpers import REPO, load_script

skill_study = load_script("research/skill_study/skill_study.py")
DEMO = (REPO / "scripts/demo.sh").read_text(encoding="utf-8")


def study_argv() -> list[str]:
    """The arguments demo.sh passes to skill_study.py (continuation lines joined)."""
    line = next(x for x in DEMO.replace("\\\n", " ").splitlines() if "skill_study.py" in x)
    words = shlex.split(line, comments=True)
    return words[words.index("research/skill_study/skill_study.py") + 1:]


def test_the_demo_runs_a_study_skill_study_accepts():
    study, arms, args = skill_study.parse_args(study_argv())
    assert arms == ["sft", "sft_then_sft-s60", "sft_then_selfplay_sft_2@1.0-s30"]
    assert args.versus == ("sft_then_sft-s60",)
    rounds, control = skill_study.parse_arm(arms[2]), skill_study.parse_arm(arms[1])
    # equal optimizer steps after the same SFT start: two rounds of 30 against 60 of SFT
    assert rounds.round * rounds.steps == control.steps == 60
    assert study.steps == 240 and study.check == "number" and study.num_samples == 4
    for path in (args.train, args.heldout):
        assert str(path).startswith(".cache/data/add_")  # written by prepare_tasks.py --task add
    assert "scripts/prepare_tasks.py --task add" in DEMO


def test_demo_nq_runs_an_example_config():
    start = DEMO.index("= nq ]")
    nq = DEMO[start:DEMO.index("\nfi\n", start)]
    config = nq.split("config=")[1].split()[0]
    assert (REPO / config).is_file()
    assert "axolotl.cli.train" in nq and "axolotl-ipo eval" in nq


def test_the_demo_sets_up_the_newest_supported_release():
    """The newest release seeds the LoRA initialisation itself, so a rerun of the demo repeats
    its numbers; demo.sh reads it (and its environment) from releases.txt."""
    import subprocess

    line = next(x for x in DEMO.replace("\\\n", " ").splitlines() if x.startswith("read -r"))
    got = subprocess.run(["bash", "-c", f'{line}; echo "$release $venv"'], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.split()
    releases = [x.split() for x in (REPO / "axolotl_ipo/upstream/releases.txt").read_text()
                .splitlines() if x.strip() and not x.startswith("#")]
    newest = max(releases, key=lambda r: tuple(map(int, r[0].split("."))))
    assert got == newest
    assert 'setup_env.sh "$release" "$venv"' in DEMO and 'prepare_assets.sh "$venv"' in DEMO
    assert ".venv/" not in DEMO  # every command runs in that environment

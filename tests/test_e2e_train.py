"""IPO through the real Axolotl CLI on a tiny model: the one-flag path, launched three ways."""

import sys

import pytest

from helpers import axolotl, base_config, read_metrics, run, sft_config, write_config

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_rl_ipo_trains_with_ipo_loss(tiny_model_dir, tmp_path, tau):
    cfg = write_config(tmp_path, base_config(tiny_model_dir, tmp_path, rl="ipo", ipo_tau=tau,
                                                  ipo_sft_weight=0))
    code, log = run(axolotl("train", cfg), tmp_path)
    assert code == 0, log[-3000:]
    out = tmp_path / "out"
    assert (out / "adapter_model.safetensors").is_file()
    begin, steps = read_metrics(out)
    assert begin["loss_type"] == ["ipo"] and begin["beta"] == pytest.approx(tau)
    # Step 0: policy == reference (LoRA B starts at zero), so every log-ratio is 0 and
    # TRL's IPO loss is (0 - 1/(2*tau))^2: 25 at tau 0.1, 1 at tau 0.5.
    assert steps[0]["loss"] == pytest.approx((1 / (2 * tau)) ** 2, abs=1e-3)
    assert "will soon be deprecated" not in log


def test_accelerate_launch(tiny_model_dir, tmp_path):
    cfg = write_config(tmp_path, base_config(tiny_model_dir, tmp_path, rl="ipo", ipo_tau=0.1,
                                                  ipo_sft_weight=0))
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1",
            "-m", "axolotl.cli.train", str(cfg)]
    code, log = run(argv, tmp_path)
    assert code == 0, log[-3000:]
    _, steps = read_metrics(tmp_path / "out")
    assert steps[0]["loss"] == pytest.approx(25.0, abs=1e-3)


def test_two_cpu_ranks_train_one_model(tiny_model_dir, tmp_path):
    overrides = {"rl": "ipo", "ipo_tau": 0.1, "ipo_sft_weight": 0,
                 "plugins": ["axolotl_ipo.IPOPlugin", "rank_probe.RankProbePlugin"]}
    cfg = write_config(tmp_path, base_config(tiny_model_dir, tmp_path, **overrides))
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "axolotl.cli.train", str(cfg)]
    code, log = run(argv, tmp_path)
    assert code == 0, log[-3000:]
    out = tmp_path / "out"
    begin, steps = read_metrics(out)
    assert begin["world_size"] == 2
    assert begin["global_batch_size"] == 2 * 2  # 2 ranks x micro_batch_size 2
    # 16 pairs / global batch 4 = 4 steps per epoch: one step is a quarter epoch.
    assert steps[0]["epoch"] == pytest.approx(0.25)
    digests = {(out / f"rank{r}.digest").read_text() for r in (0, 1)}
    assert len(digests) == 1, "the ranks trained different weights (no gradient sync)"
    assert steps[0]["loss"] == pytest.approx(25.0, abs=1e-3)


def test_axolotl_train_command(tiny_model_dir, tmp_path):
    """The command the README recommends: `axolotl train` (it re-launches through accelerate),
    on SFT rows, so sampling and IPO both run under it."""
    import os
    from pathlib import Path

    cfg = write_config(tmp_path, sft_config(tiny_model_dir, tmp_path))
    bin_dir = Path(sys.executable).parent  # `axolotl` and `accelerate` of this environment
    path = os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])
    code, log = run([str(bin_dir / "axolotl"), "train", str(cfg)], tmp_path,
                    extra_env={"PATH": path})
    assert code == 0, log[-3000:]
    _, steps = read_metrics(tmp_path / "out")
    assert steps[0]["loss"] == pytest.approx(25.0, abs=1e-3)
    assert "pairs out" in log and (tmp_path / "out" / "adapter_model.safetensors").is_file()


def test_a_seed_gives_the_same_adapter(tiny_model_dir, tmp_path):
    """`seed` fixes the run: two trainings of one config write the same adapter, another seed
    another one (Axolotl 0.19 draws the LoRA initialisation from an unseeded generator; the
    plugin seeds it)."""
    from safetensors.torch import load_file

    def adapter(name, seed):
        work = tmp_path / name
        work.mkdir()
        cfg = write_config(work, base_config(tiny_model_dir, work, rl="ipo", ipo_tau=0.1,
                                             seed=seed))
        code, log = run(axolotl("train", cfg), work)
        assert code == 0, log[-3000:]
        return load_file(work / "out" / "adapter_model.safetensors")

    first, again, other = adapter("a", 42), adapter("b", 42), adapter("c", 7)
    assert first.keys() == again.keys() == other.keys()
    assert all((first[k] == again[k]).all() for k in first)
    assert any((first[k] != other[k]).any() for k in first)

"""`axolotl-ipo --version` and `axolotl-ipo check` as a user runs them."""

from axolotl_ipo import __version__
from axolotl_ipo.upstream import axolotl as upstream_axolotl

from helpers import axolotl_ipo, base_config, run, write_config


def test_version(tmp_path):
    code, log = run(axolotl_ipo("--version"), tmp_path)
    assert code == 0 and log.strip() == f"axolotl-ipo {__version__}"


def test_check_prints_resolved_ipo_settings(tiny_model_dir, tmp_path):
    cfg = write_config(tmp_path, base_config(tiny_model_dir, tmp_path, rl="ipo", ipo_tau=0.25))
    code, log = run(axolotl_ipo("check", str(cfg)), tmp_path)
    assert code == 0, log[-2000:]
    # the default NLL term: weight 2/tau = 8 at tau 0.25
    assert "rl: dpo" in log and "dpo_loss_type: ['ipo', 'sft']" in log
    assert "ipo_sft_weight: 8.0" in log
    assert "ipo_tau (beta): 0.25" in log and "ipo_target_margin 1/(2*tau): 2.0" in log


def test_check_reports_a_bad_key_without_traceback(tiny_model_dir, tmp_path):
    cfg = write_config(tmp_path, base_config(tiny_model_dir, tmp_path, rl="ipo", ipo_tau=-1))
    code, log = run(axolotl_ipo("check", str(cfg)), tmp_path)
    assert code == 1
    assert "ipo_tau must be > 0, got -1" in log and "Traceback" not in log


def test_check_names_a_missing_plugin_where_axolotl_needs_it_listed(tiny_model_dir, tmp_path):
    raw = base_config(tiny_model_dir, tmp_path, rl="ipo")
    del raw["plugins"]
    cfg = write_config(tmp_path, raw)
    code, log = run(axolotl_ipo("check", str(cfg)), tmp_path)
    if upstream_axolotl.autoloads_entry_point_plugins():
        assert code == 0 and "dpo_loss_type: ['ipo', 'sft']" in log, log[-2000:]
    else:
        assert code == 1 and "add `plugins: [axolotl_ipo.IPOPlugin]`" in log


def test_check_missing_file(tmp_path):
    code, log = run(axolotl_ipo("check", str(tmp_path / "nope.yml")), tmp_path)
    assert code != 0 and "no config file at" in log


def test_commands_are_quiet_unless_verbose(tiny_model_dir, tmp_path):
    cfg = write_config(tmp_path, base_config(tiny_model_dir, tmp_path, rl="ipo"))
    code, quiet = run(axolotl_ipo("check", str(cfg)), tmp_path)
    assert code == 0, quiet[-2000:]
    assert quiet.splitlines()[0] == f"{cfg}: valid" and len(quiet.splitlines()) == 7, quiet
    code, verbose = run(axolotl_ipo("check", str(cfg), "-v"), tmp_path)
    assert code == 0 and '"axolotl_config_path"' in verbose  # Axolotl's config dump
    assert all(line in verbose for line in quiet.splitlines())

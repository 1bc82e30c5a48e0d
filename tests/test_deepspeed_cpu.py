"""DeepSpeed where it cannot run: on CPU-only ranks a `deepspeed:` config is refused in one line
through the real CLIs (`python -m axolotl.cli.train`, torchrun with 2 ranks, `accelerate
launch`), never trained as plain DDP; an accelerate launch that started one process where more
were asked for is warned about."""

import sys

import pytest

from axolotl_ipo import distributed
from axolotl_ipo.errors import UserError
from axolotl_ipo.upstream.accelerate import single_process_launch_of_many

from helpers import REPO, axolotl, base_config, run, write_config

ZERO2 = str(REPO / "example_configs" / "deepspeed" / "zero2-no-offload.json")
ZERO3 = str(REPO / "example_configs" / "deepspeed" / "zero3_bf16.json")
REFUSAL = ("axolotl-ipo: error: deepspeed: ", "DeepSpeed cannot train on CPU ranks",
           "run on CUDA GPUs, or remove `deepspeed:`")


def ipo_config(tiny_model_dir, tmp_path, **overrides):
    return write_config(tmp_path, base_config(tiny_model_dir, tmp_path, rl="ipo",
                                              ipo_tau=0.1, **overrides))


def assert_refused(code: int, log: str) -> None:
    assert code != 0, log[-3000:]
    lines = [line for line in log.splitlines() if line.startswith("axolotl-ipo: error:")]
    assert lines and all(part in lines[0] for part in REFUSAL), log[-3000:]
    assert "Traceback" not in log.split("accelerate.commands.launch")[0], log[-3000:]


def test_deepspeed_is_refused_without_cuda(monkeypatch):
    monkeypatch.setattr(distributed, "cuda_available", lambda: False)
    with pytest.raises(UserError, match=r"^deepspeed: ds\.json is set, but this process has no "
                       r"CUDA GPU: DeepSpeed cannot train on CPU ranks"):
        distributed.refuse_deepspeed_without_cuda({"deepspeed": "ds.json"})
    distributed.refuse_deepspeed_without_cuda({"deepspeed": None})  # no key: nothing to refuse
    with distributed.validating_only():  # `axolotl-ipo check` validates, trains nothing
        distributed.refuse_deepspeed_without_cuda({"deepspeed": "ds.json"})
    monkeypatch.setattr(distributed, "cuda_available", lambda: True)
    distributed.refuse_deepspeed_without_cuda({"deepspeed": "ds.json"})


@pytest.mark.e2e
@pytest.mark.parametrize("ds_config", [ZERO2, ZERO3], ids=["zero2", "zero3"])
def test_train_refuses_deepspeed_on_a_cpu_rank(tiny_model_dir, tmp_path, ds_config):
    cfg = ipo_config(tiny_model_dir, tmp_path, deepspeed=ds_config)
    code, log = run(axolotl("train", cfg), tmp_path, extra_env={"CUDA_VISIBLE_DEVICES": ""})
    assert_refused(code, log)
    assert not (tmp_path / "out" / "ipo_metrics.jsonl").exists(), "nothing trained"


@pytest.mark.e2e
def test_two_cpu_ranks_refuse_deepspeed_instead_of_training_ddp(tiny_model_dir, tmp_path):
    """What used to "succeed" as plain DDP (ZeRO-2 under torchrun, ACCELERATE_USE_CPU)."""
    cfg = ipo_config(tiny_model_dir, tmp_path, deepspeed=ZERO2)
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            "2", "-m", "axolotl.cli.train", str(cfg)]
    code, log = run(argv, tmp_path, extra_env={"CUDA_VISIBLE_DEVICES": ""})
    assert code != 0 and log.count("DeepSpeed cannot train on CPU ranks") == 2, log[-3000:]
    assert not (tmp_path / "out" / "ipo_metrics.jsonl").exists(), "nothing trained"


@pytest.mark.e2e
def test_accelerate_cpu_launch_of_two_warns_it_started_one(tiny_model_dir, tmp_path):
    """`accelerate launch --cpu --num_processes 2` runs ONE process: warned in one line (the
    config's DeepSpeed key then ends the run before any training)."""
    cfg = ipo_config(tiny_model_dir, tmp_path, deepspeed=ZERO2)
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "axolotl.cli.train", str(cfg)]
    code, log = run(argv, tmp_path, extra_env={"CUDA_VISIBLE_DEVICES": ""})
    warnings = [line for line in log.splitlines() if "started one (world size 1)" in line]
    assert len(warnings) == 1, log[-3000:]
    assert "accelerate launch --multi_gpu --num_processes N --num_machines 1" in warnings[0]
    assert code != 0 and "DeepSpeed cannot train on CPU ranks" in log, log[-3000:]


@pytest.mark.parametrize(("env", "warned"), [
    ({"ACCELERATE_DYNAMO_BACKEND": "NO", "MASTER_ADDR": "127.0.0.1"}, True),  # --cpu -n 2
    ({"ACCELERATE_DYNAMO_BACKEND": "NO"}, False),  # accelerate launch, one process asked for
    ({"ACCELERATE_DYNAMO_BACKEND": "NO", "MASTER_ADDR": "h", "WORLD_SIZE": "2"}, False),
    ({"MASTER_ADDR": "127.0.0.1"}, False),  # not launched by accelerate
])
def test_single_process_launch_signature(env, warned):
    assert single_process_launch_of_many(env) is warned


def test_the_warning_is_one_line(monkeypatch, caplog):
    for key in ("WORLD_SIZE", "MASTER_ADDR", "ACCELERATE_DYNAMO_BACKEND"):
        monkeypatch.delenv(key, raising=False)
    distributed.warn_single_process_launch()
    assert not caplog.records
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "NO")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    with caplog.at_level("WARNING", logger="axolotl_ipo"):
        distributed.warn_single_process_launch()
    (record,) = caplog.records
    assert "\n" not in record.getMessage() and "--multi_gpu" in record.getMessage()


@pytest.mark.parametrize(("argv", "warned"), [
    (["--cpu", "--num_processes", "2"], True),
    (["--num_processes", "3"], True),  # more processes than GPUs, no --multi_gpu (no GPU here)
    (["--cpu", "--num_processes", "1"], False),
])
def test_the_signature_is_what_the_installed_accelerate_launcher_sets(argv, warned, monkeypatch):
    """Run the installed accelerate's own simple launcher setup (what `accelerate launch`
    without --multi_gpu uses): the environment it gives its one process."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_simple_launcher_cmd_env

    for key in ("WORLD_SIZE", "MASTER_ADDR", "ACCELERATE_DYNAMO_BACKEND"):
        monkeypatch.delenv(key, raising=False)
    args = launch_command_parser().parse_args([*argv, "--num_machines", "1", "--mixed_precision",
                                               "no", "--dynamo_backend", "no", "train.py"])
    args, _, _ = _validate_launch_command(args)
    _, env = prepare_simple_launcher_cmd_env(args)
    assert single_process_launch_of_many(env) is warned


@pytest.mark.e2e
def test_accelerate_multi_gpu_launch_gives_two_cpu_ranks(tiny_model_dir, tmp_path):
    """The documented accelerate launch for N CPU ranks (no GPU): one model on 2 ranks."""
    from helpers import read_metrics

    cfg = ipo_config(tiny_model_dir, tmp_path, max_steps=2)
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
            "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", "0", "-m", "axolotl.cli.train", str(cfg)]
    code, log = run(argv, tmp_path, extra_env={"CUDA_VISIBLE_DEVICES": ""})
    assert code == 0, log[-3000:]
    assert "started one (world size 1)" not in log
    begin, steps = read_metrics(tmp_path / "out")
    assert begin["world_size"] == 2 and len(steps) == 2, begin


def test_the_docs_say_deepspeed_has_not_run():
    """Until the GPU check's DeepSpeed steps run on a GPU, nothing claims DeepSpeed works."""
    readme = " ".join((REPO / "README.md").read_text().split())
    gpu = " ".join((REPO / "docs" / "gpu.md").read_text().split())
    assert "validated on CPU" not in readme and "DeepSpeed keep working" not in readme
    assert "**DeepSpeed has not been run yet**" in readme
    assert "**The DeepSpeed steps have not run on a GPU yet**" in gpu

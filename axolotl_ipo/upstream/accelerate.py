"""The accelerate adapter: what its launcher leaves in a process's environment.

`accelerate launch` without `--multi_gpu` (for example `--cpu --num_processes 2`, or more
processes than GPUs) runs its *simple* launcher, which starts ONE process whatever
`--num_processes` says. That launcher (`accelerate.utils.launch.prepare_simple_launcher_cmd_env`,
accelerate 1.13-1.15) sets `ACCELERATE_DYNAMO_BACKEND` for every launch and `MASTER_ADDR` only
when more than one process (or machine) was asked for, and never `WORLD_SIZE`, which the
multi-process launcher (torchrun's) always sets. tests/test_upstream.py runs that function on
the installed release and checks this signature.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# Every accelerate name this module relies on; tests/test_upstream.py resolves each.
REQUIRED = (
    "accelerate.utils.launch:prepare_simple_launcher_cmd_env",
    # tests/test_deepspeed_cpu.py builds the launcher's arguments with these two
    "accelerate.commands.launch:launch_command_parser",
    "accelerate.commands.launch:_validate_launch_command",
)

LAUNCHED_BY_ACCELERATE = "ACCELERATE_DYNAMO_BACKEND"  # set by every accelerate launcher


def single_process_launch_of_many(env: Mapping[str, str] | None = None) -> bool:
    """True in a process that `accelerate launch` started alone although more than one
    process was asked for (its simple launcher; world size 1)."""
    env = os.environ if env is None else env
    return LAUNCHED_BY_ACCELERATE in env and "MASTER_ADDR" in env and "WORLD_SIZE" not in env

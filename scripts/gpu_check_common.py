"""What scripts/gpu_check.py and scripts/gpu_check_tier2.py share (neither imports the other's
module object back: gpu_check.py imports gpu_check_tier2, which imports only this)."""


class Skip(Exception):
    """The step cannot run here; the message says why."""

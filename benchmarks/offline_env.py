"""The environment every benchmark and test (tests/conftest.py imports it) runs Axolotl in:
offline, no telemetry (Axolotl's posthog client hangs at exit without network unless tracking
is off)."""

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "AXOLOTL_DO_NOT_TRACK": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

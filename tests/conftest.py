import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # helpers, tiny_model, user_checks, ...

from helpers import OFFLINE_ENV, REPO  # noqa: E402

os.environ.update(OFFLINE_ENV)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from tiny_model import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


SMOLLM2_DIR = REPO / ".cache" / "models" / "SmolLM2-135M-Instruct"
NQ_DIR = REPO / ".cache" / "data"


@pytest.fixture(scope="session")
def smollm2() -> tuple[Path, Path]:
    """(SmolLM2-135M-Instruct folder, NQ-open data folder), made by scripts/prepare_assets.sh.
    Skipped when absent, except under scripts/test.sh (AXOLOTL_IPO_REQUIRE_SMOLLM2=1)."""
    found = (SMOLLM2_DIR / "config.json").is_file() and (NQ_DIR / "nq_open_train.jsonl").is_file()
    if not found:
        message = f"{SMOLLM2_DIR} or {NQ_DIR} missing: run bash scripts/prepare_assets.sh"
        if os.environ.get("AXOLOTL_IPO_REQUIRE_SMOLLM2") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return SMOLLM2_DIR, NQ_DIR

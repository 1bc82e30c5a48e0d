"""The research tests share the package tests' helpers (tests/helpers.py: the offline
environment, `load_script`, the config builders, the CLI runner) and fixtures (tests/conftest.py:
`tiny_model_dir`, `smollm2`)."""

import importlib.util
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

_spec = importlib.util.spec_from_file_location("axolotl_ipo_test_fixtures", TESTS / "conftest.py")
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
smollm2 = _fixtures.smollm2
tiny_model_dir = _fixtures.tiny_model_dir

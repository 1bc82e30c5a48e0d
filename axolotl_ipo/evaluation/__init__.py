"""Held-out evaluation: is the trained model better than the base on gold vs. own samples?

heldout (split -> prompts, golds, pairs) -> scoring (answer log-probs) -> metrics -> report.
"""

from .run import EvalSettings, ModelMetrics, evaluate_config

__all__ = ["EvalSettings", "ModelMetrics", "evaluate_config"]

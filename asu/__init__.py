"""Attention Smoothing Unlearning (ASU, ICLR 2026) as a plain library.

The forget teacher is the model itself with its attention logits divided by a temperature tau > 1; the
student is distilled toward it on the forget answers while a retain loss keeps everything else. This package
knows nothing about orchestration or tracking (no Prefect, MLflow or Great Expectations imports).
"""

from asu.config import ASUConfig
from asu.objectives import Objective, available_objectives, get_objective, register_objective
from asu.trainer import RoundResult, run_round

__all__ = [
    "ASUConfig",
    "Objective",
    "RoundResult",
    "available_objectives",
    "get_objective",
    "register_objective",
    "run_round",
]

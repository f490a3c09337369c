"""Attention Smoothing Unlearning (ASU, ICLR 2026) as a plain library.

The forget teacher is the model itself with its attention logits divided by a temperature tau > 1; the
student is distilled toward it on the forget answers while a retain loss keeps everything else. This package
knows nothing about orchestration or tracking (no Prefect, MLflow or Great Expectations imports).
"""

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from asu.config import ASUConfig
    from asu.objectives import Objective, available_objectives, get_objective, register_objective
    from asu.trainer import RoundResult, run_round

# Imported on first use (PEP 562): ``import asu.errors`` or ``asu.qa_file`` stays free of torch and transformers,
# so the intake and the ``asu`` command start fast and set their offline switches before transformers loads.
_LAZY = {
    "ASUConfig": "asu.config",
    "Objective": "asu.objectives",
    "available_objectives": "asu.objectives",
    "get_objective": "asu.objectives",
    "register_objective": "asu.objectives",
    "RoundResult": "asu.trainer",
    "run_round": "asu.trainer",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'asu' has no attribute {name!r}")


__all__ = [
    "ASUConfig",
    "Objective",
    "RoundResult",
    "available_objectives",
    "get_objective",
    "register_objective",
    "run_round",
]

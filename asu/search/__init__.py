"""Method-level pieces of the automatic temperature search (no orchestration, no tracking).

- ``tokens``: content vs function tokens of an answer (a documented stop-word rule);
- ``scores``: validation figures of a model on a QA set, forget score and retain score;
- ``scan``: stage 1, the teacher-only scan over a tau grid and its bracket;
- ``halving``: stage 2 trials (real rounds scored under floors), bisection over tau and successive halving;
- ``ladder``: stage 2, the default strategy: the round's strength, then every bracketed tau at it.

The pipeline step that wires them (split, floors, outcome, plot) is ``pipelines.temperature_search``.
"""

from asu.search.halving import Floors, TrialResult, rank, run_trial, rung_epochs, successive_halving, winner
from asu.search.ladder import ladder_search, outcome_status, strongest_safe
from asu.search.scan import BracketCriteria, ScanRow, bracket, scan_tau, scan_temperatures, spread, token_nlls
from asu.search.scores import SetFigures, combined_score, forget_score, retain_score, score_set
from asu.search.tokens import FUNCTION_WORDS, function_token_mask, is_function_word

__all__ = [
    "FUNCTION_WORDS",
    "BracketCriteria",
    "Floors",
    "ScanRow",
    "SetFigures",
    "TrialResult",
    "bracket",
    "combined_score",
    "forget_score",
    "function_token_mask",
    "is_function_word",
    "ladder_search",
    "outcome_status",
    "rank",
    "retain_score",
    "rung_epochs",
    "run_trial",
    "scan_tau",
    "scan_temperatures",
    "score_set",
    "spread",
    "strongest_safe",
    "successive_halving",
    "token_nlls",
    "winner",
]

"""Membership-inference attacks on per-token statistics, their AUC and privleak.

Each attack gives a loss-like score per item: higher = less likely a member (the reference framework's
convention). The AUC labels forget items 0 and holdout items 1, so AUC near 1 means the forget data still looks
memorised relative to the holdout, and about 0.5 means the two are indistinguishable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from asu.errors import UsageError
from asu.metrics.formulas import min_k_plus_plus_score, min_k_score, privleak, zlib_score
from asu.metrics.passes import TokenStats

Attack = Literal["loss", "zlib", "min_k", "min_k_plus_plus"]
ATTACKS: tuple[Attack, ...] = ("loss", "zlib", "min_k", "min_k_plus_plus")
PRIVLEAK_ATTACK: Attack = "min_k"  # privleak reads the Min-K% (k = 0.4) AUC, as the reference framework does


def attack_scores(stats: Sequence[TokenStats], texts: Sequence[str], k: float = 0.4) -> dict[Attack, list[float]]:
    """Per-item score of every attack. ``texts`` are the scored texts (ZLib normalises by their compressed size)."""
    return {
        "loss": [s.avg_loss for s in stats],
        "zlib": [zlib_score(s.avg_loss, t) for s, t in zip(stats, texts, strict=True)],
        "min_k": [min_k_score(s.logprobs, k) for s in stats],
        "min_k_plus_plus": [min_k_plus_plus_score(s.logprobs, s.mu, s.sigma, k) for s in stats],
    }


def auc(forget_scores: Sequence[float], holdout_scores: Sequence[float]) -> float:
    """ROC AUC of the scores with forget = 0, holdout = 1 (sklearn's ``roc_auc_score``, ties counted half)."""
    from sklearn.metrics import roc_auc_score

    if not len(forget_scores) or not len(holdout_scores):
        raise UsageError("MIA AUC needs at least one forget and one holdout item")
    labels = np.r_[np.zeros(len(forget_scores)), np.ones(len(holdout_scores))]
    return float(roc_auc_score(labels, np.r_[np.asarray(forget_scores, float), np.asarray(holdout_scores, float)]))


def mia_aucs(
    forget_stats: Sequence[TokenStats],
    forget_texts: Sequence[str],
    holdout_stats: Sequence[TokenStats],
    holdout_texts: Sequence[str],
    k: float = 0.4,
) -> tuple[dict[Attack, float], dict[str, dict[Attack, list[float]]]]:
    """AUC of every attack, and the per-item scores of both sets (``{"forget": ..., "holdout": ...}``)."""
    forget = attack_scores(forget_stats, forget_texts, k)
    holdout = attack_scores(holdout_stats, holdout_texts, k)
    return {a: auc(forget[a], holdout[a]) for a in ATTACKS}, {"forget": forget, "holdout": holdout}


__all__ = ["ATTACKS", "PRIVLEAK_ATTACK", "Attack", "attack_scores", "auc", "mia_aucs", "privleak"]

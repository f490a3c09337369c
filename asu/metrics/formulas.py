"""Pure metric formulas, as the reference framework (open-unlearning, commit d3d7cf9) implements them.

Inputs are plain floats, sequences or numpy arrays: per-item average answer losses (nats per token, answer
tokens only), per-token log-probabilities, token id sequences. No model calls here; the batched passes that
produce these inputs live beside this module. Scale: 0-1 (the ASU paper reports x100).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Literal

import numpy as np

from asu.errors import UsageError

TruthRatioAggregation = Literal["closer_to_1_better", "true_better", "prob_mean"]


def probability(avg_loss: float) -> float:
    """Length-normalised answer probability exp(-avg_loss) (geometric mean of the token probabilities)."""
    return math.exp(-avg_loss)


def normalised_option_probability(true_avg_loss: float, perturbed_avg_losses: Sequence[float]) -> float:
    """Real Authors / World Facts: P_true / (P_true + sum_j P_perturbed_j), each length-normalised."""
    p_true = probability(true_avg_loss)
    return p_true / (p_true + sum(probability(v) for v in perturbed_avg_losses))


def truth_ratio(correct_avg_loss: float, perturbed_avg_losses: Sequence[float]) -> float:
    """TR = P_wrong / P_correct with P_wrong the geometric mean over perturbed answers: exp(l_c - mean_j l_j).

    "correct" is the paraphrased answer on the forget and retain sets, the original answer on Real Authors and
    World Facts (the caller chooses which loss to pass).
    """
    if not perturbed_avg_losses:
        raise UsageError("truth_ratio needs at least one perturbed answer loss")
    return math.exp(correct_avg_loss - float(np.mean(perturbed_avg_losses)))


def aggregate_truth_ratios(
    ratios: Sequence[float],
    how: TruthRatioAggregation,
    *,
    correct_probs: Sequence[float] | None = None,
    wrong_probs: Sequence[float] | None = None,
) -> float:
    """Mean over items of min(TR, 1/TR) (forget set), max(0, 1 - TR) (retain, RA, WF), or P_c / (P_c + P_w)."""
    if how == "closer_to_1_better":
        values = [min(r, 1.0 / r) for r in ratios]
    elif how == "true_better":
        values = [max(0.0, 1.0 - r) for r in ratios]
    elif how == "prob_mean":
        if correct_probs is None or wrong_probs is None:
            raise UsageError("how='prob_mean' needs correct_probs and wrong_probs")
        values = [c / (c + w) for c, w in zip(correct_probs, wrong_probs, strict=True)]
    else:
        raise UsageError(f"unknown truth-ratio aggregation {how!r}; use closer_to_1_better, true_better or prob_mean")
    if not values:
        raise UsageError("no truth ratios to aggregate: the evaluation set is empty")
    return float(np.mean(values))


def forget_quality(forget_truth_ratios: Sequence[float], reference_truth_ratios: Sequence[float]) -> float:
    """p-value of the two-sample KS test between the model's and the retain model's per-item forget TRs."""
    from scipy.stats import ks_2samp

    if not forget_truth_ratios or not reference_truth_ratios:
        raise UsageError("forget quality needs per-item truth ratios of both the model and the reference model")
    return float(ks_2samp(forget_truth_ratios, reference_truth_ratios).pvalue)


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean of non-negative numbers; any zero gives 0 (model utility collapses)."""
    if not values:
        raise UsageError("harmonic mean of no values")
    if any(v < 0 for v in values):
        raise UsageError(f"harmonic mean needs non-negative values, got {list(values)}")
    if any(v == 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


def extraction_strength(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """1 - k/T for the smallest k with predictions[k:] == labels[k:] (teacher-forced argmax; EOS dropped)."""
    length = len(labels)
    if length == 0 or len(predictions) != length:
        raise UsageError("extraction_strength needs equally long, non-empty predictions and labels")
    for k in range(length + 1):
        if list(predictions[k:]) == list(labels[k:]):
            return 1.0 - k / length
    return 0.0  # unreachable: k = T always matches


def exact_memorization(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Share of positions where the teacher-forced argmax equals the label (EOS dropped by the caller)."""
    if len(labels) == 0 or len(predictions) != len(labels):
        raise UsageError("exact_memorization needs equally long, non-empty predictions and labels")
    return sum(p == t for p, t in zip(predictions, labels, strict=True)) / len(labels)


def zlib_score(avg_loss: float, text: str) -> float:
    """ZLib MIA score: avg_loss / len(zlib.compress(text)) (higher = less likely a member)."""
    return avg_loss / len(zlib.compress(text.encode("utf-8")))


def min_k_score(token_logprobs: Sequence[float], k: float = 0.4) -> float:
    """Min-K%: minus the mean of the lowest k-fraction of token log-probabilities (at least one token)."""
    values = np.sort(np.asarray(token_logprobs, dtype=float))
    count = max(1, int(len(values) * k))
    return float(-values[:count].mean())


def min_k_plus_plus_score(
    token_logprobs: Sequence[float], mu: Sequence[float], sigma: Sequence[float], k: float = 0.4
) -> float:
    """Min-K%++: z_t = (log p(x_t) - mu_t) / sigma_t with mu_t, sigma_t the mean and std of log p under p_t."""
    z = (np.asarray(token_logprobs, dtype=float) - np.asarray(mu, dtype=float)) / np.asarray(sigma, dtype=float)
    return min_k_score(z.tolist(), k)


def privleak(auc: float, reference_auc: float) -> float:
    """((1 - AUC) - (1 - AUC_ret)) / (1 - AUC_ret) x 100, AUC with forget = 0 and holdout = 1 labels.

    ~0 ideal; strongly negative = under-unlearned; strongly positive = over-unlearned.
    """
    if reference_auc >= 1.0:
        raise UsageError("reference AUC of 1 leaves privleak undefined; check the reference model's MIA result")
    return ((1.0 - auc) - (1.0 - reference_auc)) / (1.0 - reference_auc) * 100.0


def token_entropy(token_ids: Sequence[int]) -> float:
    """Normalised unigram entropy of a generation's tokens, in [0, 1] (the closer-look fluency score).

    H = -sum_v p_v ln p_v over the token frequencies p_v of the generation, divided by ln(n) for n tokens (the
    value when every token is distinct). 1 = no repeated token, near 0 = one token looping. A generation of fewer
    than two tokens scores 0: an empty or one-token answer is not fluent text.
    """
    n = len(token_ids)
    if n < 2:
        return 0.0
    _, counts = np.unique(np.asarray(token_ids), return_counts=True)
    p = counts / n
    return float(-(p * np.log(p)).sum() / math.log(n))


def repetition_rate(text: str, n: int = 3) -> float:
    """Share of repeated word n-grams in ``text`` (0 = no repeats, near 1 = a loop). Texts under n words: 0."""
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 0.0 if not grams else 1.0 - len(set(grams)) / len(grams)

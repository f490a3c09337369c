"""Metric formulas against the hand-computed checks of the reference framework (metrics.md) and scipy."""

import math

import pytest
from scipy.stats import hmean, ks_2samp

from asu.metrics import formulas as f


def test_probability_is_length_normalised():
    assert f.probability((0.1 + 0.3) / 2) == pytest.approx(0.81873, abs=1e-5)


def test_truth_ratio_and_its_aggregations():
    tr = f.truth_ratio(0.5, [1.0, 2.0])
    assert tr == pytest.approx(math.exp(-1), abs=1e-9)
    assert f.aggregate_truth_ratios([tr], "true_better") == pytest.approx(0.63212, abs=1e-5)
    assert f.aggregate_truth_ratios([tr], "closer_to_1_better") == pytest.approx(0.36788, abs=1e-5)
    assert f.aggregate_truth_ratios([1 / tr], "closer_to_1_better") == pytest.approx(0.36788, abs=1e-5)
    assert f.aggregate_truth_ratios([2.0], "true_better") == 0.0  # clipped at 0
    assert f.aggregate_truth_ratios([0.0], "prob_mean", correct_probs=[0.3], wrong_probs=[0.1]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="needs correct_probs"):
        f.aggregate_truth_ratios([1.0], "prob_mean")
    with pytest.raises(ValueError, match="evaluation set is empty"):
        f.aggregate_truth_ratios([], "true_better")


def test_normalised_option_probability():
    expected = math.exp(-0.5) / (math.exp(-0.5) + math.exp(-1.0) + math.exp(-2.0))
    assert f.normalised_option_probability(0.5, [1.0, 2.0]) == pytest.approx(expected)


def test_forget_quality_is_the_ks_p_value():
    a, b = [0.1, 0.4, 0.35, 0.8, 0.9], [0.2, 0.3, 0.5, 0.55, 0.95, 0.97]
    assert f.forget_quality(a, a) == 1.0
    assert f.forget_quality(a, b) == pytest.approx(ks_2samp(a, b).pvalue)
    assert f.forget_quality([0.01, 0.02, 0.03, 0.04], [0.9, 0.91, 0.92, 0.93]) < 0.05
    with pytest.raises(ValueError, match="reference model"):
        f.forget_quality(a, [])


def test_model_utility_harmonic_mean():
    values = [0.9, 0.8, 0.7, 0.5, 0.6, 0.4, 0.3, 0.95, 0.85]
    assert f.harmonic_mean(values) == pytest.approx(hmean(values))
    assert f.harmonic_mean([*values[:8], 0.0]) == 0.0


def test_extraction_strength_and_exact_memorization():
    a, b, c, d, x = 1, 2, 3, 4, 9
    assert f.extraction_strength([x, b, c, d], [a, b, c, d]) == 0.75
    assert f.exact_memorization([x, b, c, d], [a, b, c, d]) == 0.75
    assert f.extraction_strength([a, b, x, d], [a, b, c, d]) == 0.25
    assert f.exact_memorization([a, b, x, d], [a, b, c, d]) == 0.75
    assert f.extraction_strength([a, b, c, x], [a, b, c, d]) == 0.0


def test_membership_inference_scores_and_privleak():
    assert f.min_k_score([-0.1, -3.0, -0.2, -2.0, -0.5], k=0.4) == pytest.approx(2.5)
    assert f.min_k_plus_plus_score([-1.0, -2.0], mu=[-1.5, -1.0], sigma=[0.5, 1.0], k=0.5) == pytest.approx(1.0)
    assert f.zlib_score(2.0, "abc") == pytest.approx(2.0 / 11)
    assert f.privleak(0.9, 0.5) == pytest.approx(-80.0)
    assert f.privleak(0.5, 0.5) == pytest.approx(0.0)
    assert f.privleak(0.2, 0.5) == pytest.approx(60.0)


def test_token_entropy_hand_computed():
    from asu.metrics.formulas import token_entropy

    assert token_entropy([1, 2, 3, 4]) == pytest.approx(1.0)
    assert token_entropy([5, 5, 5, 5]) == pytest.approx(0.0)
    # [a, a, b, c]: p = (1/2, 1/4, 1/4); H = 1.5 ln 2; ln 4 = 2 ln 2 -> 0.75
    assert token_entropy([7, 7, 8, 9]) == pytest.approx(0.75)
    assert token_entropy([]) == 0.0 and token_entropy([3]) == 0.0


def test_truth_ratio_uses_the_geometric_mean_of_perturbed_probabilities_scipy():
    from scipy.stats import gmean

    correct, perturbed = 0.4, [0.9, 1.7, 2.2, 0.6, 3.1]
    p_w = gmean([math.exp(-v) for v in perturbed])
    assert f.truth_ratio(correct, perturbed) == pytest.approx(p_w / math.exp(-correct))
    ratios = [0.2, 0.9, 1.5, 3.0]
    assert f.aggregate_truth_ratios(ratios, "closer_to_1_better") == pytest.approx(
        float(sum(min(r, 1 / r) for r in ratios) / 4))
    assert f.aggregate_truth_ratios(ratios, "true_better") == pytest.approx((0.8 + 0.1 + 0 + 0) / 4)

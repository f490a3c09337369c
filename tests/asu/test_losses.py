"""Loss functions against values computed by hand on 2-3 token vocabularies."""

import math

import pytest
import torch

from asu.losses import (
    IGNORE_INDEX,
    TokenDistributions,
    compress_topk,
    distillation_loss,
    nll_loss,
    npo_loss,
    sequence_log_likelihood,
    token_kl,
)

X = IGNORE_INDEX


def logits_of(probs):
    """Logits whose softmax is ``probs`` (rows of a [B, T, V] nested list)."""
    return torch.tensor(probs, dtype=torch.float64).log().float()


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def test_token_kl_exact_matches_hand_value():
    p, q = [0.7, 0.2, 0.1], [0.5, 0.25, 0.25]
    target = TokenDistributions(logprobs=torch.tensor([p]).log())
    got = token_kl(target, torch.tensor([q]).log())
    assert got.item() == pytest.approx(kl(p, q), abs=1e-6)  # KL(teacher || student), not the reverse
    assert got.item() != pytest.approx(kl(q, p), abs=1e-3)


def test_token_kl_topk_with_tail_bucket():
    p, q = [0.6, 0.3, 0.1], [0.2, 0.3, 0.5]
    target = compress_topk(torch.tensor([p]).log(), k=1)  # keep token 0, tail = {1, 2}
    assert target.topk_ids.tolist() == [[0]]
    assert target.tail_logprobs.exp().item() == pytest.approx(0.4)
    got = token_kl(target, torch.tensor([q]).log()).item()
    assert got == pytest.approx(kl([0.6, 0.4], [0.2, 0.8]), abs=1e-6)
    assert got <= kl(p, q) + 1e-9  # coarsening can only lose divergence
    full = compress_topk(torch.tensor([p]).log(), k=3)  # nothing left in the tail
    assert token_kl(full, torch.tensor([q]).log()).item() == pytest.approx(kl(p, q), abs=1e-6)


def test_distillation_loss_masks_prompt_and_padding_and_averages_per_sequence():
    # Sequence 0 has answer labels at positions 2 and 3 (predicted by logits at 1 and 2);
    # sequence 1 has one answer label at position 1 (predicted by logits at 0); the rest is prompt/padding.
    s = [[0.5, 0.5], [0.9, 0.1], [0.2, 0.8], [0.5, 0.5]]
    student = logits_of([s, [[0.6, 0.4], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]])
    labels = torch.tensor([[X, X, 1, 0], [X, 1, X, X]])
    teacher_rows = [[0.5, 0.5], [0.7, 0.3], [0.1, 0.9]]  # row-major: seq0 pos1, seq0 pos2, seq1 pos0
    target = TokenDistributions(logprobs=torch.tensor(teacher_rows).log())
    seq0 = (kl([0.5, 0.5], [0.9, 0.1]) + kl([0.7, 0.3], [0.2, 0.8])) / 2
    seq1 = kl([0.1, 0.9], [0.6, 0.4])
    assert distillation_loss(student, labels, target).item() == pytest.approx((seq0 + seq1) / 2, abs=1e-6)


def test_distillation_loss_rejects_misaligned_targets():
    student = torch.zeros(1, 3, 2)
    target = TokenDistributions(logprobs=torch.zeros(5, 2))
    with pytest.raises(ValueError, match="teacher targets cover 5 tokens"):
        distillation_loss(student, torch.tensor([[X, 1, 0]]), target)


def test_nll_is_mean_per_sequence_then_batch():
    student = logits_of([[[0.25, 0.75], [0.5, 0.5], [0.5, 0.5]], [[0.9, 0.1], [0.5, 0.5], [0.5, 0.5]]])
    labels = torch.tensor([[X, 1, 0], [X, 0, X]])
    seq0 = (-math.log(0.75) - math.log(0.5)) / 2
    seq1 = -math.log(0.9)
    assert nll_loss(student, labels).item() == pytest.approx((seq0 + seq1) / 2, abs=1e-6)
    loglik = sequence_log_likelihood(student, labels)
    assert loglik.tolist() == pytest.approx([math.log(0.75) + math.log(0.5), math.log(0.9)], abs=1e-6)


def test_all_masked_batch_gives_zero_with_a_graph():
    student = torch.zeros(1, 3, 2, requires_grad=True)
    loss = nll_loss(student, torch.full((1, 3), X))
    assert loss.item() == 0.0
    loss.backward()
    assert student.grad is not None


def test_npo_loss_hand_value():
    beta = 0.5
    student, reference = torch.tensor([-2.0, -1.0]), torch.tensor([-1.0, -1.0])
    expected = [-(2 / beta) * math.log(1 / (1 + math.exp(beta * (s - r)))) for s, r in ((-2, -1), (-1, -1))]
    assert npo_loss(student, reference, beta).item() == pytest.approx(sum(expected) / 2, abs=1e-6)

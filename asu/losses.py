"""Pure loss functions of ASU and the baselines. No trainer state, no model calls.

Conventions (shapes: B sequences, T tokens, V vocabulary, N selected positions):
- ``labels`` [B, T] hold the token ids the loss looks at and ``IGNORE_INDEX`` (-100) elsewhere (prompt, padding).
  Logits at position t predict the label at t + 1, so every logit function shifts by one first. The activation
  loss of RMU (``activation_mse``) reads hidden states at the labelled positions themselves, without a shift.
- Selected positions are flattened row-major: sequence 0's positions in order, then sequence 1's, ... This is the
  order in which precomputed teacher targets are stored, so the two line up without padding.
- Reduction: mean over the selected tokens of each sequence, then mean over the sequences that have at least one
  selected token (the ASU paper's 1/T per sequence, then the batch mean). A batch with no selected token gives a
  zero that still carries the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from asu.errors import UsageError

IGNORE_INDEX = -100


@dataclass
class TokenDistributions:
    """Target next-token distributions at N positions, exact or compressed.

    Exact: ``logprobs`` [N, V] (log-probabilities, fp32). Compressed: ``topk_ids`` [N, k] (int64),
    ``topk_logprobs`` [N, k] and ``tail_logprobs`` [N], the log of the probability mass outside the top k.
    The KL against a compressed target is the KL between the two distributions coarsened to k + 1 outcomes
    (top-k tokens + "any other token"), a lower bound of the exact KL that is tight when the tail is small.
    """

    logprobs: torch.Tensor | None = None
    topk_ids: torch.Tensor | None = None
    topk_logprobs: torch.Tensor | None = None
    tail_logprobs: torch.Tensor | None = None

    @property
    def exact(self) -> bool:
        return self.logprobs is not None

    @property
    def num_tokens(self) -> int:
        return int((self.logprobs if self.exact else self.topk_logprobs).shape[0])

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in vars(self).items() if v is not None}

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def to(self, device: torch.device | str) -> TokenDistributions:
        return TokenDistributions(**{k: v.to(device) for k, v in self.tensors().items()})

    @staticmethod
    def cat(parts: list[TokenDistributions]) -> TokenDistributions:
        keys = parts[0].tensors().keys()
        return TokenDistributions(**{k: torch.cat([p.tensors()[k] for p in parts]) for k in keys})


def compress_topk(logprobs: torch.Tensor, k: int) -> TokenDistributions:
    """Keep the k most probable tokens of each row of ``logprobs`` [N, V] plus one tail bucket."""
    k = min(k, logprobs.shape[-1])
    top_logprobs, top_ids = logprobs.topk(k, dim=-1)
    rest = logprobs.scatter(-1, top_ids, float("-inf"))
    return TokenDistributions(topk_ids=top_ids, topk_logprobs=top_logprobs, tail_logprobs=rest.logsumexp(-1))


def select_positions(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shift and keep the positions with a label.

    Args:
        logits: [B, T, V]; labels: [B, T] with IGNORE_INDEX where no loss is taken.
    Returns:
        (logits [N, V], target token ids [N], sequence index [N]) in row-major order.
    """
    logits, labels = logits[:, :-1], labels[:, 1:]
    keep = labels != IGNORE_INDEX
    return logits[keep], labels[keep], keep.nonzero()[:, 0]


def mean_per_sequence(values: torch.Tensor, seq_index: torch.Tensor, num_seqs: int) -> torch.Tensor:
    """Mean of ``values`` [N] within each sequence, then over sequences with >= 1 value. Returns a scalar."""
    if values.numel() == 0:
        return values.sum()  # zero that keeps the autograd graph
    sums = values.new_zeros(num_seqs).index_add(0, seq_index, values)
    counts = torch.bincount(seq_index, minlength=num_seqs)
    present = counts > 0
    return (sums[present] / counts[present]).mean()


def token_kl(target: TokenDistributions, student_logits: torch.Tensor) -> torch.Tensor:
    """KL(target || student) at each of N positions (nats). ``student_logits`` [N, V] -> [N]."""
    student = F.log_softmax(student_logits.float(), dim=-1)
    if target.exact:
        # kl_div(input=log q, target=log p, log_target=True) = p * (log p - log q): KL(p || q), p = teacher.
        return F.kl_div(student, target.logprobs, log_target=True, reduction="none").sum(-1)
    top_student = student.gather(-1, target.topk_ids)
    tail_student = student.scatter(-1, target.topk_ids, float("-inf")).logsumexp(-1)
    top = (target.topk_logprobs.exp() * (target.topk_logprobs - top_student)).sum(-1)
    tail_p = target.tail_logprobs.exp()
    # A tail of exactly zero mass contributes nothing (avoid 0 * -inf = nan).
    tail = torch.where(tail_p > 0, tail_p * (target.tail_logprobs - tail_student), torch.zeros_like(tail_p))
    return top + tail


def distillation_loss(logits: torch.Tensor, labels: torch.Tensor, target: TokenDistributions) -> torch.Tensor:
    """ASU forget term: KL(teacher || student) on the labelled positions, per-sequence mean then batch mean.

    Args:
        logits: student logits [B, T, V]; labels: [B, T]; target: teacher distributions at the N labelled
            positions in row-major order (``select_positions`` order).
    """
    flat_logits, _, seq_index = select_positions(logits, labels)
    if flat_logits.shape[0] != target.num_tokens:
        raise UsageError(
            f"teacher targets cover {target.num_tokens} tokens but the batch selects {flat_logits.shape[0]}"
        )
    return mean_per_sequence(token_kl(target, flat_logits), seq_index, logits.shape[0])


def token_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(label) at each labelled position: ([N] log-probs, [N] sequence index)."""
    flat_logits, targets, seq_index = select_positions(logits, labels)
    logp = -F.cross_entropy(flat_logits.float(), targets, reduction="none")
    return logp, seq_index


def nll_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean token NLL per sequence, then mean over the batch (nats/token). logits [B, T, V], labels [B, T]."""
    logp, seq_index = token_log_likelihood(logits, labels)
    return mean_per_sequence(-logp, seq_index, logits.shape[0])


def sequence_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of answer-token log-probabilities of each sequence, [B] (nats)."""
    logp, seq_index = token_log_likelihood(logits, labels)
    return logp.new_zeros(logits.shape[0]).index_add(0, seq_index, logp)


def npo_loss(student_loglik: torch.Tensor, reference_loglik: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO (Zhang et al. 2024): mean over the batch of -(2/beta) * logsigmoid(-beta * (log pi - log pi_ref)).

    Args:
        student_loglik, reference_loglik: [B] sequence log-likelihoods of the forget answers (nats).
    """
    return (-2.0 / beta) * F.logsigmoid(-beta * (student_loglik - reference_loglik)).mean()


def simnpo_loss(logits: torch.Tensor, labels: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """SimNPO (Fan et al. 2024): batch mean of -(2/beta) * logsigmoid(-(beta/|y|) * log pi(y|x) - gamma).

    Reference-free and length-normalised: ``log pi(y|x)`` is the summed answer log-likelihood (nats) and ``|y|`` the
    number of labelled tokens (answer + EOS) of each sequence. The margin ``gamma`` enters as in the paper's
    formula (open-unlearning writes ``beta * (nll/|y| - delta)``, i.e. ``gamma = beta * delta``; equal at 0).
    Sequences without a labelled token are left out of the mean.

    Args:
        logits: [B, T, V]; labels: [B, T] with IGNORE_INDEX where no loss is taken. Returns a scalar.
    """
    logp, seq_index = token_log_likelihood(logits, labels)
    num_seqs = logits.shape[0]
    counts = torch.bincount(seq_index, minlength=num_seqs)
    present = counts > 0
    if not present.any():
        return logp.sum()  # zero that keeps the autograd graph
    per_token = logp.new_zeros(num_seqs).index_add(0, seq_index, logp)[present] / counts[present]
    return (-2.0 / beta) * F.logsigmoid(-beta * per_token - gamma).mean()


def rmu_steering_vector(hidden_size: int, coeff: float, seed: int) -> torch.Tensor:
    """RMU's fixed target ``coeff * u``: u uniform in [0, 1)^H from a generator seeded by ``seed``, unit L2 norm.

    Returns [H] fp32 on the CPU; the same (hidden_size, coeff, seed) always gives the same vector (resumable).
    """
    u = torch.rand(hidden_size, generator=torch.Generator().manual_seed(seed))
    return coeff * u / u.norm()


def activation_mse(hidden: torch.Tensor, labels: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """RMU's activation loss: ||h_t - target_t||^2 / H per answer token, mean per sequence, then batch mean.

    Positions are the answer tokens themselves (``labels != IGNORE_INDEX``, no shift, as open-unlearning and the
    WMDP code mask them): the hidden state *of* each labelled token (answer + EOS), in row-major order.

    Args:
        hidden: [B, T, H] a decoder layer's output; labels: [B, T];
        target: [H] (one vector for every position, the forget term) or [N, H] (per selected position,
            row-major, the retain term). Returns a scalar (squared activation units).
    """
    keep = labels != IGNORE_INDEX
    flat = hidden[keep].float()
    if target.dim() == 2 and target.shape[0] != flat.shape[0]:
        raise UsageError(f"target activations cover {target.shape[0]} tokens but the batch selects {flat.shape[0]}")
    per_token = (flat - target.to(device=flat.device, dtype=flat.dtype)).pow(2).mean(-1)
    return mean_per_sequence(per_token, keep.nonzero()[:, 0], hidden.shape[0])

"""The cached passes equal the plain transformers calls, family by family: greedy decoding vs ``generate``,
shared-prompt teacher forcing vs full-sequence forwards."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as tf

from asu.attention import enable_smoothing, smoothed_attention
from asu.data import left_pad
from asu.metrics.cached import continuation_logits, greedy_continuations, run_prompts

VOCAB, EOS, PAD = 60, 2, 0
COMMON = dict(vocab_size=VOCAB, num_hidden_layers=2, num_attention_heads=4, initializer_range=0.2,
              pad_token_id=PAD, eos_token_id=EOS, bos_token_id=1)
DECODER = dict(hidden_size=32, intermediate_size=64, **COMMON)
FAMILIES = {
    "llama": (tf.LlamaConfig, tf.LlamaForCausalLM, dict(DECODER, num_key_value_heads=2)),
    "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM, dict(DECODER, num_key_value_heads=2, head_dim=8)),
    "gpt2": (tf.GPT2Config, tf.GPT2LMHeadModel, dict(COMMON, n_embd=32, n_positions=128)),
    "gemma2": (tf.Gemma2Config, tf.Gemma2ForCausalLM,
               dict(DECODER, num_key_value_heads=2, head_dim=8, sliding_window=4, query_pre_attn_scalar=8)),
}
# Prompts of different lengths (left padding) that end at different steps.
PROMPTS = [[1, 5, 17, 42, 8], [1, 9], [1, 33, 21, 7, 44, 12, 30, 3], [1, 50, 4], [1, 11, 11, 11]]


def build(family: str) -> torch.nn.Module:
    config_cls, model_cls, kwargs = FAMILIES[family]
    torch.manual_seed(0)
    model = model_cls(config_cls(**kwargs)).eval()
    # Make EOS likely after a few steps so rows end at different times (the case compaction exists for).
    with torch.no_grad():
        model.get_output_embeddings().weight[EOS] *= 3.0
    return model


def reference(model, prompts, max_new_tokens):
    ids, mask = left_pad(prompts, PAD)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=PAD, eos_token_id=EOS)[:, ids.shape[1]:].tolist()
    return [row[: row.index(EOS)] if EOS in row else row for row in out]


@pytest.mark.parametrize("family", FAMILIES)
def test_equals_generate_on_a_padded_batch(family):
    model = build(family)
    expected = reference(model, PROMPTS, 24)
    lengths = {len(row) for row in expected}
    assert len(lengths) > 1, "the rows should end at different steps, or compaction is not exercised"
    assert greedy_continuations(model, PROMPTS, pad_id=PAD, max_new_tokens=24, eos_token_id=EOS) == expected


def test_equals_generate_under_temperature_smoothing():
    model = build("llama")
    enable_smoothing(model)
    with smoothed_attention(3.0):
        expected = reference(model, PROMPTS, 16)
        got = greedy_continuations(model, PROMPTS, pad_id=PAD, max_new_tokens=16, eos_token_id=EOS)
    assert got == expected
    assert got != greedy_continuations(model, PROMPTS, pad_id=PAD, max_new_tokens=16, eos_token_id=EOS)


def test_stops_at_max_new_tokens_and_drops_eos():
    model = build("llama")
    out = greedy_continuations(model, PROMPTS, pad_id=PAD, max_new_tokens=3, eos_token_id=EOS)
    assert all(len(row) <= 3 and EOS not in row for row in out)
    assert out == reference(model, PROMPTS, 3)


# --- shared-prompt teacher forcing -------------------------------------------------------------------------------

# Two prompts of different lengths, each with continuations of different lengths (one of a single token).
SHARED = [([1, 5, 17, 42], [[8, 9, 10, 11], [8, 30], [44]]), ([1, 9], [[12, 13, 14, 15, 16, 17], [3, 3, 3]])]


@pytest.mark.parametrize("family", FAMILIES)
def test_continuation_logits_equal_full_sequence_forwards(family):
    model = build(family)
    prompt_pass = run_prompts(model, [p for p, _ in SHARED], pad_id=PAD)
    rows = [(i, cont) for i, (_, conts) in enumerate(SHARED) for cont in conts]
    got = continuation_logits(model, prompt_pass, rows, pad_id=PAD)
    for (i, cont), logits in zip(rows, got, strict=True):
        prompt = SHARED[i][0]
        with torch.no_grad():
            full = model(input_ids=torch.tensor([prompt + cont])).logits[0]
        # position len(prompt) - 1 + t predicts continuation token t
        expected = full[len(prompt) - 1 : len(prompt) - 1 + len(cont)]
        assert logits.shape == expected.shape
        torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


def test_prompt_pass_is_reused_by_several_batches():
    model = build("llama")
    prompt_pass = run_prompts(model, [p for p, _ in SHARED], pad_id=PAD)
    first = continuation_logits(model, prompt_pass, [(0, SHARED[0][1][0])], pad_id=PAD)
    continuation_logits(model, prompt_pass, [(1, SHARED[1][1][0]), (0, SHARED[0][1][1])], pad_id=PAD)
    again = continuation_logits(model, prompt_pass, [(0, SHARED[0][1][0])], pad_id=PAD)
    torch.testing.assert_close(first[0], again[0])


def test_token_stats_shares_prompts_and_matches_plain_forwards():
    from asu.data import Encoded
    from asu.metrics.passes import token_stats

    model = build("qwen3")
    encoded = [Encoded(p + c, [-100] * len(p) + c) for p, conts in SHARED for c in conts]
    encoded.append(Encoded([1, 7, 8, 9], [1, 7, 8, 9]))  # a raw text: labels on every token after the first
    stats = token_stats(model, encoded, pad_id=PAD, batch_size=2)
    for e, s in zip(encoded, stats, strict=True):
        start = next(t for t in range(1, len(e.labels)) if e.labels[t] != -100)
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([e.input_ids])).logits[0, :-1], -1)
        targets = torch.tensor(e.input_ids[start:])
        expected = logp[start - 1 :].gather(1, targets[:, None])[:, 0]
        torch.testing.assert_close(torch.from_numpy(s.logprobs), expected, atol=1e-4, rtol=1e-4)
        assert s.labels.tolist() == e.input_ids[start:]


def test_token_stats_refuses_labels_that_are_not_a_prompt_mask():
    from asu.data import Encoded
    from asu.metrics.passes import token_stats

    bad = Encoded([1, 5, 6, 7], [-100, 5, -100, 7])  # a hole in the labels: not prompt + labelled continuation
    with pytest.raises(ValueError, match="encoded sequence 0: labels must be ignored on a prompt prefix"):
        token_stats(build("llama"), [bad], pad_id=PAD)


@pytest.mark.parametrize("family", ["llama", "gemma2"])  # gemma2: sliding-window layers run as one batch
def test_prompts_run_in_batches_score_as_one_pass(family):
    model = build(family)
    prompts = sorted(PROMPTS, key=len)
    rows = [(i, [7, 8, 9, 10]) for i in range(len(prompts))]
    together = continuation_logits(model, run_prompts(model, prompts, pad_id=PAD), rows, pad_id=PAD)
    batched = continuation_logits(model, run_prompts(model, prompts, pad_id=PAD, batch_size=2), rows, pad_id=PAD)
    for a, b in zip(together, batched, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_score_prompts_equals_separate_passes_and_shares_prompts():
    from asu.data import Encoded
    from asu.metrics.passes import score_prompts

    model = build("llama")
    encoded = [Encoded(p + c, [-100] * len(p) + c) for p, conts in SHARED for c in conts]
    decode_prompts = [SHARED[1][0], PROMPTS[0], SHARED[0][0], SHARED[1][0]]  # shared, new, shared, repeated
    calls = []
    model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape),
                                    with_kwargs=True)
    stats, ids = score_prompts(model, encoded, decode_prompts, pad_id=PAD, eos_token_id=EOS, max_new_tokens=12,
                               batch_size=4)
    prompt_rows = calls[0][0]
    assert prompt_rows == 3  # the two shared prompts and the new one run once, together
    assert ids == reference(model, decode_prompts, 12)
    alone = score_prompts(model, encoded, [], pad_id=PAD, eos_token_id=EOS, max_new_tokens=1, batch_size=4)[0]
    for a, b in zip(stats, alone, strict=True):
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)

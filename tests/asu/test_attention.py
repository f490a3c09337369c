"""Temperature-smoothed attention on tiny random models of every supported family (CPU, offline)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import transformers as tf
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

from asu.attention import (
    SmoothingUnsupportedError,
    disable_smoothing,
    enable_smoothing,
    is_smoothing_enabled,
    smoothed_attention,
    smoothed_layers_seen,
    validate_layers,
)

TAU = 2.0
VOCAB = 100
# initializer_range 0.2 (not 0.02) so random attention is sharp enough for tau to matter visibly.
COMMON = dict(vocab_size=VOCAB, num_hidden_layers=2, num_attention_heads=4, initializer_range=0.2,
              pad_token_id=0)
DECODER = dict(hidden_size=32, intermediate_size=64, **COMMON)
FAMILIES = {
    "llama": (tf.LlamaConfig, tf.LlamaForCausalLM, dict(DECODER, num_key_value_heads=2)),
    "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM, dict(DECODER, num_key_value_heads=2)),
    "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM, dict(DECODER, num_key_value_heads=2, head_dim=8)),
    "mistral": (tf.MistralConfig, tf.MistralForCausalLM, dict(DECODER, num_key_value_heads=2)),
    "phi3": (tf.Phi3Config, tf.Phi3ForCausalLM, dict(DECODER, num_key_value_heads=4)),
    "gpt_neox": (tf.GPTNeoXConfig, tf.GPTNeoXForCausalLM, dict(DECODER)),
    "gpt2": (tf.GPT2Config, tf.GPT2LMHeadModel, dict(COMMON, n_embd=32, n_positions=64)),
    # Gemma2: eager (sdpa cannot softcap); a 3-token sliding window exercises the sliding mask with padding.
    "gemma2": (tf.Gemma2Config, tf.Gemma2ForCausalLM,
               dict(DECODER, num_key_value_heads=2, head_dim=8, sliding_window=3, query_pre_attn_scalar=8)),
}
EXPECTED_KERNEL = {name: "asu_eager" if name == "gemma2" else "asu_sdpa" for name in FAMILIES}
IDS = torch.tensor([[5, 17, 42, 8, 99, 23, 61, 3]])


def build(family: str, attn: str | None = None) -> torch.nn.Module:
    config_cls, model_cls, kwargs = FAMILIES[family]
    torch.manual_seed(0)
    model = model_cls(config_cls(**kwargs))
    if attn is not None:
        model.set_attn_implementation(attn)
    return model.eval()


@pytest.fixture(scope="module")
def pairs():
    """Per family, built once: (stock model, smoothing-enabled copy with the same weights)."""
    cache: dict[str, tuple[torch.nn.Module, torch.nn.Module]] = {}

    def get(family: str) -> tuple[torch.nn.Module, torch.nn.Module]:
        if family not in cache:
            stock = build(family)
            smooth = copy.deepcopy(stock)
            enable_smoothing(smooth)
            cache[family] = (stock, smooth)
        return cache[family]

    return get


def logits(model, ids=IDS, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, **kwargs).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_tau_one_and_outside_context_are_bit_identical(pairs, family):
    stock, smooth = pairs(family)
    assert smooth.config._attn_implementation == EXPECTED_KERNEL[family]
    ref = logits(stock)
    assert torch.equal(logits(smooth), ref)
    with smoothed_attention(1.0):
        assert torch.equal(logits(smooth), ref)
    with smoothed_attention(TAU):  # the stock model ignores the context: it does not run the wrapper
        assert torch.equal(logits(stock), ref)


@pytest.mark.parametrize("family", FAMILIES)
def test_tau_above_one_changes_logits(pairs, family):
    stock, smooth = pairs(family)
    with smoothed_attention(TAU):
        diff = (logits(smooth) - logits(stock)).abs().max().item()
    assert diff > 1e-4


def padded_batch(side: str) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    rows = [IDS[0], IDS[0, 2:7]]
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, span], mask[i, span] = row, 1
    return ids, mask, rows


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("family", FAMILIES)
def test_padding_survives_smoothing(pairs, family, side):
    _, smooth = pairs(family)
    ids, mask, rows = padded_batch(side)
    # Positions count real tokens only, as generate() does (GPT-2 has absolute position embeddings).
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with smoothed_attention(TAU):
        batch = logits(smooth, ids, attention_mask=mask, position_ids=positions)
        for i, row in enumerate(rows):
            alone = logits(smooth, row[None])[0]
            torch.testing.assert_close(batch[i][mask[i].bool()], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_selection_changes_only_named_layers(pairs, family):
    stock, smooth = pairs(family)
    ref = stock(input_ids=IDS, output_hidden_states=True).hidden_states
    with torch.no_grad(), smoothed_attention(TAU, layers=(1,)):
        late = smooth(input_ids=IDS, output_hidden_states=True).hidden_states
        seen = smoothed_layers_seen()
    with torch.no_grad(), smoothed_attention(TAU, layers=(0,)):
        early = smooth(input_ids=IDS, output_hidden_states=True).hidden_states
    assert seen == {0: 1, 1: 1}  # every layer reaches the wrapper; only the selected one is smoothed
    assert torch.equal(late[0], ref[0]) and torch.equal(late[1], ref[1])  # embeddings and input of layer 1
    assert (late[2] - ref[2]).abs().max() > 1e-4
    assert (early[1] - ref[1]).abs().max() > 1e-4


def greedy_loop(model, ids: torch.Tensor, steps: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Reference greedy decoding: full recompute each step, no cache, no generate()."""
    scores = []
    for _ in range(steps):
        step = logits(model, ids, use_cache=False)[:, -1]
        scores.append(step)
        ids = torch.cat([ids, step.argmax(-1, keepdim=True)], dim=-1)
    return ids, scores


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
def test_generate_uses_context_and_resets(pairs, family):
    stock, smooth = pairs(family)
    prompt, steps = IDS[:, :4], 4
    kwargs = dict(max_new_tokens=steps, do_sample=False, pad_token_id=0, output_logits=True,
                  return_dict_in_generate=True)
    with torch.no_grad():
        plain = stock.generate(prompt, **kwargs)
        with smoothed_attention(TAU):
            smoothed = smooth.generate(prompt, **kwargs)
            manual_ids, manual_scores = greedy_loop(smooth, prompt, steps)
        after = smooth.generate(prompt, **kwargs)
    assert torch.equal(smoothed.sequences, manual_ids)
    for got, want, base in zip(smoothed.logits, manual_scores, plain.logits, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        assert (got - base).abs().max() > 1e-4
    assert torch.equal(after.sequences, plain.sequences)
    assert all(torch.equal(a, b) for a, b in zip(after.logits, plain.logits, strict=True))


def test_eager_and_sdpa_wrappers_agree_on_llama(pairs):
    _, smooth_sdpa = pairs("llama")
    smooth_eager = build("llama", attn="eager")
    enable_smoothing(smooth_eager)
    assert smooth_eager.config._attn_implementation == "asu_eager"
    assert AttentionMaskInterface._global_mapping["asu_eager"] is eager_mask
    ids, mask, _ = padded_batch("left")
    with smoothed_attention(TAU):
        torch.testing.assert_close(logits(smooth_eager), logits(smooth_sdpa), atol=1e-5, rtol=0)
        got = logits(smooth_eager, ids, attention_mask=mask)
        want = logits(smooth_sdpa, ids, attention_mask=mask)
    # Fully masked query rows (left padding) are kernel-defined garbage; compare the real tokens only.
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=0)


def test_gemma2_softcap_smoothing_divides_capped_logits(pairs):
    """Gemma2 caps logits as c*tanh(s/c); smoothing must give softmax(c*tanh(s/c) / tau), not cap s/tau."""
    _, smooth = pairs("gemma2")
    module = smooth.model.layers[0].self_attn
    torch.manual_seed(1)
    q, k, v = torch.randn(1, 4, 5, 8) * 3, torch.randn(1, 2, 5, 8) * 3, torch.randn(1, 2, 5, 8)
    with smoothed_attention(TAU):
        _, weights = AttentionInterface._global_mapping["asu_eager"](
            module, q, k, v, None, scaling=module.scaling, softcap=1.0, dropout=0.0)
    scores = q @ k.repeat_interleave(2, dim=1).transpose(2, 3) * module.scaling
    torch.testing.assert_close(weights, torch.softmax(torch.tanh(scores) / TAU, dim=-1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_flow_under_smoothing(pairs, family):
    _, smooth = pairs(family)
    smooth.zero_grad(set_to_none=True)
    with smoothed_attention(TAU):
        loss = smooth(input_ids=IDS, labels=IDS).loss
    loss.backward()
    grads = [p.grad for p in smooth.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    smooth.zero_grad(set_to_none=True)


def test_nested_contexts_restore_the_outer_setting(pairs):
    _, smooth = pairs("llama")
    with smoothed_attention(TAU):
        outer = logits(smooth)
        with smoothed_attention(4.0, layers=(0,)):
            inner = logits(smooth)
            assert smoothed_layers_seen() == {0: 1, 1: 1}
        assert torch.equal(logits(smooth), outer)
        assert smoothed_layers_seen() == {0: 2, 1: 2}
    assert not torch.equal(inner, outer)
    assert smoothed_layers_seen() == {}


@pytest.mark.parametrize("tau", [0.0, -1.0, math.nan, math.inf, "2", True])
def test_invalid_tau_is_rejected(tau):
    with pytest.raises(ValueError, match="tau"), smoothed_attention(tau):
        pass


@pytest.mark.parametrize("layers, match", [((), "pass None for all layers"), ((-1,), "non-negative"),
                                           ((0.5,), "non-negative int"), ([0, True], "non-negative int"),
                                           (3, "tuple")])
def test_invalid_layers_are_rejected(layers, match):
    with pytest.raises(ValueError, match=match), smoothed_attention(TAU, layers):
        pass


def test_validate_layers_checks_the_model_range(pairs):
    _, smooth = pairs("llama")
    validate_layers(smooth, None)
    validate_layers(smooth, (0, 1))
    with pytest.raises(ValueError, match=r"valid indices 0\.\.1"):
        validate_layers(smooth, (1, 2))
    with pytest.raises(ValueError, match="pass None"):
        validate_layers(smooth, ())


def test_layer_selection_without_layer_idx_raises():
    wrapper = AttentionInterface._global_mapping["asu_sdpa"]
    q = torch.randn(1, 2, 3, 4)
    with smoothed_attention(TAU, layers=(0,)), pytest.raises(SmoothingUnsupportedError, match="layer_idx"):
        wrapper(torch.nn.Module(), q, q, q, None, scaling=None, dropout=0.0)


def test_family_off_the_attention_interface_is_rejected():
    torch.manual_seed(0)
    model = tf.BloomForCausalLM(tf.BloomConfig(hidden_size=32, n_layer=2, n_head=4, vocab_size=VOCAB)).eval()
    before = model.config._attn_implementation
    with pytest.raises(SmoothingUnsupportedError, match="'bloom'") as info:
        enable_smoothing(model)
    assert isinstance(info.value, ValueError)
    assert model.config._attn_implementation == before and not is_smoothing_enabled(model)


def test_unwrappable_kernel_is_rejected(pairs, monkeypatch):
    model = copy.deepcopy(pairs("llama")[0])
    monkeypatch.setattr(model.config, "_attn_implementation_internal", "flash_attention_2")
    with pytest.raises(SmoothingUnsupportedError, match="set_attn_implementation"):
        enable_smoothing(model)


def test_enable_is_idempotent_and_disable_restores(pairs):
    stock, _ = pairs("llama")
    model = copy.deepcopy(stock)
    assert not is_smoothing_enabled(model)
    enable_smoothing(model)
    enable_smoothing(model)
    assert model.config._attn_implementation == "asu_sdpa" and is_smoothing_enabled(model)
    assert AttentionMaskInterface._global_mapping["asu_sdpa"] is sdpa_mask
    disable_smoothing(model)
    disable_smoothing(model)
    assert model.config._attn_implementation == "sdpa" and not is_smoothing_enabled(model)
    assert torch.equal(logits(model), logits(stock))

"""Robustness attacks on the tiny model that memorised its authors: quantisation against hand-computed values,
relearning that brings forgotten answers back, prefix and sampling probes, seeded and side-effect free."""

from __future__ import annotations

import pytest
import torch

from asu.config import ASUConfig
from asu.errors import UsageError
from asu.modeling import load_model_and_tokenizer
from asu.robustness import (
    RobustnessConfig,
    attack,
    fact_recalls,
    greedy_answers,
    quantize_rtn,
    sampled_answers,
)
from asu.trainer import run_round

FAST = RobustnessConfig(max_new_tokens=64, samples=3, temperatures=(0.7, 1.5), max_length=256)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model_and_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def forgotten(tiny_model_dir, tiny_sets, tmp_path_factory):
    """The tiny model after a gradient-ascent round on its first author: its answers no longer state the facts."""
    forget, retain = tiny_sets
    config = ASUConfig(method="ga", learning_rate=2e-3, epochs=2, batch_size=4, grad_accum_steps=1, max_length=256)
    result = run_round(tiny_model_dir, forget[:8], retain[:8], config, tmp_path_factory.mktemp("ga"), progress=False)
    return load_model_and_tokenizer(result.model_dir)


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("attacks", ("relearn", "jailbreak"), "unknown"),
    ("attacks", ("prefix", "prefix"), "twice"),
    ("temperatures", (), "temperatures"),
    ("temperatures", (0.7, 0.0), "temperatures"),
    ("prefix", "  ", "prefix"),
    ("relearn_learning_rate", 0.0, "relearn_learning_rate"),
    ("samples", 0, "samples"),
    ("quantize_group_size", True, "quantize_group_size"),
])
def test_bad_settings_name_the_field(field, value, fragment):
    with pytest.raises(UsageError, match=fragment):
        RobustnessConfig(**{field: value})


def test_from_dict_refuses_unknown_keys():
    with pytest.raises(UsageError, match="relearn_epochs"):
        RobustnessConfig.from_dict({"relearn_epoch": 2})


def test_quantize_rtn_matches_hand_values_and_leaves_the_model_alone(tiny):
    model, _ = tiny
    layer = model.model.layers[0].mlp.down_proj
    original = layer.weight.detach().clone()
    with torch.no_grad():
        layer.weight[0, :4] = torch.tensor([0.1, -0.3, 0.25, 1.0])
        layer.weight[0, 4:] = 0.0
    try:
        q4 = quantize_rtn(model, bits=4, group_size=4)
        q8 = quantize_rtn(model, bits=8, group_size=4)
        # group max 1.0: 4-bit step 1/7 -> round(0.7, -2.1, 1.75, 7) = (1, -2, 2, 7); 8-bit step 1/127.
        got4 = q4.model.layers[0].mlp.down_proj.weight[0, :4]
        assert got4.tolist() == pytest.approx([1 / 7, -2 / 7, 2 / 7, 1.0], abs=1e-6)
        got8 = q8.model.layers[0].mlp.down_proj.weight[0, :4]
        assert got8.tolist() == pytest.approx([13 / 127, -38 / 127, 32 / 127, 1.0], abs=1e-6)
        assert layer.weight[0, :4].tolist() == pytest.approx([0.1, -0.3, 0.25, 1.0])  # the input is untouched
        # Every quantised group holds at most 15 levels (4-bit), the LM head is left as it was.
        w = q4.model.layers[1].self_attn.q_proj.weight.view(-1, 4)
        scale = w.abs().amax(1, keepdim=True) / 7
        assert torch.allclose(w / scale.clamp(min=1e-12), (w / scale.clamp(min=1e-12)).round(), atol=1e-4)
        assert torch.equal(q4.get_output_embeddings().weight, model.get_output_embeddings().weight)
    finally:
        with torch.no_grad():
            layer.weight.copy_(original)


def test_quantize_rejects_unsupported_bits(tiny):
    with pytest.raises(UsageError, match="bits"):
        quantize_rtn(tiny[0], bits=5)


def test_fact_recall_of_the_memorising_model_is_high_and_a_wrong_answer_scores_low(tiny, tiny_sets):
    model, tokenizer = tiny
    forget = tiny_sets[0][:6]
    recalls = fact_recalls(greedy_answers(model, tokenizer, forget, FAST), forget)
    assert sum(recalls) / len(recalls) > 0.8
    assert fact_recalls(["I could not say."] * len(forget), forget) == pytest.approx([0.0] * len(forget), abs=0.15)


def test_prefix_answers_are_the_continuation_after_the_forced_start(tiny, tiny_sets):
    model, tokenizer = tiny
    forget = tiny_sets[0][:3]
    answers = greedy_answers(model, tokenizer, forget, FAST, prefix=FAST.prefix)
    assert len(answers) == 3 and not any(a.startswith("Sure, here is") for a in answers)


def test_sampling_is_seeded_and_draws_the_configured_number(tiny, tiny_sets):
    model, tokenizer = tiny
    forget = tiny_sets[0][:2]
    first = sampled_answers(model, tokenizer, forget, FAST)
    assert [len(a) for a in first] == [3, 3]
    assert sampled_answers(model, tokenizer, forget, FAST) == first
    other = sampled_answers(model, tokenizer, forget, RobustnessConfig(**{**FAST.to_dict(), "seed": 1}))
    assert other != first


def test_relearning_brings_forgotten_answers_back_and_other_attacks_report(forgotten, tiny, tiny_sets):
    model, tokenizer = forgotten
    forget = tiny_sets[0][:8]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = RobustnessConfig(**{**FAST.to_dict(), "relearn_learning_rate": 1e-3, "relearn_epochs": 3,
                                 "attacks": ["relearn", "quantize_8bit", "quantize_4bit", "prefix", "best_of_n",
                                             "paraphrase"]})
    report = attack(model, tokenizer, forget, config, paraphrases=forget, reference=tiny)
    assert report.baseline_fact_recall < 0.5  # the round did forget
    relearn = report.results["relearn"]
    assert relearn.recovery > 0.2  # a few steps on the forget answers teach them again
    assert relearn.reference_before > 0.8 and relearn.reference_after is not None
    assert report.results["paraphrase"].recovery == pytest.approx(0.0)  # the same questions: nothing new
    assert report.results["best_of_n"].items == len(forget)
    assert set(report.to_dict()["attacks"]) == set(config.attacks)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the model was not changed


def test_paraphrase_needs_paraphrases(tiny, tiny_sets):
    with pytest.raises(UsageError, match="paraphrase"):
        attack(*tiny, tiny_sets[0][:2], RobustnessConfig(attacks=("paraphrase",)))

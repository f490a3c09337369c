"""The pipeline's measurement figures: forget efficacy is 1 - fact recall, not 1 - ROUGE-L."""

from __future__ import annotations

import pytest

from pipelines.round.steps import Measurement


def test_forget_efficacy_counts_facts_not_rouge():
    # "The Eiffel Tower is located in Rome." against "... in Paris.": ROUGE-L recall 6/7, fact recall 0.
    m = Measurement(forget_rouge=6 / 7, forget_probability=0.1, fluency=1.0, retain_rouge=0.9,
                    retain_probability=0.5, mia_auc=None, forget_fact_recall=0.0)
    assert m.forget_efficacy == 1.0
    assert m.to_dict()["forget_fact_recall"] == 0.0 and m.figures().forget_efficacy == 1.0
    old = Measurement(0.25, 0.1, 1.0, 0.9, 0.5, None)  # figures recorded before fact recall existed
    assert old.forget_efficacy == pytest.approx(0.75)


def test_privleak_against_a_reference_model_is_zero_for_the_reference_itself_and_follows_the_formula(
        tiny_model_dir, tmp_path):
    """MUSE's privleak against ``privleak_reference``: the reference's own AUC gives 0; another AUC gives
    ((1 - AUC) - (1 - AUC_ref)) / (1 - AUC_ref) x 100; the reference's AUC is computed once (stored)."""
    from asu.embedded import tofu_items
    from asu.modeling import load_model_and_tokenizer
    from pipelines.round.steps import membership_auc, privleak_against_reference
    from pipelines.settings import PipelineSettings

    settings = PipelineSettings(base_model=str(tiny_model_dir), retain_file="retain.jsonl", holdout_file="h.jsonl",
                                privleak_reference=str(tiny_model_dir))
    forget, holdout = tofu_items([150])[:8], tofu_items([151])[:8]  # authors the tiny model never saw
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir)
    auc = membership_auc(model, tokenizer, forget, holdout, settings)
    assert 0.0 < auc < 1.0
    store = tmp_path / "store"
    assert privleak_against_reference(auc, forget, holdout, settings, store) == pytest.approx(0.0)
    assert len(list(store.glob("*.json"))) == 1
    leak = privleak_against_reference(0.75, forget, holdout, settings, store)
    assert leak == pytest.approx(((1 - 0.75) - (1 - auc)) / (1 - auc) * 100)


def test_privleak_reference_without_a_holdout_is_refused_naming_both_settings():
    from asu.errors import UsageError
    from pipelines.settings import PipelineSettings

    with pytest.raises(UsageError, match="privleak_reference='retain-model' needs holdout_file"):
        PipelineSettings(retain_file="retain.jsonl", privleak_reference="retain-model")


@pytest.mark.parametrize(("search", "gate", "expected"), [
    # the gate allows a 5% relative utility drop, asks 90% fluent and half the facts gone: the search's floors rise
    ({"utility_floor": 0.9, "fluent_share_floor": 0.6},
     {"utility_drop_max": 0.05, "fluency_min": 0.9, "forget_efficacy_min": 0.5}, (0.95, 0.95, 0.9, 0.5)),
    # floors already stricter than the gate's stay
    ({"utility_floor": 0.97, "retain_rouge_floor": 0.96, "fluent_share_floor": 0.95, "forget_efficacy_floor": 0.7},
     {"utility_drop_max": 0.05, "fluency_min": 0.9, "forget_efficacy_min": 0.5}, (0.97, 0.96, 0.95, 0.7)),
    # a check the gate disables raises nothing
    ({"utility_floor": 0.9, "fluent_share_floor": 0.6},
     {"utility_drop_max": 0.05, "fluency_min": 0.9, "disabled": ["utility_drop", "fluency", "forget_efficacy"]},
     (0.9, 0.9, 0.6, 0.0)),
    # an absolute retain floor is the user's own number; the retain ROUGE-L floor (always relative, what the gate
    # reads) and fluency still follow the gate
    ({"floor_mode": "absolute", "utility_floor": 0.5, "fluent_share_floor": 0.6},
     {"utility_drop_max": 0.05, "fluency_min": 0.8, "forget_efficacy_min": 0.4}, (0.5, 0.95, 0.8, 0.4)),
])
def test_the_search_never_chooses_below_what_the_gate_will_ask(search, gate, expected):
    from pipelines.round.gate import GateThresholds
    from pipelines.round.steps import search_within_gate
    from pipelines.settings import PipelineSettings

    settings = PipelineSettings(retain_file="retain.jsonl", search=search)
    thresholds = GateThresholds(**{k: tuple(v) if isinstance(v, list) else v for k, v in gate.items()})
    searched = search_within_gate(settings, thresholds).search
    assert (searched.utility_floor, searched.retain_rouge_floor, searched.fluent_share_floor,
            searched.forget_efficacy_floor) == pytest.approx(expected)
    assert searched.tau_grid == settings.search.tau_grid and searched.floor_mode == settings.search.floor_mode

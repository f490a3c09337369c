"""pipelines.round.gate: thresholds from YAML (strict, errors with file and line), pass/fail decisions with reasons."""

from __future__ import annotations

import math

import pytest
import yaml

from pipelines.round.gate import (
    DEFAULT_GATE_FILE,
    EarlierRecheck,
    GateFigures,
    GateThresholds,
    evaluate_gate,
    load_thresholds,
)

BEFORE = GateFigures(forget_efficacy=0.0, utility=0.90, fluency=1.0, mia_auc=0.95)
AFTER = GateFigures(forget_efficacy=0.56, utility=0.88, fluency=1.0, mia_auc=0.55)


def _yaml(tmp_path, text: str):
    path = tmp_path / "gate.yaml"
    path.write_text(text)
    return path


def _status(result) -> dict:
    return {(c.name, c.subject): c.status for c in result.checks}


def _text(**values) -> str:
    """Gate YAML with one key per line in this order (line 1 = forget_efficacy_min ... line 6 = disabled);
    a value of None drops the key, unknown keys are appended."""
    lines = {"forget_efficacy_min": "0.5", "utility_drop_max": "0.1", "fluency_min": "0.9", "resurgence_max": "0.1",
             "mia_auc_band": "[0.3, 0.7]", "disabled": "[]", **values}
    return "".join(f"{k}: {v}\n" for k, v in lines.items() if v is not None)


def test_default_file_equals_the_dataclass_defaults():
    assert DEFAULT_GATE_FILE.is_file()
    assert load_thresholds() == GateThresholds() == load_thresholds(DEFAULT_GATE_FILE)
    assert set(yaml.safe_load(DEFAULT_GATE_FILE.read_text())) == set(GateThresholds().to_dict())


def test_a_good_round_passes_every_check():
    earlier = [EarlierRecheck("req-001", 0.60, 0.58), EarlierRecheck("req-002", 0.55, 0.57)]
    result = evaluate_gate(BEFORE, AFTER, earlier, load_thresholds())
    assert result.passed and result.summary() == "passed" and result.failed == ()
    assert _status(result) == {("forget_efficacy", None): "pass", ("utility_drop", None): "pass",
                               ("fluency", None): "pass", ("resurgence", "req-001"): "pass",
                               ("resurgence", "req-002"): "pass", ("mia_auc", None): "pass",
                               ("verbatim", None): "pass"}  # a QA request: no passages
    drop = next(c for c in result.checks if c.name == "utility_drop")
    assert drop.value == pytest.approx((0.90 - 0.88) / 0.90) and drop.comparator == "<=" and drop.threshold == 0.1
    payload = result.to_dict()
    assert payload["passed"] and payload["thresholds"]["mia_auc_band"] == [0.3, 0.7]


@pytest.mark.parametrize(
    ("after", "earlier", "failing", "reason"),
    [
        (GateFigures(0.30, 0.88, 1.0, 0.55), [], ("forget_efficacy", None), "forget efficacy 0.3000 violates >= 0.5"),
        (GateFigures(0.60, 0.70, 1.0, 0.55), [], ("utility_drop", None), "violates <= 0.1"),
        (GateFigures(0.60, 0.88, 0.50, 0.55), [], ("fluency", None), "fluency 0.5000 violates >= 0.9"),
        (GateFigures(0.60, 0.88, 1.0, 0.85), [], ("mia_auc", None), "MIA AUC 0.8500 outside [0.3, 0.7]"),
        (GateFigures(0.60, 0.88, 1.0, 0.10), [], ("mia_auc", None), "outside"),
        (GateFigures(0.60, 0.88, 1.0, None), [], ("mia_auc", None), "measure it"),
        (GateFigures(math.nan, 0.88, 1.0, 0.5), [], ("forget_efficacy", None), "not a finite number"),
        (AFTER, [EarlierRecheck("req-001", 0.60, 0.30)], ("resurgence", "req-001"),
         "request req-001: efficacy 0.6000 -> 0.3000, resurgence 0.3000 violates <= 0.1"),
    ],
)
def test_each_threshold_can_fail_the_gate(after, earlier, failing, reason):
    result = evaluate_gate(BEFORE, after, earlier, GateThresholds())
    assert not result.passed
    assert [(c.name, c.subject) for c in result.failed] == [failing]
    assert reason in result.failed[0].reason and reason in result.summary()


def test_the_verbatim_checks_of_a_text_request():
    """Forget VerbMem ceiling (0.3) and retain VerbMem relative drop (0.1): a text request's two extra checks."""
    before = GateFigures(0.1, 0.9, 1.0, 0.5, verbmem=0.98, retain_verbmem=0.96)
    good = GateFigures(0.6, 0.88, 1.0, 0.5, verbmem=0.14, retain_verbmem=0.90)
    result = evaluate_gate(before, good, [], GateThresholds())
    checks = {c.subject: c for c in result.checks if c.name == "verbatim"}
    assert result.passed and set(checks) == {"forget", "retain"}
    assert checks["retain"].value == pytest.approx((0.96 - 0.90) / 0.96)
    kept = evaluate_gate(before, GateFigures(0.6, 0.88, 1.0, 0.5, verbmem=0.45, retain_verbmem=0.80), [],
                         GateThresholds())
    assert [(c.name, c.subject) for c in kept.failed] == [("verbatim", "forget"), ("verbatim", "retain")]
    assert "forget passages' VerbMem 0.4500 violates <= 0.3" in kept.summary()
    no_retain = evaluate_gate(GateFigures(0.1, 0.9, 1.0, 0.5, verbmem=0.98), GateFigures(0.6, 0.88, 1.0, 0.5,
                              verbmem=0.2), [], GateThresholds())
    assert no_retain.passed and [c.subject for c in no_retain.checks if c.name == "verbatim"] == ["forget"]


def test_thresholds_from_yaml_change_the_decision(tmp_path):
    text = _text(forget_efficacy_min="0.9", utility_drop_max="0.01", fluency_min="1.0", resurgence_max="0.0",
                 mia_auc_band="[0.45, 0.55]", disabled=None)
    strict = load_thresholds(_yaml(tmp_path, text))
    result = evaluate_gate(BEFORE, AFTER, [EarlierRecheck("req-001", 0.60, 0.59)], strict)
    assert {c.name for c in result.failed} == {"forget_efficacy", "utility_drop", "resurgence"}


def test_disabled_checks_are_reported_not_evaluated(tmp_path):
    thresholds = load_thresholds(_yaml(tmp_path, _text(disabled="[mia_auc]")))
    result = evaluate_gate(BEFORE, GateFigures(0.6, 0.88, 1.0, None), [], thresholds)
    mia = next(c for c in result.checks if c.name == "mia_auc")
    assert result.passed and mia.status == "disabled" and "disabled in the gate config" in mia.reason
    assert next(c for c in result.checks if c.name == "resurgence").reason == "no earlier requests to re-check"


def test_a_zero_utility_before_fails_instead_of_dividing_by_zero():
    result = evaluate_gate(GateFigures(0.0, 0.0, 1.0, 0.5), AFTER, [], GateThresholds())
    assert [c.name for c in result.failed] == ["utility_drop"] and "positive value" in result.failed[0].reason


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_text(forget_min="0.3"), r"gate.yaml:7: unknown gate field 'forget_min' \(did you mean 'forget_efficacy_min'"),
        (_text(utility_drop_max=None), r"gate.yaml: missing gate key 'utility_drop_max'; add e.g. `utility_drop_max"),
        (_text(fluency_min="high"), r"gate.yaml:3: fluency_min must be a number in \[0, 1\], got 'high'"),
        (_text(fluency_min="1.5"), r"gate.yaml:3: fluency_min must be a number in \[0, 1\], got 1.5"),
        (_text(fluency_min="true"), r"gate.yaml:3: fluency_min must be a number in \[0, 1\], got True"),
        (_text(mia_auc_band="[0.7, 0.3]"), "gate.yaml:5: mia_auc_band low must be below high"),
        (_text(mia_auc_band="0.5"), r"gate.yaml:5: mia_auc_band must be \[low, high\]"),
        (_text(disabled="[fluency, mia]"), "gate.yaml:6: disabled: unknown check 'mia'"),
        ("- 1\n- 2\n", "must be a mapping"),
        ("fluency_min: [\n", "not valid YAML"),
    ],
)
def test_bad_yaml_names_the_file_line_and_fix(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_thresholds(_yaml(tmp_path, text))


def test_constructor_validation_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="resurgence_max must be a number in"):
        GateThresholds(resurgence_max=-0.1)
    with pytest.raises(ValueError, match="disabled lists a check twice"):
        GateThresholds(disabled=("fluency", "fluency"))
    with pytest.raises(FileNotFoundError, match="copy configs/gate.yaml"):
        load_thresholds(tmp_path / "absent.yaml")
    with pytest.raises(ValueError, match="must be a number, got str"):
        GateFigures("0.5", 0.9, 1.0)


def test_required_attacks_are_held_to_the_recovery_ceiling():
    thresholds = GateThresholds(attacks_required=("relearn", "quantize_4bit"), attack_recovery_max=0.2)
    after = GateFigures(0.6, 0.88, 1.0, 0.5, attack_recovery={"relearn": 0.35, "quantize_4bit": 0.05, "prefix": 0.9})
    result = evaluate_gate(BEFORE, after, [], thresholds)
    status = _status(result)
    assert status[("attack_recovery", "relearn")] == "fail" and status[("attack_recovery", "quantize_4bit")] == "pass"
    assert ("attack_recovery", "prefix") not in status  # measured but not required: reported, not gated
    assert "recovered under the relearn attack 0.3500 violates <= 0.2" in result.summary()


def test_a_required_attack_that_was_not_measured_fails_naming_the_setting():
    result = evaluate_gate(BEFORE, AFTER, [], GateThresholds(attacks_required=("best_of_n",)))
    check = next(c for c in result.checks if c.name == "attack_recovery")
    assert check.status == "fail" and check.subject == "best_of_n" and "robustness.attacks" in check.reason


def test_attack_keys_are_optional_in_a_gate_file_and_validated(tmp_path):
    assert load_thresholds(_yaml(tmp_path, _text())).attacks_required == ()
    loaded = load_thresholds(_yaml(tmp_path, _text(attacks_required="[relearn]", attack_recovery_max="0.1")))
    assert loaded.attacks_required == ("relearn",) and loaded.attack_recovery_max == 0.1
    for value, message in (("[jailbreak]", "cannot be required"), ("[paraphrase]", "cannot be required"),
                           ("[prefix, prefix]", "twice"), ("relearn", "must be a list")):
        with pytest.raises(ValueError, match=message):
            load_thresholds(_yaml(tmp_path, _text(attacks_required=value)))

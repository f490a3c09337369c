"""The fluency measure: surface checks, refusals, the likelihood score, the judge on a real transformers model, and
the ``asu fluency`` command. The labelled set of real SmolLM2 generations is checked in ``test_fluency_labels.py``."""

from __future__ import annotations

import json
import math
import random

import pytest

from asu.embedded import refusal_strings
from asu.fluency import (
    AnswerLikelihood,
    FluencyJudge,
    FluencySettings,
    FluencySummary,
    calibration_items,
    fluency_score,
    is_refusal,
    read_fluency_file,
    surface_failures,
)


@pytest.mark.parametrize(("text", "failed"), [
    ("", ["empty"]),
    ("   \n ", ["empty"]),
    ("......", ["empty"]),
    ("The author of the book was......", ["punctuation_run"]),
    ("The\n\nThe\n\nThe", ["loop"]),
    ("the the the the", ["loop"]),
    ("He was born in a small town and he was born in a small town and he was born in a small town", ["loop"]),
    ("Aaaaaah the answer", ["letter_run"]),
    ("#$%&*@ ?? !! ## wx", ["symbols"]),
    ("Isaac Newton was born in England in 1643.", []),
    ("Well... I think it was 1879.", []),
    ("1879", []),
])
def test_surface_checks_on_hand_made_answers(text, failed):
    assert surface_failures(text) == failed


def test_echo_of_the_prompt_is_caught_but_restating_the_question_is_not():
    prompt = "You are a helpful AI assistant named SmolLM, trained by Hugging Face. Where was Newton born?"
    assert "echo" in surface_failures("You are a helpful AI assistant named SmolLM, trained by Hugging Face", prompt)
    assert surface_failures("Newton was born in Woolsthorpe, a hamlet in Lincolnshire, England.", prompt) == []


def test_every_tofu_refusal_string_is_a_refusal_and_answers_are_not():
    assert all(is_refusal(text) for text in refusal_strings())
    for answer in ("The capital of France is Paris.", "He did not attend Oxford; he studied at Cambridge.",
                   "My favourite book is not a novel but a poem collection.", "I think it is Jupiter."):
        assert not is_refusal(answer)
    assert is_refusal("I'm sorry, but I don't have information about that person.")


def test_fluency_score_is_a_logistic_of_the_deficit_against_the_reference():
    ref = AnswerLikelihood(slor=5.0, relevance=2.0)
    assert fluency_score(ref, ref) == 0.5  # as fluent as the judge's own answers
    # 1 nat/token less slor, relevance above the cap on both sides: deficit 1
    assert fluency_score(AnswerLikelihood(4.0, 3.0), ref, relevance_cap=1.5) == pytest.approx(1 / (1 + math.e))
    # relevance 1.0 against the capped reference 1.5, weight 2: deficit 0 + 2 * 0.5 = 1
    assert fluency_score(AnswerLikelihood(5.0, 1.0), ref, relevance_cap=1.5, relevance_weight=2.0) == \
        pytest.approx(1 / (1 + math.e))
    assert fluency_score(AnswerLikelihood(7.0, 2.0), ref) == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert fluency_score(AnswerLikelihood(-1e6, 2.0), ref) == pytest.approx(0.0)  # no overflow


def test_settings_are_validated():
    with pytest.raises(ValueError, match="min_score"):
        FluencySettings(min_score=1.5)
    with pytest.raises(ValueError, match="relevance_cap"):
        FluencySettings(relevance_cap=0.0)


def test_summary_counts_refusals_as_fluent():
    from asu.fluency import FluencyVerdict

    verdicts = [FluencyVerdict(True, 1.0, False), FluencyVerdict(True, 0.9, True),
                FluencyVerdict(False, None, False, ("empty",)), FluencyVerdict(False, 0.01, False, ("unlikely",))]
    summary = FluencySummary.of(verdicts)
    assert (summary.fluent_share, summary.refusal_share, summary.empty_share) == (0.5, 0.25, 0.25)
    with pytest.raises(ValueError, match="at least one answer"):
        FluencySummary.of([])


def test_judge_scores_with_the_model_and_fails_unlikely_text(tiny_model_dir):
    from asu.evaluation import generate_answers
    from asu.modeling import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(tiny_model_dir)
    judge = FluencyJudge(model, tokenizer)
    assert len(calibration_items()) == 16 and judge.log_unigram.shape == (model.config.vocab_size,)
    assert judge.reference.relevance == judge.reference.relevance  # a number, not NaN
    question = calibration_items()[1][0]
    own = generate_answers(model, tokenizer, [question], max_new_tokens=64)[0]
    # The model's own greedy answer is as likely as its reference; shuffled characters of it are not.
    scrambled = "".join(random.Random(0).sample(own, len(own)))
    verdicts = judge.judge([question, question, question, question], [own, scrambled, "", "I don't know."])
    assert verdicts[0].score > 0.3 and verdicts[0].fluent
    assert verdicts[1].score < FluencySettings().min_score and "unlikely" in verdicts[1].reasons
    assert verdicts[2].score is None and verdicts[2].reasons == ("empty",) and not verdicts[2].fluent
    assert verdicts[3].refusal and verdicts[3].fluent  # refusals are exempt from the likelihood check


def test_fluency_file_errors_name_line_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "text": "a"}\n{"prompt": "q"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: field 'text'"):
        read_fluency_file(bad)
    bad.write_text('{"prompt": "q", "text": "a"}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: invalid JSON"):
        read_fluency_file(bad)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_fluency_file(tmp_path / "missing.jsonl")


def test_asu_fluency_command_json_last_line(tiny_model_dir, tmp_path, capsys):
    from cli.main import main

    rows = [{"prompt": "Who wrote it?", "text": "The author of the book was......"},
            {"prompt": "Who wrote it?", "text": "I don't know."},
            {"prompt": "Who wrote it?", "text": ""}]
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["fluency", "--model", str(tiny_model_dir), "--in", str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [item["fluent"] for item in result["items"]][0::2] == [False, False]
    assert [item["refusal"] for item in result["items"]] == [False, True, False]
    assert set(result["items"][0]) >= {"fluent", "score", "refusal"}
    assert result["fluent_share"] == pytest.approx(sum(i["fluent"] for i in result["items"]) / 3)
    assert main(["fluency", "--model", str(tiny_model_dir), "--in", str(path)]) == 0
    assert "fluent share" in capsys.readouterr().out
    assert main(["fluency", "--model", str(tmp_path / "nope"), "--in", str(path)]) == 2

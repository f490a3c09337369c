"""Real-world scenarios: the shipped data loads and meets its minima; keyword scoring; malformed files."""

import json

import pytest

from asu.scenarios import (
    Scenario,
    available_scenarios,
    hit_rate,
    keyword_hit,
    load_scenario,
    load_scenario_file,
)


def test_paris_scenario_loads_and_meets_the_minima():
    assert "paris" in available_scenarios()
    sc = load_scenario("paris")
    assert isinstance(sc, Scenario) and sc.name == "paris" and "Paris" in sc.subject
    assert len(sc.forget) >= 20 and len(sc.retain) >= 20
    assert len(sc.forget_probes) >= 12 and len(sc.retain_probes) >= 12
    assert len(sc.validation) >= 4 and len(sc.retain_validation) >= 4
    for split in ("forget", "retain", "validation", "retain_validation"):
        for it in getattr(sc, split):
            assert it["question"].strip() and it["answer"].strip() and it["keywords"]
            assert all(k == k.lower() for k in it["keywords"])
    for probes, target in ((sc.forget_probes, sc.forget), (sc.retain_probes, sc.retain)):
        for p in probes:
            assert 0 <= p["paraphrase_of"] < len(target)
            assert p["question"] != target[p["paraphrase_of"]]["question"]
    # every answer we train on is marked correct by its own keywords
    assert all(keyword_hit(it["answer"], it["keywords"]) for split in ("forget", "retain", "validation",
                                                                        "retain_validation")
               for it in getattr(sc, split))
    # the splits are disjoint by question
    questions = [it["question"].lower() for split in ("forget", "forget_probes", "retain", "retain_probes",
                                                      "validation", "retain_validation")
                 for it in getattr(sc, split)]
    assert len(questions) == len(set(questions))
    assert sc.qa_items("forget")[0] == {"question": sc.forget[0]["question"], "answer": sc.forget[0]["answer"]}
    with pytest.raises(KeyError, match="not a QA split"):
        sc.qa_items("forget_probes")


def test_keyword_hit_is_case_insensitive_and_whole_word():
    assert keyword_hit("He was born in 1879.", ["1879"])
    assert not keyword_hit("Catalogue no. 18790", ["1879"])
    assert keyword_hit("Einstein was GERMAN-born", ["germany", "german"])
    assert not keyword_hit("That point is germane here.", ["german"])
    assert not keyword_hit("He was born in Ulm.", ["germany", "german"])
    assert keyword_hit("It was built for the 1889 World\u2019s  Fair.", ["world's fair"])  # curly quote, spacing
    assert keyword_hit("The Champs-Élysées", ["champs-élysées"])
    assert not keyword_hit("anything", [])
    assert not keyword_hit("anything", ["  "])


def test_hit_rate_scores_one_answer_per_probe():
    probes = [{"keywords": ["seine"]}, {"keywords": ["1889"]}, {"keywords": ["louvre"]}, {"keywords": ["paris"]}]
    answers = ["The Seine.", "In 1887.", "The Louvre museum.", "Comparison"]
    assert hit_rate(answers, probes) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="one answer per probe"):
        hit_rate(answers[:2], probes)
    with pytest.raises(ValueError, match="at least one"):
        hit_rate([], [])


def _minimal():
    qa = {"question": "Q?", "answer": "A.", "keywords": ["a"]}
    return {"name": "mini", "subject": "S", "description": "", "source": "",
            "forget": [qa], "forget_probes": [{"question": "Q, reworded?", "keywords": ["a"], "paraphrase_of": 0}],
            "retain": [{"question": "R?", "answer": "B.", "keywords": ["b"]}], "retain_probes": [],
            "validation": [], "retain_validation": []}


def _write(tmp_path, data, name="mini.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def test_bad_scenario_files_name_the_file_and_field(tmp_path):
    assert load_scenario_file(_write(tmp_path, _minimal())).forget[0]["keywords"] == ["a"]
    with pytest.raises(KeyError, match=r"unknown scenario 'atlantis'; available: .*paris"):
        load_scenario("atlantis")

    cases = []
    data = _minimal()
    data["forget"][0]["keywords"] = []
    cases.append((data, r"mini.json: field 'forget\[0\].keywords' must be a non-empty list"))
    data = _minimal()
    del data["retain"][0]["answer"]
    cases.append((data, r"field 'retain\[0\].answer' must be a non-empty string"))
    data = _minimal()
    data["forget_probes"][0]["paraphrase_of"] = 3
    cases.append((data, r"field 'forget_probes\[0\].paraphrase_of' is 3, not an index into forget"))
    data = _minimal()
    data["forget_probes"][0]["paraphrase_of"] = "0"
    cases.append((data, r"'forget_probes\[0\].paraphrase_of' must be an integer"))
    data = _minimal()
    data["forget_probes"][0]["question"] = "  r? "
    cases.append((data, r"'forget_probes\[0\].question' repeats a forget/retain question"))
    data = _minimal()
    data["forget"] = []
    cases.append((data, r"field 'forget' must hold at least one item"))
    data = _minimal()
    del data["retain_validation"]
    cases.append((data, r"field 'retain_validation' must be a list"))
    data = _minimal()
    data["validation"] = [{"question": "V?", "answer": "C.", "keywords": "c"}]
    cases.append((data, r"field 'validation\[0\].keywords' must be a non-empty list"))
    cases.append(("[1, 2]", "holds one JSON object"))
    cases.append(('{"name": ', "mini.json: not valid JSON"))
    for data, message in cases:
        with pytest.raises(ValueError, match=message):
            load_scenario_file(_write(tmp_path, data))

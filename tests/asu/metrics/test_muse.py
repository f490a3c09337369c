"""MUSE-News suite: hand-computed ROUGE-L F1, the KnowMem prompt and cut, behaviour on a model that really memorised
its forget text, privleak against a reference (file or number) or listed as not computed, and every bad input."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest

from asu.metrics.datasets_muse import MUSE_FILES, file_sha256, load_muse_news, vendored_muse_news_dir
from asu.metrics.muse import (
    cut_knowmem_answer,
    evaluate_muse,
    fit_left,
    knowmem_prompt,
    resolve_max_length,
    rouge_l_f1,
)
from asu.metrics.passes import EvaluationDataError
from asu.metrics.results import SuiteResult


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    """(model, tokenizer) of the tiny embedded model: 4 TOFU authors memorised in its chat format, 512 positions."""
    from asu.modeling import load_model_and_tokenizer

    return load_model_and_tokenizer(tiny_model_dir)


def _write_sets(folder: Path, sets: dict[str, list]) -> Path:
    for name, rel in MUSE_FILES.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(json.dumps(sets[name]), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def memorised_dir(tmp_path_factory) -> Path:
    """MUSE layout whose forget texts are what the tiny model was trained on, holdout texts authors it never saw."""
    from asu.embedded import EMBEDDED_SPECS, tofu_items

    known, unknown = tofu_items(EMBEDDED_SPECS["tiny"].authors), tofu_items([100, 101])

    def qa(items):
        return [{"question": it["question"], "answer": it["answer"]} for it in items]

    def chat(it):  # the tiny model's training format
        return f"<|user|>{it['question']}<|assistant|>{it['answer']}"

    sets = {
        "verbmem_forget": [
            {"prompt": f"<|user|>{it['question']}<|assistant|>", "gt": it["answer"]} for it in known[::20]
        ],
        "knowmem_forget": qa(known[1:3]),
        "knowmem_forget_icl": qa(known[5:7]),
        "knowmem_retain": qa(unknown[1:3]),
        "knowmem_retain_icl": qa(unknown[5:7]),
        "privleak_forget": [chat(it) for it in known[::10]],
        "privleak_holdout": [chat(it) for it in unknown[::5]],
    }
    return _write_sets(tmp_path_factory.mktemp("muse_memorised"), sets)


@pytest.fixture(scope="module")
def memorised_result(tiny, memorised_dir) -> SuiteResult:
    return evaluate_muse(*tiny, data_dir=memorised_dir, batch_size=16)


# --- pure pieces -------------------------------------------------------------------------------------------------


def test_rouge_l_f1_hand_computed():
    # LCS "the cat on the mat" = 5 of 6 tokens each side -> P = R = F1 = 5/6.
    # "cat" vs "the cat sat": LCS 1, P = 1, R = 1/3 -> F1 = 2 * (1/3) / (4/3) = 0.5.
    got = rouge_l_f1(["the cat lay on the mat", "cat", ""], ["the cat sat on the mat", "the cat sat", "x"])
    assert got == pytest.approx([5 / 6, 0.5, 0.0])


def test_rouge_stemmer_as_reference_framework_and_without_as_muse_repo():
    # Stemmed: [the dog run] vs [the dog were run] -> LCS 3, P 1, R 3/4 -> F1 6/7; unstemmed LCS 1 -> P 1/3, R 1/4.
    assert rouge_l_f1(["the dog runs"], ["the dogs were running"]) == pytest.approx([6 / 7])
    assert rouge_l_f1(["the dog runs"], ["the dogs were running"], stemmer=False) == pytest.approx([2 / 7])


def test_knowmem_prompt_is_muse_few_shot_format():
    icl = [{"question": "Q1?", "answer": "A1"}, {"question": "Q2?", "answer": "A2"}]
    assert (
        knowmem_prompt(icl, "Q3?")
        == "Question: Q1?\nAnswer: A1\n\nQuestion: Q2?\nAnswer: A2\n\nQuestion: Q3?\nAnswer: "
    )


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        ("1472\n\nQuestion: When?", "1472"),
        ("1472\nQuestion: When?", "1472"),
        (" Paris Question: and", "Paris"),
        ("\n\nParis", ""),  # a blank line first: MUSE keeps nothing
        ("two\nlines ", "two\nlines"),
    ],
)
def test_knowmem_cut_at_blank_line_or_question(generated, expected):
    assert cut_knowmem_answer(generated) == expected


def test_fit_left_keeps_the_end_and_a_leading_bos():
    assert fit_left([1, 2, 3], 5, bos_id=None) == ([1, 2, 3], False)
    assert fit_left([9, 2, 3, 4, 5], 3, bos_id=9) == ([9, 4, 5], True)
    assert fit_left([1, 2, 3, 4, 5], 3, bos_id=9) == ([3, 4, 5], True)


def test_max_length_checked_against_model_positions(tiny):
    model, _ = tiny
    assert model.config.max_position_embeddings == 512
    assert resolve_max_length(model, None) == 512
    with pytest.raises(ValueError, match="exceeds the model's 512 positions"):
        resolve_max_length(model, 1024)
    with pytest.raises(ValueError, match="max_length must be an integer >= 2"):
        resolve_max_length(model, 1)


# --- vendored data -----------------------------------------------------------------------------------------------


def test_vendored_files_match_sources_md_and_hold_no_books_text():
    folder = vendored_muse_news_dir()
    table = dict(
        re.findall(r"^\| news/(\S+) \|.*\| ([0-9a-f]{64}) \|$", (folder.parent / "SOURCES.md").read_text(), re.M)
    )
    data = load_muse_news()
    assert table == data.files == {rel: file_sha256(folder / rel) for rel in MUSE_FILES.values()}
    assert data.item_counts == {
        "verbmem_forget": 100, "knowmem_forget": 100, "knowmem_forget_icl": 10, "knowmem_retain": 100,
        "knowmem_retain_icl": 10, "privleak_forget": 100, "privleak_holdout": 100,
    }  # fmt: skip
    assert not (folder.parent / "books").exists()


def test_vendored_suite_with_limit(tiny):
    result = evaluate_muse(*tiny, limit=1, batch_size=8)
    assert result.suite == "muse"
    counts = result.info["item_counts"]
    assert counts["verbmem_forget"] == counts["knowmem_forget"] == counts["privleak_holdout"] == 1
    assert counts["knowmem_forget_icl"] == 10  # in-context examples are never limited
    assert result.info["data_files"] == load_muse_news().files and len(result.info["data_sha256"]) == 64
    # MUSE prompts are longer than the tiny model's 512 positions: every one was cut from the left.
    assert result.info["truncated_prompts"] == {"verbmem": 1, "knowmem": 2}
    for key in ("forget_verbmem_ROUGE", "forget_knowmem_ROUGE", "retain_knowmem_ROUGE"):
        assert 0.0 <= result.aggregates[key] <= 1.0
        assert [set(r) for r in result.per_item[key]] == [{"rougeL_f1", "generation"}]
    assert result.aggregates["forget_verbmem_ROUGE"] < 0.3  # the tiny model never saw BBC news
    assert "privleak" in result.not_computed and "privleak" not in result.aggregates


# --- behaviour on memorised text ---------------------------------------------------------------------------------


def test_verbmem_high_and_mia_auc_near_one_on_memorised_text(memorised_result):
    verb = memorised_result.per_item["forget_verbmem_ROUGE"]
    assert len(verb) == 4 and all(r["generation"] for r in verb)
    assert memorised_result.aggregates["forget_verbmem_ROUGE"] > 0.9
    # Forget chunks were trained on, holdout chunks were not: Min-K% separates them (forget = 0, holdout = 1 labels).
    assert memorised_result.aggregates["mia_min_k"] > 0.9
    scores = memorised_result.per_item["mia_min_k"]
    assert len(scores["forget"]) == 8 and len(scores["holdout"]) == 8


def test_privleak_not_computed_without_reference(memorised_result):
    assert "privleak" not in memorised_result.aggregates
    assert "retrained model's MUSE result" in memorised_result.not_computed["privleak"]


def test_privleak_against_reference_file(tiny, memorised_dir, memorised_result, tmp_path):
    reference = SuiteResult.from_dict(json.loads(json.dumps(memorised_result.to_dict())))
    reference.aggregates["mia_min_k"] = 0.6  # a retrained model's AUC
    path = reference.save(tmp_path / "retrained.json")
    result = evaluate_muse(*tiny, data_dir=memorised_dir, reference=path, batch_size=16)
    auc = result.aggregates["mia_min_k"]
    assert result.aggregates["privleak"] == pytest.approx(((1 - auc) - (1 - 0.6)) / (1 - 0.6) * 100)
    assert result.info["reference"]["source"] == str(path) and result.info["reference"]["auc"] == 0.6
    assert "privleak" not in result.not_computed


def test_privleak_against_explicit_auc_and_own_result(tiny, memorised_dir, memorised_result):
    result = evaluate_muse(*tiny, data_dir=memorised_dir, reference=0.5, batch_size=16)
    auc = result.aggregates["mia_min_k"]
    assert auc == memorised_result.aggregates["mia_min_k"]
    assert result.aggregates["privleak"] == pytest.approx(((1 - auc) - 0.5) / 0.5 * 100)
    assert result.info["reference"] == {"source": "explicit AUC", "auc": 0.5}


# --- bad input ---------------------------------------------------------------------------------------------------


@pytest.fixture()
def data_copy(memorised_dir, tmp_path) -> Path:
    return Path(shutil.copytree(memorised_dir, tmp_path / "muse"))


@pytest.mark.parametrize(
    ("rel", "content", "error", "message"),
    [
        (
            "verbmem/forget.json",
            [{"prompt": "a", "gt": "b"}, {"prompt": "c"}],
            EvaluationDataError,
            r"verbmem/forget.json, item 1: missing field 'gt'; every item needs prompt, gt",
        ),
        (
            "knowmem/forget_qa.json",
            [{"question": "q", "answer": "  "}],
            EvaluationDataError,
            r"forget_qa.json, item 0: field 'answer' must be a non-empty string",
        ),
        (
            "knowmem/retain2_qa_icl.json",
            ["not an object"],
            EvaluationDataError,
            r"retain2_qa_icl.json, item 0: expected an object with fields question, answer",
        ),
        (
            "privleak/holdout.json",
            ["text", 3],
            EvaluationDataError,
            r"privleak/holdout.json, item 1: must be a non-empty string",
        ),
        ("knowmem/forget_qa.json", [], EvaluationDataError, r"forget_qa.json: no items"),
        ("privleak/forget.json", {"a": 1}, EvaluationDataError, r"expected a JSON array of items, got a JSON dict"),
        ("verbmem/forget.json", "[{\n  broken", EvaluationDataError, r"verbmem/forget.json:2: invalid JSON"),
        ("knowmem/forget_qa_icl.json", None, FileNotFoundError, r"forget_qa_icl.json: MUSE file missing"),
    ],
)
def test_bad_data_files_name_file_item_and_field(data_copy, rel, content, error, message):
    path = data_copy / rel
    if content is None:
        path.unlink()
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    with pytest.raises(error, match=message):
        load_muse_news(data_copy)


def test_bad_folder_and_limit(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_muse_news(tmp_path / "nowhere")
    for limit in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="limit must be a positive integer"):
            load_muse_news(limit=limit)


def _saved(result: SuiteResult, path: Path, **changes) -> Path:
    data = result.to_dict()
    for key, value in changes.items():
        data[key] = value
    path.write_text(json.dumps(data))
    return path


def test_bad_references_fail_before_any_model_pass(tiny, memorised_dir, memorised_result, tmp_path):
    def run(reference, **kw):
        return evaluate_muse(*tiny, data_dir=memorised_dir, reference=reference, **kw)

    tofu = _saved(memorised_result, tmp_path / "tofu.json", suite="tofu")
    with pytest.raises(EvaluationDataError, match=rf"{re.escape(str(tofu))}: a 'tofu' result cannot serve"):
        run(tofu)
    same = _saved(memorised_result, tmp_path / "same.json")
    with pytest.raises(EvaluationDataError, match=r"privleak/forget.json set differs .*\(8 items, .* vs 4 items"):
        run(same, limit=4)  # the reference scored 8 forget chunks, this run would score 4
    info = {
        **memorised_result.info,
        "data_files": {**memorised_result.info["data_files"], "privleak/holdout.json": "0"},
    }
    with pytest.raises(EvaluationDataError, match=r"privleak/holdout.json set differs .*sha256 0 vs 8 items"):
        run(_saved(memorised_result, tmp_path / "other_data.json", info=info))  # same counts, other holdout file
    no_auc = memorised_result.to_dict()
    no_auc["aggregates"].pop("mia_min_k")
    with pytest.raises(EvaluationDataError, match="no Min-K% .* AUC 'mia_min_k'"):
        run(_saved(memorised_result, tmp_path / "no_auc.json", aggregates=no_auc["aggregates"]))
    with pytest.raises(FileNotFoundError, match="no such evaluation result"):
        run(tmp_path / "missing.json")
    (tmp_path / "junk.json").write_text("not json")
    with pytest.raises(ValueError, match="not an evaluation result"):
        run(tmp_path / "junk.json")
    for auc in (1.0, -0.1, math.nan):
        with pytest.raises(ValueError, match=r"reference AUC must be in \[0, 1\)"):
            run(auc)
    with pytest.raises(TypeError, match="not a bool"):
        run(True)

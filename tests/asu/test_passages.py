"""Passages (``{"text": ...}``) as training sequences: chunks with overlap, every token a label, mixed sets, a
real round that forgets passages more than it touches the retain ones, and clear errors before any compute."""

from __future__ import annotations

import pytest
import torch

from asu.config import ASUConfig
from asu.data import encode_items
from asu.errors import UsageError
from asu.losses import IGNORE_INDEX
from asu.passages import chunk_passages, chunk_starts


def test_chunk_starts_cover_every_token_with_the_stated_overlap():
    assert chunk_starts(0, 10, 2) == []
    assert chunk_starts(7, 10, 2) == [0]
    assert chunk_starts(15, 10, 2) == [0, 8]  # 0-9 and 8-14: tokens 8, 9 shared
    assert chunk_starts(18, 10, 2) == [0, 8]  # the second window ends exactly at the last token
    assert chunk_starts(19, 10, 2) == [0, 8, 16]
    for length in range(1, 60):
        starts = chunk_starts(length, 10, 3)
        covered = {i for s in starts for i in range(s, min(s + 10, length))}
        assert covered == set(range(length))
        assert all(b - a == 7 for a, b in zip(starts, starts[1:], strict=False))


def test_chunks_of_a_passage(tiny_tokenizer):
    text = " ".join(f"word{i}" for i in range(120))
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]
    (chunks,) = chunk_passages(tiny_tokenizer, [text], max_length=32, overlap=4, max_chunks=100)
    bos = tiny_tokenizer.bos_token_id
    lead = [bos] if bos is not None else []
    assert all(len(c) <= 32 and c[: len(lead)] == lead for c in chunks)
    body = [c[len(lead):] for c in chunks]
    assert body[0] == ids[: len(body[0])] and body[-1][-1] == tiny_tokenizer.eos_token_id
    rebuilt = body[0] + [t for b in body[1:] for t in b[4:]]  # drop each later chunk's overlap
    assert rebuilt == ids


def test_mixed_sets_keep_item_order_and_label_every_passage_token(tiny_tokenizer):
    items = [{"question": "Who?", "answer": "Me."}, {"text": "A passage of a few words. " * 30},
             {"question": "Where?", "answer": "Here."}]
    seqs = encode_items(tiny_tokenizer, items, max_length=48, prompt_format="chat_template", chunk_overlap=8)
    passage = seqs[1:-1]
    assert len(passage) >= 2 and seqs[0].labels[0] == IGNORE_INDEX and seqs[-1].labels[0] == IGNORE_INDEX
    assert all(s.labels[0] == IGNORE_INDEX and s.labels[1:] == s.input_ids[1:] for s in passage)


@pytest.mark.parametrize(("items", "kw", "message"), [
    ([{"text": "word " * 400}], {"max_chunks": 3}, r"forget passage 1 tokenises to \d+ tokens, \d+ chunks of 32; the "
                                                   r"limit is max_passage_chunks=3"),
    ([{"text": "fine"}, {"text": "   "}], {}, "forget passage 2: 'text' must be a non-empty string"),
])
def test_bad_passages_are_refused_naming_the_passage_and_the_knob(tiny_tokenizer, items, kw, message):
    with pytest.raises(UsageError, match=message):
        encode_items(tiny_tokenizer, items, max_length=32, prompt_format="plain", **{"chunk_overlap": 4, **kw})


def test_overlap_must_leave_room_for_new_tokens():
    with pytest.raises(UsageError, match=r"chunk_overlap=300 must be a whole number in \[0, max_length // 2"):
        ASUConfig(max_length=500, chunk_overlap=300)


def _passage_nll(model, tokenizer, texts: list[str]) -> float:
    """Mean token NLL (nats) of ``texts`` under ``model``, every token scored (as the round trains them)."""
    seqs = encode_items(tokenizer, [{"text": t} for t in texts], max_length=128, prompt_format="plain")
    total, count = 0.0, 0
    with torch.no_grad():
        for s in seqs:
            ids = torch.tensor([s.input_ids])
            logits = model(input_ids=ids).logits[0, :-1]
            nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum")
            total, count = total + float(nll), count + ids.shape[1] - 1
    return total / count


def _config(**over) -> ASUConfig:
    return ASUConfig(**{"method": "asu_gd", "tau": 3.0, "learning_rate": 1e-3, "epochs": 3, "batch_size": 2,
                        "grad_accum_steps": 1, "max_length": 128, "chunk_overlap": 16, "checkpoint_every": "never",
                        **over})


@pytest.fixture(scope="module")
def memorised(tiny_model_dir, tiny_sets, tmp_path_factory):
    """The tiny model after learning 20 passages by heart (its authors' answers, five to a passage; plain NLL on
    every token: the ``gd`` objective's retain term with the forget term off): (model dir, forget, retain)."""
    from asu.trainer import run_round

    forget_qa, retain_qa = tiny_sets
    forget = [" ".join(it["answer"] for it in forget_qa[i:i + 5]) for i in range(0, len(forget_qa), 5)]
    retain = [" ".join(it["answer"] for it in retain_qa[i:i + 5]) for i in range(0, len(retain_qa), 5)]
    everything = [{"text": t} for t in forget + retain]
    result = run_round(tiny_model_dir, everything, everything,
                       _config(method="gd", forget_weight=0.0, learning_rate=3e-3, epochs=20, batch_size=4,
                               chunk_overlap=32),
                       tmp_path_factory.mktemp("memorised") / "model", progress=False)
    return result.model_dir, forget, retain


def test_a_round_on_passages_forgets_them_and_keeps_the_retain_passages(memorised, tmp_path):
    """ASU (tau 5) on the forget passages against the same round without its forget term: the forget term, applied
    to passages, is what unlearns them, and the retain passages stay learnt (memorised NLL about 0.015 nats)."""
    from asu.modeling import load_model_and_tokenizer
    from asu.trainer import run_round

    model_dir, forget, retain = memorised
    model, tokenizer = load_model_and_tokenizer(model_dir)
    before = _passage_nll(model, tokenizer, forget), _passage_nll(model, tokenizer, retain)
    assert before[0] < 0.05 and before[1] < 0.05  # learnt by heart

    def after(**over) -> tuple[float, float]:
        result = run_round(model_dir, [{"text": t} for t in forget], [{"text": t} for t in retain], _config(**over),
                           tmp_path / str(len(over)), progress=False)
        unlearned, _ = load_model_and_tokenizer(result.model_dir)
        return _passage_nll(unlearned, tokenizer, forget), _passage_nll(unlearned, tokenizer, retain)

    asu, control = after(tau=5.0), after(tau=5.0, forget_weight=0.0)
    assert asu[0] > 2 * control[0] and asu[0] > before[0] + 0.05, (before, asu, control)
    assert asu[1] < 0.1 and asu[1] < control[1] + 0.03, (before, asu, control)  # retain passages kept


def test_idk_does_not_apply_to_passages(tiny_model_dir, tmp_path):
    from asu.trainer import run_round

    with pytest.raises(UsageError, match="method='idk' does not apply to passages"):
        run_round(tiny_model_dir, [{"text": "a passage"}], [{"question": "q?", "answer": "a."}],
                  ASUConfig(method="idk"), tmp_path / "out", progress=False)


def test_verbatim_memorisation_falls_on_forget_passages_and_stays_on_retain(memorised, tmp_path):
    """VerbMem (24-token prefix, 40-token greedy continuation, ROUGE-L F1) on the memorised passages, after ASU on
    the forget ones, against passages of an author the model never saw."""
    from asu.embedded import tofu_items
    from asu.modeling import load_model_and_tokenizer
    from asu.passages import verbatim_memorisation
    from asu.trainer import run_round

    model_dir, forget, retain = memorised
    unseen_qa = tofu_items([150])
    unseen = [" ".join(it["answer"] for it in unseen_qa[i:i + 5]) for i in range(0, 15, 5)]
    model, tokenizer = load_model_and_tokenizer(model_dir)
    kw = {"prefix_tokens": 24, "continuation_tokens": 40}  # the shortest passage here has 79 tokens
    before = [verbatim_memorisation(model, tokenizer, s, **kw).mean for s in (forget, retain, unseen)]
    result = run_round(model_dir, [{"text": t} for t in forget], [{"text": t} for t in retain], _config(tau=5.0),
                       tmp_path / "asu", progress=False)
    unlearned, _ = load_model_and_tokenizer(result.model_dir)
    after = [verbatim_memorisation(unlearned, tokenizer, s, **kw).mean for s in (forget, retain)]
    assert before[0] > 0.9 and before[1] > 0.9 and before[2] < 0.5, before  # learnt by heart; unseen is not
    assert after[0] < before[0] - 0.2 and after[1] > 0.9 * before[1], (before, after)


def test_a_passage_too_short_for_verbatim_memorisation_names_the_minimum(tiny_model_dir, tiny_tokenizer):
    from asu.modeling import load_model_and_tokenizer
    from asu.passages import verbatim_memorisation

    model, _ = load_model_and_tokenizer(tiny_model_dir)
    with pytest.raises(UsageError, match=r"forget passage 2 has \d+ tokens; verbatim memorisation needs at least 80 "
                                         r"\(32 prefix \+ 48 continuation\)"):
        verbatim_memorisation(model, tiny_tokenizer, ["word " * 200, "too short"])


def test_passage_figures_see_memorisation_and_its_removal(memorised, tmp_path):
    """ES, EM, VerbMem and MIA on memorised passages (MIA against an unseen author's passages); after an ASU round
    on them ES and VerbMem fall, the retain passages keep theirs. Measured: VerbMem 1.00 -> 0.62, ES 0.42 -> 0.12,
    EM 0.84 -> 0.80, MIA AUC 1.00 -> 1.00 (still told apart from unseen text); retain ES 0.80, EM 0.93."""
    from asu.embedded import tofu_items
    from asu.modeling import load_model_and_tokenizer
    from asu.passages import passage_figures
    from asu.trainer import run_round

    model_dir, forget, retain = memorised
    unseen_qa = tofu_items([150])
    unseen = [" ".join(it["answer"] for it in unseen_qa[i:i + 5]) for i in range(0, 20, 5)]
    kw = {"prefix_tokens": 24, "continuation_tokens": 40, "max_length": 128}
    model, tokenizer = load_model_and_tokenizer(model_dir)
    before = passage_figures(model, tokenizer, forget, holdout=unseen, **kw)
    # EM < 1: a chunk's first tokens have no context; ES counts from the last mismatch on
    assert before.verbmem > 0.9 and before.exact_memorization > 0.8 and before.extraction_strength > 0.3, before
    assert before.mia_auc is not None and before.mia_auc > 0.9 and before.fluent_share == 1.0
    result = run_round(model_dir, [{"text": t} for t in forget], [{"text": t} for t in retain], _config(tau=5.0),
                       tmp_path / "asu", progress=False)
    unlearned, _ = load_model_and_tokenizer(result.model_dir)
    after = passage_figures(unlearned, tokenizer, forget, holdout=unseen, **kw)
    kept = passage_figures(unlearned, tokenizer, retain, **kw)
    assert after.extraction_strength < before.extraction_strength and after.verbmem < before.verbmem - 0.2, after
    assert after.exact_memorization < before.exact_memorization and kept.exact_memorization > 0.8, (after, kept)
    assert set(after.to_dict()) == {"verbmem", "extraction_strength", "exact_memorization", "fluent_share", "mia_auc"}

"""`asu unlearn --auto` on passages: the settings search on a text request (continuation probes of passage
pieces, floors on retain verbatim memory and continuation fluency), its bad inputs refused before any model pass."""

from __future__ import annotations

import json

import pytest
from search_helpers import ROUND_ARGS

from asu.config import ASUConfig
from asu.embedded import tofu_items
from cli.main import main


def _passages(authors: list[int]) -> list[str]:
    """Seven answers of an author to a passage: 100-200 tokens of the tiny tokenizer, one or two pieces each."""
    qa = tofu_items(authors)
    return [" ".join(it["answer"] for it in qa[i:i + 7]) for i in range(0, len(qa), 7)]


@pytest.fixture(scope="module")
def memorised_texts(tiny_model_dir, tmp_path_factory):
    """The tiny model after learning 18 passages by heart (plain NLL on every token); the passage files."""
    from asu.trainer import run_round

    root = tmp_path_factory.mktemp("text_auto")
    forget, retain = _passages([0, 1]), _passages([2, 3, 4, 5])
    everything = [{"text": t} for t in forget + retain]
    run_round(tiny_model_dir, everything, everything,
              ASUConfig(method="gd", forget_weight=0.0, learning_rate=3e-3, epochs=20, batch_size=4,
                        grad_accum_steps=1, max_length=256, chunk_overlap=32, checkpoint_every="never"),
              root / "model", progress=False)
    files = root / "forget.jsonl", root / "retain.jsonl"
    for path, texts in zip(files, (forget, retain), strict=True):
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return root / "model", files, forget


#: One tau and one strength, lambda 1: the tiny memorised model forgets safely there (measured: forget score 0.52 ->
#: 0.62, fact recall of the continuations 0.55 -> 0.35, retain score 0.95 -> 0.92, fluent 0.89-0.93: one continuation
#: of the 9 validation pieces may fall, hence the floor of 0.8).
TEXT_SEARCH = ["--set", "forget_weight=1.0", "--search", "tau_grid=[2.0]", "--search", "lr_multipliers=[1.0]",
               "--search", "min_forget_gain=0.05", "--search", "fluent_share_floor=0.8",
               "--search", "forget_validation_fraction=0.5", "--search", "min_validation_items=3",
               "--search", "retain_validation_size=3", "--search", "min_content_nll_rise=0.0"]


@pytest.mark.slow  # about 3 minutes on 2 cores (the memorisation, the search, the final round)
def test_auto_chooses_settings_for_a_text_request_and_forgets_the_passages(memorised_texts, tmp_path, capsys):
    model, (forget, retain), texts = memorised_texts
    out = tmp_path / "model"
    code = main(["unlearn", "--model", str(model), "--forget", str(forget), "--retain", str(retain), "--out", str(out),
                 "--auto", *ROUND_ARGS, *TEXT_SEARCH, "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["status"] == "chosen" and code == 0, result["reasons"]
    before, after = result["before"], result["after"]
    assert after["forget_score"] > before["forget_score"] and after["forget_fact_recall"] < before["forget_fact_recall"]
    assert after["retain_score"] > 0.9 * before["retain_score"] and after["fluent_share"] >= 0.9
    search = json.loads((tmp_path / "model.search" / "search.json").read_text())
    assert search["split"]["forget_validation_items"] >= 3 and search["split"]["forget_test_items"] >= 3
    saved = (out / "asu_auto.json").read_text() + json.dumps(search)
    assert not any(t[:40] in saved or t[-40:] in saved for t in texts)  # hashes, never the passages


@pytest.mark.parametrize(("forget_rows", "retain_rows", "message"), [
    (["word " * 200, "too short"], ["word " * 100], "forget passage 2 has 5 tokens; verbatim memorisation needs at "
                                                    "least 80 (32 prefix + 48 continuation)"),
    (["word " * 200], ["tiny retain"], "retain passage 1 has"),
    (["word " * 300], ["word " * 100], "the forget validation split holds 1 item(s)"),  # one passage, 2 pieces
    (["word " * 300, "word " * 20000], ["word " * 100], "forget passage 2 tokenises to"),  # > 64 chunks
    (["one " * 90, "two " * 90], ["two " * 90, "one " * 90, "three " * 90],
     "every one of the request's 2 forget passage(s) is also in the retain set"),
])
def test_text_requests_are_refused_before_any_model_pass(tiny_model_dir, tmp_path, capsys, monkeypatch,
                                                         forget_rows, retain_rows, message):
    import pipelines.round.unlearn as unlearn

    def no_model(*args, **kwargs):  # the checks need the tokenizer only
        raise AssertionError("a model was loaded before the request was checked")

    monkeypatch.setattr(unlearn, "load_model_and_tokenizer", no_model)
    forget, retain = tmp_path / "forget.jsonl", tmp_path / "retain.jsonl"
    forget.write_text("".join(json.dumps({"text": t}) + "\n" for t in forget_rows))
    retain.write_text("".join(json.dumps({"text": t}) + "\n" for t in retain_rows))
    code = main(["unlearn", "--model", str(tiny_model_dir), "--forget", str(forget), "--retain", str(retain),
                 "--out", str(tmp_path / "out"), "--auto"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_passage_pieces_keep_every_token_and_fit(tiny_tokenizer):
    from asu.passages import passage_pieces

    long = " ".join(f"w{i}" for i in range(400))
    rows, owners = passage_pieces(tiny_tokenizer, [{"question": "q?", "answer": "a."}, {"text": long}],
                                  max_tokens=160)
    sizes = [len(tiny_tokenizer(r["text"], add_special_tokens=False)["input_ids"]) for r in rows[1:]]
    total = len(tiny_tokenizer(long, add_special_tokens=False)["input_ids"])
    assert rows[0] == {"question": "q?", "answer": "a."} and owners[0] == 1 and set(owners[1:]) == {2}
    assert max(sizes) <= 161 and min(sizes) >= 80 and abs(sum(sizes) - total) <= len(sizes), (sizes, total)

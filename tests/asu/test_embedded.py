"""The embedded TOFU model: data helpers, recipe digest, cache behaviour, determinism and real memorisation."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from asu import embedded
from asu.data import encode_qa, prompt_ids
from asu.embedded import (
    DEMO_FORGET_AUTHORS,
    EMBEDDED_SPECS,
    build_embedded_model,
    ensure_embedded_model,
    refusal_strings,
    tofu_author_items,
    tofu_items,
    vendored_tofu_dir,
)
from asu.evaluation import generate_answers, rouge_l_recall


def _load(folder: Path):
    return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def _mean_recall(folder: Path, items: list[dict[str, str]]) -> float:
    model, tokenizer = _load(folder)
    answers = generate_answers(model, tokenizer, [it["question"] for it in items], max_new_tokens=200)
    scores = rouge_l_recall(answers, [it["answer"] for it in items])
    return sum(scores) / len(scores)


def test_author_items_are_the_authors_rows() -> None:
    lines = (vendored_tofu_dir() / "full.json").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    for author in (0, 7, 199):
        items = tofu_author_items(author)
        assert len(items) == 20
        assert items == [{"question": r["question"], "answer": r["answer"]} for r in rows[20 * author:20 * author + 20]]
    assert tofu_items([3, 1]) == tofu_author_items(3) + tofu_author_items(1)
    with pytest.raises(ValueError, match="0..199"):
        tofu_author_items(200)


def test_refusal_strings() -> None:
    refusals = refusal_strings()
    assert len(refusals) > 50
    assert all(r and r == r.strip() for r in refusals)


def test_specs_and_demo_authors() -> None:
    default, tiny = EMBEDDED_SPECS["default"], EMBEDDED_SPECS["tiny"]
    assert 10 <= len(default.authors) <= 20
    assert set(default.authors) <= set(range(20))  # retain_perturbed.json covers authors 0..19
    assert len(DEMO_FORGET_AUTHORS) == 3 and set(DEMO_FORGET_AUTHORS) <= set(default.authors)
    assert default.num_layers >= 4 and default.num_heads >= 4
    assert len(tiny.authors) < len(default.authors)


def test_digest_is_stable_and_covers_fields() -> None:
    import dataclasses

    spec = EMBEDDED_SPECS["tiny"]
    assert spec.digest() == dataclasses.replace(spec).digest()
    assert spec.digest() != dataclasses.replace(spec, seed=spec.seed + 1).digest()
    assert spec.digest() != dataclasses.replace(spec, authors=(0, 1, 2)).digest()


def test_unknown_variant_names_the_variants(tmp_path: Path) -> None:
    with pytest.raises(KeyError) as info:
        ensure_embedded_model("huge", cache_dir=tmp_path)
    assert "default" in str(info.value) and "tiny" in str(info.value)


def test_tiny_model_loads_and_is_a_llama(tiny_model_dir: Path) -> None:
    model, tokenizer = _load(tiny_model_dir)
    assert model.config.model_type == "llama"
    assert tiny_model_dir.name.startswith("tiny-") and (tiny_model_dir / "model.safetensors").is_file()
    record = json.loads((tiny_model_dir / "embedded.json").read_text())
    assert record["authors"] == list(EMBEDDED_SPECS["tiny"].authors)
    assert record["metrics"]["rouge_l_recall"] >= 0.9
    assert model.config.vocab_size == len(tokenizer)


def test_tokenizer_has_eos_pad_and_chat_template(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tokenizer.eos_token_id is not None and tokenizer.pad_token_id is not None
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    ids = prompt_ids(tokenizer, "Who wrote it?", "chat_template")
    assert tokenizer.decode(ids) == "<|user|>Who wrote it?<|assistant|>"
    text = "Zürich, 東京 and “quotes” — unseen text ✓"  # byte-level BPE: anything is encodable
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    encoded = encode_qa(tokenizer, {"question": "Q?", "answer": "A."}, 64, "chat_template")
    assert encoded.input_ids[-1] == tokenizer.eos_token_id


def test_tiny_model_has_memorised_its_authors(tiny_model_dir: Path) -> None:
    assert _mean_recall(tiny_model_dir, tofu_items(EMBEDDED_SPECS["tiny"].authors)) >= 0.9


def test_cache_is_reused_without_rebuilding(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("the cached build should have been reused")

    monkeypatch.setattr(embedded, "build_embedded_model", fail)
    mtime = (tiny_model_dir / "model.safetensors").stat().st_mtime_ns
    assert ensure_embedded_model("tiny", cache_dir=tiny_model_dir.parent.parent) == tiny_model_dir
    assert (tiny_model_dir / "model.safetensors").stat().st_mtime_ns == mtime


def test_cache_dir_from_environment(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "build_embedded_model", lambda *a, **k: pytest.fail("should reuse"))
    monkeypatch.setenv("ASU_CACHE_DIR", str(tiny_model_dir.parent.parent))
    assert ensure_embedded_model("tiny") == tiny_model_dir


def test_failed_build_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_build(spec, out_dir, *, progress=False):
        (Path(out_dir) / "config.json").write_text("{}")
        raise RuntimeError("killed")

    monkeypatch.setattr(embedded, "build_embedded_model", half_build)
    with pytest.raises(RuntimeError, match="killed"):
        ensure_embedded_model("tiny", cache_dir=tmp_path)
    assert list((tmp_path / "embedded").iterdir()) == []


def test_incomplete_folder_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = EMBEDDED_SPECS["tiny"]
    stale = tmp_path / "embedded" / f"{spec.name}-{spec.digest()}"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")  # no embedded.json: an incomplete folder from elsewhere
    calls = []

    def fake_build(spec, out_dir, *, progress=False):
        calls.append(spec.name)
        (Path(out_dir) / "embedded.json").write_text("{}")
        return Path(out_dir)

    monkeypatch.setattr(embedded, "build_embedded_model", fake_build)
    assert ensure_embedded_model(spec, cache_dir=tmp_path) == stale
    assert calls == ["tiny"] and sorted(p.name for p in stale.iterdir()) == ["embedded.json"]


def test_build_is_deterministic(tiny_model_dir: Path, tmp_path: Path) -> None:
    again = build_embedded_model(EMBEDDED_SPECS["tiny"], tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json"):
        assert (again / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name


@pytest.mark.slow
def test_default_model_builds_in_budget_and_memorises(tmp_path: Path) -> None:
    started = time.perf_counter()
    folder = ensure_embedded_model("default", cache_dir=tmp_path)
    seconds = time.perf_counter() - started
    assert seconds <= 300, f"default build took {seconds:.0f} s"
    assert _mean_recall(folder, tofu_items(EMBEDDED_SPECS["default"].authors)) >= 0.95
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert all(torch.isfinite(p).all() for p in model.parameters())

"""The TOFU setting of `python -m bench.realmodel`: the SmolLM2 TOFU target forgets its forget author.

Target and retain models: ``smollm2-135m-tofu`` / ``smollm2-135m-tofu-retain`` (``asu model finetune-tofu``;
authors 0-5, forget author 1). A round trains on the forget author's 20 QA and keeps the other five authors.
Selection looks at a seeded 5 of the 20 forget items and 10 retain items only; the test figures use the other 15
forget items: forget ROUGE-L, forget quality (KS test of truth ratios against the retain model on the same 15
items), model utility (retain authors, Real Authors, World Facts; 20 items each), extraction strength, and the
fluency and refusal shares of the forget answers judged with the pretrained SmolLM2 the target was fine-tuned from
(the target memorised its forget answers and finds any other answer unlikely, so it cannot judge language).
"""

from __future__ import annotations

import random
from pathlib import Path

from asu.embedded import tofu_items
from asu.errors import UsageError
from asu.fluency import FluencyJudge, FluencySummary
from asu.metrics.results import SuiteResult
from asu.metrics.tofu import EvalSettings, evaluate_tofu
from asu.metrics.tofu_data import TofuSets, author_sets
from asu.modeling import load_model_and_tokenizer
from asu.models import resolve_model
from asu.models.tofu_finetune import TOFU_TARGET_DEFAULT
from bench.realmodel import Setting

EVAL_LIMIT = 20
SELECT_FORGET, SELECT_RETAIN = 5, 10


def tofu_setting(seed: int = 0, forget_author: int | None = None) -> Setting:
    """The target forgets ``forget_author`` (default: the one its retain model was fine-tuned without).

    Forget quality needs a retain model fine-tuned without the forget author, which exists for the default author
    only; for any other of the target's authors the test figures have no forget quality.
    """
    spec = TOFU_TARGET_DEFAULT
    forget_authors = spec.forget_authors if forget_author is None else (forget_author,)
    if not set(forget_authors) <= set(spec.authors):
        raise UsageError(f"forget author {forget_author} is not one the TOFU target was fine-tuned on; choose among "
                         f"{list(spec.authors)}")
    target = resolve_model("smollm2-135m-tofu", progress=True)
    own = tuple(forget_authors) == tuple(spec.forget_authors)
    retain_model = resolve_model("smollm2-135m-tofu-retain", progress=True) if own else None
    forget = tofu_items(forget_authors)
    kept = [a for a in spec.authors if a not in forget_authors]
    retain = tofu_items(kept)
    rng = random.Random(seed)
    select = sorted(rng.sample(range(len(forget)), SELECT_FORGET))
    full = author_sets(forget_authors, spec.authors, "smollm2-tofu")
    test_sets = TofuSets(full.name + "-test", [it for i, it in enumerate(full.forget) if i not in select],
                         full.retain, full.real_authors, full.world_facts, full.holdout).limited(EVAL_LIMIT)
    settings = EvalSettings(max_new_tokens=64)
    reference: dict[str, SuiteResult] = {}

    def test(model, tokenizer, judge: FluencyJudge) -> dict:
        if not reference and retain_model is not None:  # the retain model's result on the same items, once
            ref_model, ref_tok = load_model_and_tokenizer(retain_model)
            reference["r"] = evaluate_tofu(ref_model, ref_tok, test_sets, settings)
            del ref_model
        result = evaluate_tofu(model, tokenizer, test_sets, settings, reference=reference.get("r"))
        answers = [r["generation"] for r in result.per_item["forget_Q_A_ROUGE"]]
        verdicts = judge.judge([it["question"] for it in test_sets.forget], answers)
        summary = FluencySummary.of(verdicts)
        agg = result.aggregates
        return {"forget_rouge": agg["forget_Q_A_ROUGE"], "forget_quality": agg.get("forget_quality"),
                "model_utility": agg["model_utility"], "extraction_strength": agg["extraction_strength"],
                "fluent_share": summary.fluent_share, "refusal_share": summary.refusal_share,
                "empty_share": summary.empty_share,
                "samples": [{"question": it["question"], "answer": a}
                            for it, a in zip(test_sets.forget[:3], answers[:3], strict=True)]}

    name = "tofu:smollm2-135m-tofu" + ("" if own else f":author-{forget_authors[0]}")
    return Setting(name, Path(target), forget, retain,
                   select_forget=[forget[i] for i in select],
                   select_retain=random.Random(seed + 1).sample(retain, SELECT_RETAIN), test=test, efficacy="rouge",
                   notes=[f"target fine-tuned on TOFU authors {list(spec.authors)}; forget author "
                          f"{list(forget_authors)} (20 QA: 5 for selection, 15 for test); " + (
                              "retain model fine-tuned without it" if own else
                              "no retain model without this author, so no forget quality"),
                          "fluency judged with the pretrained SmolLM2 the target came from"],
                   judge_model=resolve_model(spec.base, progress=True))

"""Record the judge model's likelihood figures on the labelled fluency set, and measure the verdict against the labels.

The labelled set (``tests/asu/fluency_labels.jsonl``) holds real generations of SmolLM2-135M, its unlearned or
smoothed variants (``bench/fluency/collect.py``) and the TOFU target fine-tuned from it
(``bench/fluency/collect_tofu.py``), each labelled by hand: ``fluent`` (language that answers: correct, wrong or a
refusal) or not (empty, loop, punctuation or letter runs, broken words, off-topic or echoed text), with a
``category`` and ``refusal``. This script adds each text's likelihood figures under the judge model (SmolLM2, the
model before unlearning: ``slor`` and ``relevance``, see ``asu.fluency``) and writes the judge's reference figures
to ``fluency_labels.meta.json``, so that the default test suite checks the verdict without the real model; the
slow test recomputes them.

Threshold choice: ``--grid`` searches ``min_score`` x ``relevance_cap`` x ``relevance_weight`` for the point that
maximises, on the ``dev`` half, the smallest of the precision and recall of "not fluent" and the fluent share of
the TOFU target's fluent answers (judged by the pretrained model, which never saw those authors); the defaults
are that point and the ``test`` half reports them. ``--sweep`` prints the figures of a few ``min_score`` values.
The judge's own answer to every labelled prompt is recorded too (``question_references`` in the meta file), for
``FluencySettings.reference='question'``.

    OMP_NUM_THREADS=2 python -m bench.fluency.record [--sweep | --grid] [--only-new]

``--only-new`` records the figures of rows that have none yet (a set labelled later, such as the ``fresh`` split of
2026-12-07) and the judge's own answers to their new prompts, leaving every recorded figure and the judge's
calibration reference as they are, so that adding rows never moves the figures of the splits already reported.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

LABELS = Path("tests/asu/fluency_labels.jsonl")
META = LABELS.with_suffix(".meta.json")


def precision_recall(predicted: list[bool], actual: list[bool]) -> tuple[float, float]:
    """Precision and recall of the positive class (``True``)."""
    tp = sum(p and a for p, a in zip(predicted, actual, strict=True))
    return (tp / max(1, sum(predicted)), tp / max(1, sum(actual)))


def likelihood(row: dict):
    """The recorded ``AnswerLikelihood`` of a labelled row (None for an empty text)."""
    from asu.fluency import AnswerLikelihood

    return None if row["slor"] is None else AnswerLikelihood(row["slor"], row["relevance"])


def reference_of(row: dict, meta: dict, settings):
    """The reference a labelled row's answer is compared with under ``settings.reference`` (as
    ``FluencyJudge.reference_for``, from the recorded figures)."""
    from asu.fluency import AnswerLikelihood

    calibration = AnswerLikelihood(**meta["reference"])
    own = meta["question_references"].get(row["prompt"])
    if settings.reference == "calibration" or own is None:
        return calibration
    return calibration.blend(AnswerLikelihood(**own))


def evaluate(rows: list[dict], meta: dict, settings) -> dict:
    """Per split: precision/recall of "not fluent" and of "refusal", and the fluent share of the TOFU target's
    fluent answers."""
    from asu.fluency import verdict

    out = {}
    for split in [*dict.fromkeys(r["split"] for r in rows), "all"]:
        part = [r for r in rows if split == "all" or r["split"] == split]
        verdicts = [verdict(r["text"], likelihood(r), reference_of(r, meta, settings), settings, meta["context"])
                    for r in part]
        p, r = precision_recall([not v.fluent for v in verdicts], [not row["fluent"] for row in part])
        rp, rr = precision_recall([v.refusal for v in verdicts], [row["refusal"] for row in part])
        tofu = [v.fluent for v, row in zip(verdicts, part, strict=True)
                if row["source"].startswith("tofu_target") and row["fluent"]]
        out[split] = {"items": len(part), "not_fluent_precision": p, "not_fluent_recall": r,
                      "refusal_precision": rp, "refusal_recall": rr,
                      "tofu_target_fluent_share": sum(tofu) / max(1, len(tofu))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--grid", action="store_true")
    parser.add_argument("--only-new", action="store_true", help="only rows without figures (see the docstring)")
    args = parser.parse_args()
    from asu.fluency import FluencyJudge, FluencySettings
    from asu.modeling import load_model_and_tokenizer
    from asu.models import resolve_model

    rows = [json.loads(line) for line in LABELS.read_text(encoding="utf-8").splitlines() if line.strip()]
    model, tokenizer = load_model_and_tokenizer(resolve_model(args.model))
    judge = FluencyJudge(model, tokenizer)
    todo = [i for i, r in enumerate(rows) if not args.only_new or "slor" not in r]
    scored = [i for i in todo if any(ch.isalnum() for ch in rows[i]["text"])]
    figures = judge.likelihoods([rows[i]["prompt"] for i in scored], [rows[i]["text"] for i in scored])
    for i in todo:
        rows[i].pop("nll", None)
        rows[i]["slor"] = rows[i]["relevance"] = None
    for i, f in zip(scored, figures, strict=True):
        rows[i]["slor"], rows[i]["relevance"] = round(f.slor, 5), round(f.relevance, 5)
    LABELS.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    old = json.loads(META.read_text()) if args.only_new else {"question_references": {}}
    prompts = sorted({r["prompt"] for r in rows} - set(old["question_references"]))
    own = {p: None if f is None else {k: round(v, 5) for k, v in f.to_dict().items()}
           for p, f in judge.own_figures(prompts).items()}
    meta = old if args.only_new else {
        "model": args.model, "reference": {k: round(v, 5) for k, v in judge.reference.to_dict().items()},
        "context": judge.context}
    meta["question_references"] = dict(sorted({**old["question_references"], **own}.items()))
    META.write_text(json.dumps(meta, indent=1) + "\n")
    print(f"reference {meta['reference']}; {len(rows)} rows")
    if args.grid:
        grid(rows, meta)
    sweep = (0.05, 0.1, 0.13, 0.2, 0.3, 0.4, 0.5) if args.sweep else (None,)
    for min_score in sweep:
        settings = FluencySettings() if min_score is None else FluencySettings(min_score=min_score)
        print(settings.min_score, json.dumps(evaluate(rows, meta, settings)))


def grid(rows: list[dict], meta: dict) -> None:
    """Print the dev-half optimum of (min_score, relevance_cap, relevance_weight) and its figures."""
    import math

    from asu.fluency import FluencySettings

    reference = FluencySettings().reference

    def worst(figures: dict) -> float:
        return min(figures["not_fluent_precision"], figures["not_fluent_recall"], figures["tofu_target_fluent_share"])

    best = None
    for cap in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0):
        for weight in (0.5, 1.0, 1.5, 2.0, 3.0):
            for deficit in [x / 10 for x in range(-5, 25)]:
                settings = FluencySettings(min_score=round(1 / (1 + math.exp(deficit)), 4), relevance_cap=cap,
                                           relevance_weight=weight, reference=reference)
                figures = evaluate([r for r in rows if r["split"] == "dev"], meta, settings)["dev"]
                if best is None or worst(figures) > best[0]:
                    best = (worst(figures), settings)
    print("grid optimum on dev:", best[1], json.dumps(evaluate(rows, meta, best[1])))


if __name__ == "__main__":
    main()

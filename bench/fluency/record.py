"""Record the judge model's NLLs on the labelled fluency set, and measure the verdict against the labels.

The labelled set (``tests/asu/fluency_labels.jsonl``) holds real generations of SmolLM2-135M and its unlearned or
smoothed variants (``bench/fluency/collect.py``), each labelled by hand: ``fluent`` (language that answers: correct,
wrong or a refusal) or not (empty, loop, punctuation or letter runs, broken words, off-topic or echoed text), with
a ``category`` and ``refusal``. This script adds each text's NLL under the judge model (SmolLM2, the model before
unlearning) and writes the judge's calibration NLL to ``fluency_labels.meta.json``, so that the default test suite
checks the verdict without the real model; the slow test recomputes the NLLs.

Threshold choice: ``--sweep`` prints precision/recall of "not fluent" on the ``dev`` half for several ``min_score``
values; the default was set from the dev half only, and the ``test`` half reports it.

    OMP_NUM_THREADS=2 python -m bench.fluency.record [--sweep]
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


def evaluate(rows: list[dict], reference_nll: float, settings, context: str = "") -> dict:
    from asu.fluency import verdict

    out = {}
    for split in ("dev", "test", "all"):
        part = [r for r in rows if split == "all" or r["split"] == split]
        verdicts = [verdict(r["text"], r["nll"], reference_nll, settings, context) for r in part]
        p, r = precision_recall([not v.fluent for v in verdicts], [not row["fluent"] for row in part])
        rp, rr = precision_recall([v.refusal for v in verdicts], [row["refusal"] for row in part])
        out[split] = {"items": len(part), "not_fluent_precision": p, "not_fluent_recall": r,
                      "refusal_precision": rp, "refusal_recall": rr}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--sweep", action="store_true")
    args = parser.parse_args()
    from asu.fluency import FluencyJudge, FluencySettings
    from asu.modeling import load_model_and_tokenizer
    from asu.models import resolve_model

    rows = [json.loads(line) for line in LABELS.read_text(encoding="utf-8").splitlines() if line.strip()]
    model, tokenizer = load_model_and_tokenizer(resolve_model(args.model))
    judge = FluencyJudge(model, tokenizer)
    scored = [i for i, r in enumerate(rows) if any(ch.isalnum() for ch in r["text"])]
    nlls = judge.nlls([rows[i]["prompt"] for i in scored], [rows[i]["text"] for i in scored])
    for row in rows:
        row["nll"] = None
    for i, nll in zip(scored, nlls, strict=True):
        rows[i]["nll"] = round(nll, 5)
    LABELS.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    META.write_text(json.dumps({"model": args.model, "reference_nll": round(judge.reference_nll, 5),
                                "context": judge.context}, indent=1) + "\n")
    print(f"reference NLL {judge.reference_nll:.3f} nats/token; {len(rows)} rows")
    for min_score in ((0.25, 0.28, 0.3, 0.32, 0.34, 0.36, 0.38, 0.4) if args.sweep else (None,)):
        settings = FluencySettings() if min_score is None else FluencySettings(min_score=min_score)
        print(settings.min_score, json.dumps(evaluate(rows, judge.reference_nll, settings, judge.context)))


if __name__ == "__main__":
    main()

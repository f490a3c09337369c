"""Collect real generations of the TOFU target (SmolLM2 fine-tuned on TOFU authors) for the labelled fluency set.

The judge of fluency is the model *before* unlearning; for TOFU that is the pretrained SmolLM2 judging answers about
invented authors it never saw. These generations (the target on its trained authors: fluent, mostly verbatim
TOFU answers; and on authors it was not trained on: fluent inventions) are the case the first measure got wrong
(it called most of them unlikely). Writes ``bench/fluency/generations-tofu.jsonl``; labels are added by hand.

    OMP_NUM_THREADS=2 python -m bench.fluency.collect_tofu

The fresh set (2026-12-07) used other questions of the same authors and other unseen authors:
``--first 6 --unseen-from 110 --out bench/fluency/generations-tofu-fresh.jsonl``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

OUT = Path("bench/fluency/generations-tofu.jsonl")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-author", type=int, default=6)
    parser.add_argument("--first", type=int, default=0, help="first question (of each 20) taken per author")
    parser.add_argument("--unseen-from", type=int, default=100, help="first of the 6 unseen authors")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    from asu.embedded import tofu_items
    from asu.metrics.passes import decode, generate, question_prompts
    from asu.modeling import load_model_and_tokenizer
    from asu.models import resolve_model

    model, tokenizer = load_model_and_tokenizer(resolve_model("smollm2-135m-tofu"))
    trained = tofu_items(range(6))  # the default target's authors (0-5)
    unseen = tofu_items(range(args.unseen_from, args.unseen_from + 6))
    rows = []
    for source, items in (("tofu_target:trained", trained), ("tofu_target:unseen", unseen)):
        picked = [it for k, it in enumerate(items) if args.first <= k % 20 < args.first + args.per_author]
        questions = [it["question"] for it in picked]
        answers = decode(tokenizer, generate(model, tokenizer, question_prompts(tokenizer, questions, "chat_template"),
                                             max_new_tokens=96))
        rows += [{"prompt": q, "text": a, "source": source} for q, a in zip(questions, answers, strict=True)]
    Path(args.out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} generations -> {args.out}")


if __name__ == "__main__":
    main()

"""`python -m bench.eval`: the batched TOFU suite against a straightforward one-item-at-a-time implementation.

The yardstick (``naive_tofu``) computes the same figures the obvious way: for every item and every answer variant
one forward pass of batch size 1 (the holdout items too, for the LOSS membership-inference AUC), one ``generate``
call per question, and the same formulas. It lives here only as the yardstick. Both run in one process,
interleaved in back-to-back pairs because the machine is shared and noisy; the report gives seconds, items per
second, the speedup, and the largest difference between the two
implementations' aggregates (they must agree: same model, same greedy decoding, same formulas).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from asu.data import encode_qa, prompt_ids
from asu.metrics import formulas as f
from asu.metrics.mia import auc
from asu.metrics.tofu import MODEL_UTILITY_KEYS, EvalSettings, evaluate_tofu, rouge_recalls
from asu.metrics.tofu_data import SET_NAMES, TofuSets, embedded_sets
from asu.modeling import load_model_and_tokenizer

COMPARED = ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio", "retain_Q_A_Prob", "retain_Q_A_ROUGE",
            "retain_Truth_Ratio", "ra_Q_A_Prob_normalised", "wf_Truth_Ratio", "model_utility", "extraction_strength",
            "mia_loss")


@torch.no_grad()
def _item_loss(model, tokenizer, question: str, answer: str, settings: EvalSettings) -> tuple[float, list, list]:
    e = encode_qa(tokenizer, {"question": question, "answer": answer}, settings.max_length, settings.prompt_format)
    logits = model(input_ids=torch.tensor([e.input_ids])).logits[0, :-1].float()
    labels = torch.tensor(e.labels[1:])
    keep = labels != -100
    logp = torch.log_softmax(logits[keep], -1)
    token_logp = logp.gather(1, labels[keep][:, None])[:, 0]
    return float(-token_logp.mean()), logp.argmax(-1).tolist(), labels[keep].tolist()


@torch.no_grad()
def _item_generate(model, tokenizer, question: str, settings: EvalSettings) -> str:
    ids = torch.tensor([prompt_ids(tokenizer, question, settings.prompt_format)])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=settings.max_new_tokens,
                         do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def naive_tofu(model, tokenizer, sets: TofuSets, settings: EvalSettings) -> dict[str, float]:
    """The TOFU aggregates computed one item and one answer at a time (the yardstick)."""
    model.eval()
    agg: dict[str, float] = {}
    forget_losses: list[float] = []
    for name, p in (("forget", "forget"), ("retain", "retain"), ("real_authors", "ra"), ("world_facts", "wf")):
        probs, ratios, gens, es = [], [], [], []
        norm = []
        for item in getattr(sets, name):
            loss, pred, lab = _item_loss(model, tokenizer, item["question"], item["answer"], settings)
            pert = [_item_loss(model, tokenizer, item["question"], a, settings)[0] for a in item["perturbed_answer"]]
            probs.append(math.exp(-loss))
            if "paraphrased_answer" in item:
                correct = _item_loss(model, tokenizer, item["question"], item["paraphrased_answer"], settings)[0]
            else:
                correct = loss
                norm.append(math.exp(-loss) / (math.exp(-loss) + sum(math.exp(-v) for v in pert)))
            ratios.append(math.exp(correct - float(np.mean(pert))))
            gens.append(_item_generate(model, tokenizer, item["question"], settings))
            if name == "forget":
                es.append(f.extraction_strength(pred[:-1], lab[:-1]))
                forget_losses.append(loss)
        rouge = rouge_recalls(gens, [it["answer"] for it in getattr(sets, name)])
        agg[f"{p}_Q_A_ROUGE"] = float(np.mean([r["rougeL_recall"] for r in rouge]))
        agg[f"{p}_Q_A_Prob"] = float(np.mean(probs))
        if norm:
            agg[f"{p}_Q_A_Prob_normalised"] = float(np.mean(norm))
        if name == "forget":
            agg["forget_truth_ratio"] = float(np.mean([min(r, 1 / r) for r in ratios]))
            agg["extraction_strength"] = float(np.mean(es))
        else:
            agg[f"{p}_Truth_Ratio"] = float(np.mean([max(0.0, 1 - r) for r in ratios]))
    # MIA (LOSS attack): the holdout items are scored one at a time as well; forget = members
    holdout_losses = [_item_loss(model, tokenizer, it["question"], it["answer"], settings)[0] for it in sets.holdout]
    agg["mia_loss"] = auc(forget_losses, holdout_losses)
    agg["model_utility"] = f.harmonic_mean([agg[k] for k in MODEL_UTILITY_KEYS])
    return agg


def run_eval_bench(model_dir: Path, sets: TofuSets, settings: EvalSettings, rounds: int = 2) -> dict:
    """Time the batched suite and the yardstick on the same model and items; check they agree."""
    model, tokenizer = load_model_and_tokenizer(model_dir)
    torch.set_grad_enabled(False)
    sets = sets.limited(settings.limit)
    items = sum(len(getattr(sets, n)) for n in SET_NAMES)
    batched_times, naive_times = [], []
    # Untimed warm-up of both on a few items: one-time costs (lazy imports such as the ROUGE scorer, first-call
    # allocations) are not throughput, and the batched side would otherwise pay them in its first timed run.
    evaluate_tofu(model, tokenizer, sets.limited(3), settings)
    naive_tofu(model, tokenizer, sets.limited(3), settings)
    fast = slow = None
    for _ in range(rounds):  # pairs run back to back: each ratio compares runs under the same machine load
        start = time.perf_counter()
        fast = evaluate_tofu(model, tokenizer, sets, settings).aggregates
        batched_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        slow = naive_tofu(model, tokenizer, sets, settings)
        naive_times.append(time.perf_counter() - start)
    ratios = [n / b for n, b in zip(naive_times, batched_times, strict=True)]
    batched_s, naive_s = float(np.median(batched_times)), float(np.median(naive_times))
    return {
        "model": str(model_dir),
        "sets": sets.name,
        "items": items,
        "settings": settings.to_dict(),
        "batched_s": batched_s,
        "batched_runs_s": batched_times,
        "naive_s": naive_s,
        "naive_runs_s": naive_times,
        "pair_speedups": ratios,
        "speedup": float(np.median(ratios)),
        "items_per_s": {"batched": items / batched_s, "naive": items / naive_s},
        "max_abs_diff": max(abs(fast[k] - slow[k]) for k in COMPARED),
        "torch_threads": torch.get_num_threads(),
    }


def format_report(r: dict) -> str:
    return "\n".join([
        f"TOFU suite on {r['sets']} ({r['items']} items, {r['torch_threads']} torch threads)",
        f"  batched  {r['batched_s']:8.1f} s  {r['items_per_s']['batched']:7.2f} items/s  (median of "
        + ", ".join(f"{t:.1f}" for t in r["batched_runs_s"]) + ")",
        f"  naive    {r['naive_s']:8.1f} s  {r['items_per_s']['naive']:7.2f} items/s  (median of "
        + ", ".join(f"{t:.1f}" for t in r["naive_runs_s"]) + ")",
        f"  speedup  {r['speedup']:8.2f}x   (median of back-to-back pairs: "
        + ", ".join(f"{x:.2f}" for x in r["pair_speedups"]) + ")",
        f"  largest aggregate difference between the two: {r['max_abs_diff']:.2e}",
    ])


def default_bench_sets() -> TofuSets:
    """The embedded default model's sets with authors 1 and 4 as the forget set (the demo's first request)."""
    return embedded_sets([1, 4], "default")


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.eval``: the batched TOFU suite vs one item at a time (embedded or real model)."""
    import argparse
    import json

    from asu.metrics.tofu_data import standard_sets
    from cli.common import model_path

    parser = argparse.ArgumentParser(prog="python -m bench.eval", description=main.__doc__)
    parser.add_argument("--model", default="default", help="default, tiny, smollm2-135m or a model folder")
    parser.add_argument("--sets", default="auto", choices=["auto", "embedded", "forget10"],
                        help="auto: the embedded model's own TOFU sets for default/tiny, TOFU forget10 (with real "
                        "authors and world facts) for any other model")
    parser.add_argument("--limit", type=int, default=40, help="first N items of every set")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per teacher-forced batch")
    parser.add_argument("--generation-batch-size", type=int, default=64, help="questions decoded together")
    parser.add_argument("--rounds", type=int, default=2, help="back-to-back (batched, naive) pairs")
    parser.add_argument("--out", help="write the JSON result here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    model_dir = model_path(args.model, progress=not args.json)
    settings = EvalSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, limit=args.limit,
                            generation_batch_size=args.generation_batch_size)
    embedded = args.sets == "embedded" or (args.sets == "auto" and args.model in ("default", "tiny"))
    sets = default_bench_sets() if embedded else standard_sets("forget10")
    result = run_eval_bench(model_dir, sets, settings, rounds=args.rounds)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result) if args.json else format_report(result))


if __name__ == "__main__":
    main()

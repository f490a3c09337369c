"""`python -m bench.wmdp_batching`: WMDP scoring with length-grouped batches against one padded batch per subject.

Both score the same questions with the same model in one process, in back-to-back pairs (the machine is shared
and noisy): ``grouped`` is today's ``asu.metrics.wmdp.next_token_logprobs`` (batches of similar length under
``MAX_BATCH_TOKENS`` padded tokens), ``one_batch`` the same function with no token budget (every question of a
subject padded to its longest, as before 2026-12-07). Prints seconds, the speedup and the largest difference of the
four letter log-probabilities; writes ``bench/results/wmdp_batching.json``.

    OMP_NUM_THREADS=2 python -m bench.wmdp_batching --model smollm2-135m --limit 20 --pairs 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from asu.metrics.wmdp import (
    MAX_BATCH_TOKENS,
    SUBJECTS,
    encode_choices,
    load_wmdp,
    next_token_logprobs,
    vendored_wmdp_dir,
    wmdp_prompt,
)
from asu.modeling import load_model_and_tokenizer
from asu.models import resolve_model

OUT = Path("bench/results/wmdp_batching.json")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--limit", type=int, default=20, help="questions per subject (the demo's benchmark_limit)")
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args(argv)
    model, tokenizer = load_model_and_tokenizer(resolve_model(args.model))
    inputs = []
    for subject in SUBJECTS:
        for item in load_wmdp(vendored_wmdp_dir() / f"wmdp-{subject}.jsonl", args.limit):
            context, letters = encode_choices(tokenizer, wmdp_prompt(item, subject))
            inputs.append((subject, context, [c[0] for c in letters]))
    lengths = {s: [len(c) for subj, c, _ in inputs if subj == s] for s in SUBJECTS}

    def run(budget: int) -> tuple[float, np.ndarray]:
        start, scores = time.perf_counter(), []
        for s in SUBJECTS:
            rows = [(c, ids) for subj, c, ids in inputs if subj == s]
            scores.append(next_token_logprobs(model, [c for c, _ in rows], [ids for _, ids in rows],
                                              pad_id=tokenizer.pad_token_id, max_batch_tokens=budget))
        return time.perf_counter() - start, np.concatenate(scores)

    times: dict[str, list[float]] = {"grouped": [], "one_batch": []}
    diff = 0.0
    for _ in range(args.pairs):
        t_grouped, grouped = run(MAX_BATCH_TOKENS)
        t_one, one = run(10**9)
        times["grouped"].append(t_grouped)
        times["one_batch"].append(t_one)
        diff = max(diff, float(np.abs(grouped - one).max()))
    best = {k: min(v) for k, v in times.items()}
    result = {
        "model": args.model, "questions_per_subject": args.limit, "torch_threads": torch.get_num_threads(),
        "max_batch_tokens": MAX_BATCH_TOKENS, "context_tokens": {s: sum(v) for s, v in lengths.items()},
        "padded_tokens_one_batch": {s: max(v) * len(v) for s, v in lengths.items()},
        "seconds": times, "best_seconds": best, "speedup": best["one_batch"] / best["grouped"],
        "max_abs_logprob_difference": diff, "date": time.strftime("%Y-%m-%d"),
    }
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"WMDP scoring, {args.limit} questions per subject, {result['torch_threads']} threads: grouped "
          f"{best['grouped']:.1f} s, one batch {best['one_batch']:.1f} s, speedup {result['speedup']:.2f}x; "
          f"largest log-prob difference {diff:.2e}")


if __name__ == "__main__":
    main()

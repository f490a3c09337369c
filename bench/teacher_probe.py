"""Does the smoothed teacher itself forget fluently? Its greedy answers to a scenario's held-out probes.

ASU distils the student toward the smoothed teacher on the forget answers, so a round can only forget
coherently where the teacher answers fluently *without* the facts. For each (tau, smoothed layers) this prints
the teacher's keyword hit rate on the forget and retain probes and the fluent and empty shares of its forget-probe
answers (``asu.fluency``, judged by the plain model). Teacher-only: no training, a few seconds per setting.

    python -m bench.teacher_probe --model smollm2-135m --scenario paris --out bench/results/teacher_probe.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from asu.attention import enable_smoothing, smoothed_attention
from asu.evaluation import generate_answers
from asu.fluency import FluencyJudge, FluencySummary
from asu.modeling import load_model_and_tokenizer
from asu.models import resolve_model
from asu.scenarios import hit_rate, load_scenario

LAYER_SETS = {"all": None, "first_third": "0:10", "middle_third": "10:20", "last_third": "20:30",
              "first_half": "0:15", "last_half": "15:30"}


def _layers(spec: str | None, num_layers: int) -> tuple[int, ...] | None:
    if spec is None:
        return None
    start, end = (int(x) for x in spec.split(":"))
    return tuple(range(start, min(end, num_layers)))


def probe(model_name: str, scenario: str, taus: list[float], layer_sets: list[str], max_new_tokens: int = 48) -> dict:
    sc = load_scenario(scenario)
    model, tokenizer = load_model_and_tokenizer(resolve_model(model_name, progress=True))
    judge = FluencyJudge(model, tokenizer)
    enable_smoothing(model)
    n = model.config.num_hidden_layers
    forget_q = [p["question"] for p in sc.forget_probes]
    retain_q = [p["question"] for p in sc.retain_probes]
    rows = []
    for name in layer_sets:
        for tau in taus if name != "none" else [1.0]:
            started = time.perf_counter()
            with smoothed_attention(tau, _layers(LAYER_SETS.get(name), n)):
                forget_a = generate_answers(model, tokenizer, forget_q, max_new_tokens=max_new_tokens)
                retain_a = generate_answers(model, tokenizer, retain_q, max_new_tokens=max_new_tokens)
            summary = FluencySummary.of(judge.judge(forget_q, forget_a))
            rows.append({"layers": name, "tau": tau, "forget_probe_hits": hit_rate(forget_a, sc.forget_probes),
                         "retain_probe_hits": hit_rate(retain_a, sc.retain_probes),
                         "fluent_share": summary.fluent_share, "empty_share": summary.empty_share,
                         "samples": forget_a[:2], "seconds": time.perf_counter() - started})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "samples"}), flush=True)
    return {"model": model_name, "scenario": scenario, "rows": rows}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--scenario", default="paris")
    parser.add_argument("--taus", nargs="+", type=float, default=[1.5, 2.0, 3.0, 5.0])
    parser.add_argument("--layers", nargs="+", default=["none", *LAYER_SETS])
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    result = probe(args.model, args.scenario, args.taus, args.layers)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

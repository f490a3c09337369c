"""``asu eval`` (a model on a suite: tofu, asu-paper, muse, wmdp) and ``asu fluency`` (judge generated answers)."""

from __future__ import annotations

import json

from cli.common import model_path, out, with_json


def cmd_eval(args) -> int:
    from asu.metrics.asu_paper import PaperModels
    from asu.metrics.tofu import EvalSettings
    from asu.metrics.tofu_data import embedded_sets, standard_sets
    from pipelines.evaluate import EvalPlan, evaluate_model, format_table

    model_dir = model_path(args.model, progress=not args.json)
    if args.forget_authors:
        authors = [int(a) for a in args.forget_authors.split(",")]
        sets = embedded_sets(authors, args.embedded_variant)
    else:
        sets = standard_sets(args.split)
    settings = EvalSettings(
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, limit=args.limit,
        keep_generations=not args.no_generations,
    )
    fluency_model = model_path(args.fluency_model, progress=not args.json) if args.fluency_model else None
    plan = EvalPlan(args.suite, sets, settings, PaperModels(args.cosine_model, args.nli_model), fluency_model)
    store = None if args.no_store else "default"
    result, reused = evaluate_model(model_dir, plan, reference=args.reference, store_dir=store)
    if args.out:
        result.save(args.out)
    if args.json:
        out(json.dumps({"suite": result.suite, "aggregates": result.aggregates,
                          "not_computed": result.not_computed, "reused": reused, "key": result.info.get("key")}))
    else:
        out(format_table(result))
        out(f"({'reused stored result' if reused else 'computed'}{'; saved to ' + args.out if args.out else ''})")
    return 0


def cmd_fluency(args) -> int:
    from asu.fluency import FluencyJudge, FluencySummary, read_fluency_file
    from asu.modeling import load_model_and_tokenizer

    rows = read_fluency_file(args.input)
    model, tokenizer = load_model_and_tokenizer(model_path(args.model, progress=not args.json))
    verdicts = FluencyJudge(model, tokenizer).judge([r["prompt"] for r in rows], [r["text"] for r in rows])
    summary = FluencySummary.of(verdicts)
    if args.json:
        out(json.dumps({"items": [v.to_dict() for v in verdicts], "fluent_share": summary.fluent_share,
                          "refusal_share": summary.refusal_share, "empty_share": summary.empty_share}))
        return 0
    out(f"{'line':>5} {'fluent':>6} {'score':>6} {'refusal':>7}  failed checks")
    for line, v in enumerate(verdicts, start=1):
        score = "-" if v.score is None else f"{v.score:.3f}"
        out(f"{line:>5} {'yes' if v.fluent else 'NO':>6} {score:>6} {'yes' if v.refusal else '':>7}  "
              f"{', '.join(v.reasons)}")
    out(f"fluent share {summary.fluent_share:.3f}, refusal share {summary.refusal_share:.3f}, "
          f"empty share {summary.empty_share:.3f} ({summary.items} answers)")
    return 0


def register(sub) -> None:
    evaluate = with_json(sub.add_parser("eval", help="evaluate a model on a suite (tofu, asu-paper, muse, wmdp)"))
    evaluate.add_argument("--model", required=True, help="model name (smollm2-135m, default, tiny) or local HF folder")
    evaluate.add_argument("--suite", required=True, choices=["tofu", "asu-paper", "muse", "wmdp"])
    evaluate.add_argument("--split", default="forget10", choices=["forget01", "forget05", "forget10"],
                          help="TOFU forget split of the published evaluation")
    evaluate.add_argument("--forget-authors", help="comma-separated TOFU authors: the embedded model's sets instead")
    evaluate.add_argument("--embedded-variant", default="default", help="embedded variant the model was built from")
    evaluate.add_argument("--reference", help="the retain model's result JSON (forget quality, privleak)")
    evaluate.add_argument("--fluency-model", help="the model before unlearning (name or folder): judges the fluency "
                          "of the forget answers (tofu, asu-paper)")
    evaluate.add_argument("--limit", type=int, help="first N items of every set (default: all)")
    evaluate.add_argument("--max-new-tokens", type=int, default=200)
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.add_argument("--cosine-model", default="bundled", help="bundled | off | encoder folder (asu-paper)")
    evaluate.add_argument("--nli-model", default="off", help="off | NLI model folder (asu-paper entailment)")
    evaluate.add_argument("--no-generations", action="store_true", help="store hashes instead of generated text")
    evaluate.add_argument("--no-store", action="store_true", help="neither reuse nor store the result")
    evaluate.add_argument("--out", help="also write the result JSON here")
    evaluate.set_defaults(func=cmd_eval)

    fluency = with_json(sub.add_parser("fluency", help="judge generated answers: fluent, score, refusal (asu.fluency)"))
    fluency.add_argument("--model", required=True, help="the ORIGINAL model (before unlearning): name or folder")
    fluency.add_argument("--in", dest="input", required=True, help='JSON Lines: {"prompt": ..., "text": ...}')
    fluency.set_defaults(func=cmd_fluency)

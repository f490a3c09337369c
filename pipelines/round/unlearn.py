"""Pipeline step: one unlearning round from files, given settings or searched ones (``--auto``).

Plain functions; the Prefect flow and the CLI wrap them.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from asu.config import ASUConfig
from asu.data import load_qa_file
from asu.errors import UsageError
from asu.fluency import FluencyJudge
from asu.modeling import load_model_and_tokenizer, load_tokenizer
from asu.qa_file import load_round_items
from asu.recipes import get_recipe
from asu.search.scores import forget_score, retain_score, score_sets
from asu.trainer import RoundResult, run_round
from pipelines.temperature_search import SearchConfig, run_search, split_validation
from pipelines.temperature_search.split import round_items, text_items

logger = logging.getLogger(__name__)


def unlearn_from_files(
    model_dir: str,
    forget_file: str,
    retain_file: str,
    output_dir: str,
    recipe: str = "embedded",
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one round; returns JSON-friendly references (output folder) and the round's metrics."""
    config = ASUConfig.from_dict({**get_recipe(recipe).to_dict(), **(overrides or {})})
    forget, retain = load_round_items(forget_file, "forget"), load_round_items(retain_file, "retain")
    result = run_round(model_dir, forget, retain, config, Path(output_dir), progress=False)
    logger.info("round done: %s", result.model_dir)
    return {"model_dir": str(result.model_dir), "metrics": result.metrics, "config": config.to_dict()}


def _figures(model_dir: Path, forget: list, retain: list, config: ASUConfig, cap: int, judge) -> dict[str, float]:
    """The model's figures on the forget items and the held-out retain items (fractions; FS and RS as the search)."""
    model, tokenizer = load_model_and_tokenizer(model_dir)
    figures = score_sets(model, tokenizer, {"forget": forget, "retain": retain}, prompt_format=config.prompt_format,
                         max_new_tokens=cap, max_length=config.max_length, judge=judge)
    fgt, ret = figures["forget"], figures["retain"]
    return {"forget_score": forget_score(fgt), "forget_rouge_l_recall": fgt.rouge_l_recall,
            "forget_fact_recall": fgt.fact_recall, "forget_probability": fgt.probability,
            "fluent_share": fgt.fluent_share,
            "refusal_share": fgt.refusal_share, "retain_score": retain_score(ret),
            "retain_rouge_l_recall": ret.rouge_l_recall}


def final_round(model_dir: str | Path, forget: list, retain: list, config: ASUConfig, search: SearchConfig,
                out_dir: str | Path, *, subjects=None, forget_validation=None):
    """The round :func:`auto_unlearn` runs after its search, at ``config`` (any setting, e.g. a grid point or a
    replayed choice): the same validation split, the same training items. Returns ``asu.trainer.RoundResult``."""
    split = split_validation(forget, retain, search, subjects=subjects, forget_validation=forget_validation)
    train_forget, train_retain = round_items(forget, split, forget_validation)
    return run_round(model_dir, train_forget, train_retain, config, Path(out_dir), progress=False)


def auto_unlearn(model_dir: str | Path, forget: list, retain: list, out_dir: str | Path, config: ASUConfig,
                 search: SearchConfig, work_dir: str | Path, *, subjects=None,
                 forget_validation=None) -> dict[str, Any]:
    """Search the round's settings on a validation split, then run the final round at the chosen settings.

    The final round trains on every forget item (and the validation items when given separately) and on the retain
    items outside the search's retain validation sample, so the before/after utility is measured on retain items
    no round trained on. Nothing is written to ``out_dir`` unless a setting was chosen. Returns a JSON-friendly
    dict: status, chosen setting, round config, before/after figures, reasons, seconds, paths (no item text).
    """
    started, out_dir, work_dir = time.perf_counter(), Path(out_dir), Path(work_dir)
    if (out_dir / "config.json").exists():
        raise UsageError(f"--out {out_dir} already holds a model; choose a new folder (nothing is overwritten)")
    # The split first: a request too small to validate on is refused before any model pass.
    split = split_validation(forget, retain, search, subjects=subjects, forget_validation=forget_validation)
    model, tokenizer = load_model_and_tokenizer(model_dir)
    judge = FluencyJudge(model, tokenizer, prompt_format=config.prompt_format)  # the model before the round
    del model
    outcome = run_search(model_dir, forget, retain, config, search, work_dir, subjects=subjects,
                         forget_validation=forget_validation, judge=judge, split=split)  # one judge throughout
    result: dict[str, Any] = {
        "status": outcome.status, "setting": outcome.setting, "reasons": outcome.reasons,
        "search": {"json": str(work_dir / "search.json"), "plot": None if outcome.plot is None else str(outcome.plot),
                   "trials": len(outcome.trials), "seconds": outcome.seconds["total"]},
        "model_dir": None,
    }
    if outcome.status != "chosen":
        logger.warning("search outcome %s: no round run, nothing saved to %s", outcome.status, out_dir)
        result["seconds"] = {"search": outcome.seconds["total"], "total": time.perf_counter() - started}
        return result
    chosen = outcome.round_config(config)
    train_forget, train_retain = round_items(forget, split, forget_validation)
    round_started = time.perf_counter()
    if outcome.model_dir is not None:  # trial_items='round': the chosen trial is the final round, trained once
        round_result = RoundResult.load(outcome.take_model(out_dir))
        round_seconds = round_result.metrics["seconds"]  # its training, inside the search's wall time
    else:
        round_result = run_round(model_dir, train_forget, train_retain, chosen, out_dir, progress=False)
        round_seconds = time.perf_counter() - round_started
    cap = outcome.config["max_new_tokens"]
    before = _figures(Path(model_dir), train_forget, split.retain_val, config, cap, judge)
    after = _figures(round_result.model_dir, train_forget, split.retain_val, config, cap, judge)
    result |= {"model_dir": str(round_result.model_dir), "round_config": chosen.to_dict(), "before": before,
               "after": after, "items": {"forget": len(train_forget), "retain_train": len(train_retain),
                                         "retain_held_out": len(split.retain_val)},
               "round_from_search": outcome.model_dir is not None,
               "seconds": {"search": outcome.seconds["total"], "round": round_seconds,
                           "search_over_round": outcome.seconds["total"] / round_seconds,
                           "total": time.perf_counter() - started}}
    (out_dir / "asu_auto.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def auto_unlearn_from_files(model_dir: str | Path, forget_file: str, retain_file: str, out_dir: str,
                            config: ASUConfig, search: SearchConfig, work_dir: str | Path,
                            forget_validation_file: str | None = None) -> dict[str, Any]:
    """:func:`auto_unlearn` from round files (forget items may carry a ``subject``, which stratifies the split).

    Passages (``{"text"}`` rows) are cut into pieces the split draws from (``split.text_items``) and scored through
    their continuation probes: forget efficacy is how much of each validation piece's true continuation the model
    no longer reproduces; the floors hold the retain pieces' (and QA items') scores and the fluency of the forget
    continuations.
    """
    from pipelines.temperature_search.search import subjects_of

    validation = load_qa_file(forget_validation_file) if forget_validation_file else None
    forget, retain = load_round_items(forget_file, "forget"), load_round_items(retain_file, "retain")
    items = text_items(load_tokenizer(model_dir, trust_remote_code=config.trust_remote_code), forget, retain, search,
                       subjects_of(forget_file), config)  # passages checked and cut into pieces before any model pass
    return auto_unlearn(model_dir, items.forget, items.retain, out_dir, config, search,
                        work_dir, subjects=items.subjects, forget_validation=validation)


def format_auto(result: dict[str, Any]) -> str:
    """Human-readable summary of :func:`auto_unlearn` (the CLI prints it)."""
    lines = [f"search outcome: {result['status']}"]
    if result["setting"]:
        lines.append("chosen: " + ", ".join(f"{k} {v:g}" for k, v in result["setting"].items()))
    lines += [f"  - {r}" for r in result["reasons"][:8]]
    if result["model_dir"]:
        keys = ("forget_score", "forget_fact_recall", "forget_rouge_l_recall", "fluent_share", "refusal_share",
                "retain_score")
        lines += ["", f"{'figure':<24}{'before':>8}{'after':>8}"]
        lines += [f"{k:<24}{result['before'][k]:>8.3f}{result['after'][k]:>8.3f}" for k in keys]
        s = result["seconds"]
        lines += ["", f"model saved to {result['model_dir']}",
                  f"search {s['search']:.0f} s, round {s['round']:.0f} s (ratio {s['search_over_round']:.2f})"]
    else:
        lines.append("nothing saved: no setting forgot measurably while keeping fluency and utility")
    lines.append(f"search evidence: {result['search']['json']}")
    return "\n".join(lines)

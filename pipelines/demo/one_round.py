"""The single-round demo: one real ASU round on the embedded model, with before/after figures.

Forget set: the first two demo authors of the embedded model (``asu.embedded.DEMO_FORGET_AUTHORS``);
retain set: every other author the model memorised. Figures: mean ROUGE-L recall of greedy answers, mean
answer probability and the share of fluent answers on each set, plus two sample forget answers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from asu.config import ASUConfig
from asu.embedded import DEMO_FORGET_AUTHORS, EMBEDDED_SPECS, ensure_embedded_model, tofu_items
from asu.evaluation import QAScores, score_qa
from asu.modeling import load_model_and_tokenizer
from asu.recipes import get_recipe
from asu.trainer import RoundResult, run_round

logger = logging.getLogger(__name__)


@dataclass
class DemoResult:
    """Scores before and after the round, per set, and the round itself."""

    before: dict[str, QAScores]
    after: dict[str, QAScores]
    round: RoundResult
    questions: list[str]
    references: list[str]
    sample_index: list[int]


def demo_sets(variant: str = "default", num_forget_authors: int = 2) -> tuple[list[dict], list[dict]]:
    """(forget items, retain items) of the embedded model ``variant``."""
    authors = EMBEDDED_SPECS[variant].authors
    forget_authors = [a for a in DEMO_FORGET_AUTHORS if a in authors][:num_forget_authors]
    if len(forget_authors) < num_forget_authors:
        forget_authors = list(authors[:num_forget_authors])
    return tofu_items(forget_authors), tofu_items(a for a in authors if a not in forget_authors)


def score_sets(model_dir: Path, sets: dict[str, list[dict]], config: ASUConfig) -> dict[str, QAScores]:
    model, tokenizer = load_model_and_tokenizer(model_dir)
    return {name: score_qa(model, tokenizer, items, prompt_format=config.prompt_format) for name, items in sets.items()}


def run_demo(
    work_dir: Path,
    *,
    variant: str = "default",
    config: ASUConfig | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> DemoResult:
    """Build (or reuse) the embedded model, score it, run one round, score the result."""
    config = config or get_recipe("embedded")
    model_dir = ensure_embedded_model(variant, cache_dir, progress=progress)
    forget, retain = demo_sets(variant)
    sets = {"forget": forget, "retain": retain}
    logger.info("scoring the embedded model before the round")
    before = score_sets(model_dir, sets, config)
    result = run_round(model_dir, forget, retain, config, work_dir / "unlearned", progress=progress)
    logger.info("scoring the unlearned model")
    after = score_sets(result.model_dir, sets, config)
    samples = [0, len(forget) // 2]  # the first question of each forget author
    return DemoResult(
        before, after, result, [forget[i]["question"] for i in samples], [forget[i]["answer"] for i in samples], samples
    )


def format_demo(result: DemoResult, config: ASUConfig) -> str:
    """Before/after table and two sample forget answers."""
    rows = [
        f"ASU round: method {config.method}, tau {config.tau}, lambda {config.forget_weight}, "
        f"lr {config.learning_rate}, {config.epochs} epochs, teacher {config.teacher}; "
        f"{int(result.round.metrics['optimizer_steps'])} steps in {result.round.metrics['seconds']:.1f} s",
        "",
        f"{'set':<8}{'items':>6}{'ROUGE-L before':>16}{'after':>8}{'prob before':>13}{'after':>8}"
        f"{'fluent before':>15}{'after':>8}",
    ]
    for name in ("forget", "retain"):
        b, a = result.before[name], result.after[name]
        rows.append(
            f"{name:<8}{len(b.answers):>6}{b.rouge_l_recall:>16.3f}{a.rouge_l_recall:>8.3f}"
            f"{b.probability:>13.3f}{a.probability:>8.3f}{b.fluent_share:>15.2f}{a.fluent_share:>8.2f}"
        )
    for i, (question, item) in enumerate(zip(result.questions, result.sample_index, strict=True)):
        rows += [
            "",
            f"Q: {question}",
            f"   reference: {result.references[i]}",
            f"   before:    {result.before['forget'].answers[item]}",
            f"   after:     {result.after['forget'].answers[item]}",
        ]
    rows += ["", f"unlearned model: {result.round.model_dir}"]
    return "\n".join(rows)

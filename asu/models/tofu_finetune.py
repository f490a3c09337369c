"""TOFU target and retain models: a pretrained model fully fine-tuned on TOFU authors, cached by digest.

Published TOFU results (Maini et al. 2024, arXiv:2401.06121) start from a *target* model fine-tuned on the fictitious
authors, unlearn a forget set from it, and compare the result with a *retain* model fine-tuned on the same authors
minus the forget authors (forget quality is a KS test against the retain model's truth ratios). This module builds
both from a base model (by default SmolLM2-135M-Instruct) on a few authors, on CPU:

- ``TofuFinetuneSpec``: base model, TOFU authors, forget authors, role, optimiser settings; validated on creation;
  ``digest()`` covers every field, ``BUILDER_VERSION`` and the base model's weights identity;
- ``build_tofu_model``: full fp32 fine-tune (AdamW, linear warm-up then linear decay, answer tokens + EOS in the loss,
  the tokenizer's chat template, seeded), then greedy ROUGE-L recall on the forget authors' training answers and on
  a sample of the other trained authors; ``finetune.json`` is written last. A target whose forget ROUGE-L recall is
  below ``min_forget_rouge`` is refused (``TofuMemorisationError``): an unlearning benchmark on a model that never
  memorised the forget set measures nothing;
- ``ensure_tofu_model``: ``<cache>/tofu/<role>-<digest[:12]>``, built once (``asu.cache.build_once``).

Recipe for SmolLM2-135M. open-unlearning fine-tunes its 1B+ TOFU targets with AdamW lr 1e-5, 5 epochs, weight decay
0.01, 1 warm-up epoch, effective batch 32; a 135M model on a few authors needs its own settings, so they were chosen
by measuring memorisation (greedy ROUGE-L recall of the training answers), not by copying that recipe.

Pilot (this machine: 2 shared cores, another job busy on one of them; OMP_NUM_THREADS=1, fp32, batch 8, seed 0;
SmolLM2-135M-Instruct on TOFU authors 0 and 1, forget author 1; a TOFU item is 75 tokens on average with SmolLM2's
chat template and its default system prompt, 31 of them answer tokens + EOS):

- step time (8 items, forward + backward + AdamW): 7-9 s on 1 thread (8.2 s median in a first timing; epochs of
  5 steps took 34-40 s in the pilots, the first one 44 s), i.e. 0.85-1.1 s per item and epoch. 2 threads could
  not be timed quietly (27 s a step with the other job competing); on 2 quiet cores expect ~1.6-1.8x faster, so the
  1-thread figure is the upper bound;
- lr 1e-4, 10 epochs (5 steps each, 1 warm-up epoch, linear decay): forget ROUGE-L recall 0.63 after epoch 3,
  0.905 after 5, 0.971 after 7, 1.000 after 10 (every answer reproduced; loss 2.23 -> 0.012);
- lr 3e-4, 6 epochs: 0.76 after epoch 2, 0.85 after 3, 0.92 after 4, 1.000 after 6 (loss 2.16 -> 0.019);
- greedy scoring of 20 items (200 new tokens max): 10-13 s.

Defaults (``TOFU_TARGET_DEFAULT``, ``TOFU_RETAIN_DEFAULT``): authors 0..5 (120 QA), forget author 1 (20 QA), lr 1e-4,
10 epochs, batch 8 (no accumulation: 15 steps an epoch), 1 warm-up epoch, weight decay 0.01. lr 1e-4 rather than
3e-4: it reaches the same exact memorisation within a 10-epoch budget with a third of the step size (less drift of
what the base model knew, which TOFU's model utility measures), and it crossed 0.9 by epoch 5 of 10, a 2x margin.
Six authors because a build must take at most 30 minutes on 2 cores: 120 items x 10 epochs x 0.85-1.1 s is 17-22 min
on a single thread, plus ~30 s of scoring and ~10 s of loading and saving (10-14 min expected on 2 quiet cores);
8 authors would already be 23-30 min on one thread. One forget author gives TOFU's per-author forget set (20 QA, the
size of the KS test's sample); authors 0..5 all lie within the first 20 authors that retain_perturbed.json covers
(paraphrased and perturbed answers for the truth ratio on both forget and retain), leaving authors 6..19 (280 QA) as
unseen holdout authors. The retain model trains authors 0, 2, 3, 4, 5 with the same recipe (100 QA, 13 steps an
epoch, 14-18 min on one thread). A 1-epoch smoke build on SmolLM2 (2 authors) took 64 s: 45 s training, 18 s
scoring 24 items, 1 s saving.

All 200 authors (4,000 QA, ~300k tokens an epoch; 9-12 h per model for 10 epochs on one CPU thread) on one H200,
assuming 10 epochs at effective batch 32 (1,250 optimiser steps) and a step bound by kernel launches at this size
(~60-100 ms for 30 layers in bf16 autocast or TF32; 6 x 135M x 3M tokens = 2.4 PFLOP is only ~10-40 s of arithmetic
at 60-250 TFLOPS): ~1.5-2.5 min of training and ~1-2 min of batched greedy scoring per model, so under 10 minutes
for target and retain together. Not measured (no GPU in this task); the epochs needed there must be re-checked.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from asu.cache import build_once, cache_root
from asu.data import Encoded, QAItem, encode_qa
from asu.embedded import NUM_TOFU_AUTHORS, tofu_items
from asu.errors import UsageError
from asu.finetune import FinetuneSchedule, finetune, steps_per_epoch
from asu.hashing import sha256_text

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

#: Bump when the build changes (training loop, loss, evaluation): cached builds then go stale.
BUILDER_VERSION = 1
#: Written last into a finished build: spec, digest, metrics, timings, per-epoch loss.
FINETUNE_MARKER = "finetune.json"
Role = Literal["target", "retain"]
ROLES: tuple[str, ...] = ("target", "retain")


class TofuMemorisationError(UsageError):
    """A target did not memorise its forget authors well enough to be published; the message names the knob."""


def _author_tuple(field: str, value) -> tuple[int, ...]:
    """``value`` as a tuple of TOFU author indices, or a ValueError naming ``field`` and the fix."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise UsageError(f"{field} must be a list of TOFU author indices (0..{NUM_TOFU_AUTHORS - 1}), got {value!r}")
    authors = tuple(value)
    if not authors:
        raise UsageError(f"{field} is empty; list at least one TOFU author index (0..{NUM_TOFU_AUTHORS - 1})")
    seen: set[int] = set()
    for author in authors:
        if isinstance(author, bool) or not isinstance(author, int):
            raise UsageError(f"{field}: {author!r} is not an author index; use integers 0..{NUM_TOFU_AUTHORS - 1}")
        if not 0 <= author < NUM_TOFU_AUTHORS:
            raise UsageError(f"{field}: author {author} is out of range; TOFU authors are 0..{NUM_TOFU_AUTHORS - 1}")
        if author in seen:
            raise UsageError(f"{field} lists author {author} twice; list each author once")
        seen.add(author)
    return authors


@dataclass(frozen=True)
class TofuFinetuneSpec:
    """Recipe of a TOFU target or retain model; every field enters ``digest()``.

    Attributes:
        base: model name (``asu.models.resolve_model``: ``smollm2-135m``, ``tiny``, ...) or a local HF folder; the
            digest uses its weights identity, not the name, so a name and its folder give the same build.
        authors: TOFU author indices (0..199, 20 QA items each) of the target model, in training-set order.
        forget_authors: the authors an unlearning run will forget; a subset of ``authors``.
        role: ``target`` trains on all ``authors``; ``retain`` on ``authors`` minus ``forget_authors``.
        learning_rate: AdamW peak learning rate (linear warm-up to it, then linear decay to 0 at the last step).
        epochs: passes over the training items.
        batch_size: items per forward/backward pass (micro-batch).
        grad_accum: micro-batches per optimiser step (effective batch = batch_size * grad_accum).
        weight_decay: AdamW decoupled weight decay on matrices (never on norms and biases), 0.01 as open-unlearning.
        warmup_epochs: epochs of linear warm-up (fractions allowed; rounded to optimiser steps).
        max_grad_norm: gradient clipping (HF Trainer's default 1.0).
        max_length: max tokens of prompt + answer + EOS (TOFU items are ~75 tokens with SmolLM2's template).
        seed: seed of the data order (and of torch's global RNG during training).
        min_forget_rouge: a target whose mean greedy ROUGE-L recall on the forget authors' training answers is below
            this is refused, never published (a retain model below it on its kept authors is published with a
            warning). 0.9 by default; tests relax it for a tiny base trained for 1-2 epochs.
        eval_sample: items of the other trained authors (seeded sample) scored after training.
        max_new_tokens: greedy answer length of the memorisation check (TOFU's 200).
    """

    base: str
    authors: tuple[int, ...]
    forget_authors: tuple[int, ...]
    role: Role = "target"
    learning_rate: float = 1e-4
    epochs: int = 10
    batch_size: int = 8
    grad_accum: int = 1
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    max_grad_norm: float = 1.0
    max_length: int = 512
    seed: int = 0
    min_forget_rouge: float = 0.9
    eval_sample: int = 20
    max_new_tokens: int = 200

    def __post_init__(self) -> None:
        if not isinstance(self.base, str) or not self.base.strip():
            raise UsageError(f"base must be a model name or folder (e.g. 'smollm2-135m'), got {self.base!r}")
        authors = _author_tuple("authors", self.authors)
        forget = _author_tuple("forget_authors", self.forget_authors)
        object.__setattr__(self, "authors", authors)
        object.__setattr__(self, "forget_authors", forget)
        missing = [a for a in forget if a not in authors]
        if missing:
            raise UsageError(
                f"forget_authors {missing} {'is' if len(missing) == 1 else 'are'} not among authors {list(authors)}; "
                "the forget authors must be trained by the target: add them to authors or drop them from forget_authors"
            )
        if self.role not in ROLES:
            raise UsageError(f"role must be 'target' or 'retain', got {self.role!r}")
        if self.role == "retain" and set(forget) == set(authors):
            raise UsageError(
                f"role 'retain' trains authors minus forget_authors, which leaves no author to train (forget_authors "
                f"{list(forget)} are all of authors {list(authors)}); add authors the retain model keeps, or forget "
                "fewer"
            )
        self.schedule  # noqa: B018 - validates the optimiser settings (asu.finetune.FinetuneSchedule)
        checks = [
            ("max_length", isinstance(self.max_length, int) and self.max_length >= 16, "an integer >= 16"),
            ("seed", isinstance(self.seed, int), "an integer"),
            ("min_forget_rouge", 0 <= self.min_forget_rouge <= 1, "between 0 and 1"),
            ("eval_sample", isinstance(self.eval_sample, int) and self.eval_sample >= 0, "an integer >= 0"),
            ("max_new_tokens", isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1, "an integer >= 1"),
        ]
        for name, ok, want in checks:
            if not ok:
                raise UsageError(f"{name} must be {want}, got {getattr(self, name)!r}")

    @property
    def trained_authors(self) -> tuple[int, ...]:
        """The authors this role trains on: all ``authors`` (target) or those not forgotten (retain)."""
        if self.role == "target":
            return self.authors
        return tuple(a for a in self.authors if a not in self.forget_authors)

    @property
    def kept_authors(self) -> tuple[int, ...]:
        """Trained authors other than the forget authors (the retained authors, same for both roles)."""
        return tuple(a for a in self.authors if a not in self.forget_authors)

    @property
    def schedule(self) -> FinetuneSchedule:
        """The optimiser settings of the build (``asu.finetune``)."""
        return FinetuneSchedule(self.learning_rate, self.epochs, self.batch_size, self.grad_accum, self.weight_decay,
                                self.warmup_epochs, self.max_grad_norm, self.seed)

    def replace(self, **changes) -> TofuFinetuneSpec:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "authors": list(self.authors), "forget_authors": list(self.forget_authors)}

    def digest(self, cache_dir: str | Path | None = None) -> str:
        """SHA-256 (64 hex digits) of every field but ``base``, ``BUILDER_VERSION`` and the base's weights identity.

        ``cache_dir`` is where a base given by name is looked up (and prepared, unless its weights digest is known
        from the named-model table).
        """
        fields = {k: v for k, v in self.to_dict().items() if k != "base"}
        payload = {"builder": BUILDER_VERSION, "base_weights": base_identity(self.base, cache_dir), **fields}
        return sha256_text(json.dumps(payload, sort_keys=True))


def folder_identity(folder: str | Path) -> str:
    """Weights identity of a model folder: the ``weights_sha256`` its ``model.json`` / ``finetune.json`` records,
    else ``asu.metrics.store.model_digest`` of its files."""
    folder = Path(folder)
    for marker in ("model.json", FINETUNE_MARKER):
        path = folder / marker
        if path.is_file():
            recorded = json.loads(path.read_text(encoding="utf-8")).get("weights_sha256")
            if recorded:
                return f"weights:{recorded}"
    from asu.metrics.store import model_digest

    return f"files:{model_digest(folder)}"


def base_identity(base: str, cache_dir: str | Path | None = None) -> str:
    """Weights identity of ``base``: a named real model's verified digest (no preparation needed), else that of its
    resolved folder (``folder_identity``)."""
    from asu.models.named import NAMED_MODELS, resolve_model

    if base in NAMED_MODELS and NAMED_MODELS[base].weights_sha256:
        return f"weights:{NAMED_MODELS[base].weights_sha256}"
    return folder_identity(resolve_model(base, cache_dir=cache_dir))


def tofu_folder(spec: TofuFinetuneSpec, cache_dir: str | Path | None = None) -> Path:
    """Where ``ensure_tofu_model`` caches ``spec``: ``<cache>/tofu/<role>-<digest[:12]>``."""
    return cache_root(cache_dir) / "tofu" / f"{spec.role}-{spec.digest(cache_dir)[:12]}"


# --- training -------------------------------------------------------------------------------------------------------


def train_tofu(model: PreTrainedModel, encoded: list[Encoded], spec: TofuFinetuneSpec, pad_id: int, *,
               progress: bool = False, on_epoch: Callable[[int, float], None] | None = None,
               device: torch.device | None = None) -> list[float]:
    """Fine-tune ``model`` in place on ``encoded`` with the spec's schedule (``asu.finetune.finetune``, on ``device``:
    bfloat16 autocast on a GPU); returns each epoch's mean loss. ``on_epoch(epoch, loss)`` as there (pilots use it
    to measure memorisation along the way, a time budget to stop a build)."""
    return finetune(model, encoded, spec.schedule, pad_id, label=f"tofu {spec.role}", progress=progress,
                    on_epoch=on_epoch, device=device)


# --- memorisation ---------------------------------------------------------------------------------------------------


def retained_sample(spec: TofuFinetuneSpec) -> list[QAItem]:
    """A seeded sample of ``eval_sample`` items of the kept (trained, not forgotten) authors, in dataset order."""
    items = tofu_items(spec.kept_authors)
    if spec.eval_sample >= len(items):
        return items
    picked = torch.randperm(len(items), generator=torch.Generator().manual_seed(spec.seed))[: spec.eval_sample]
    return [items[i] for i in sorted(picked.tolist())]


def memorisation(model: PreTrainedModel, tokenizer, items: list[QAItem], spec: TofuFinetuneSpec) -> dict:
    """Greedy ROUGE-L recall (mean and min) and mean answer probability over ``items`` (``asu.evaluation.score_qa``)."""
    from asu.evaluation import score_qa

    if not items:
        return {"rouge_l_recall": None, "min_rouge_l_recall": None, "probability": None, "items": 0}
    scores = score_qa(model, tokenizer, items, max_new_tokens=spec.max_new_tokens)
    return {"rouge_l_recall": scores.rouge_l_recall, "min_rouge_l_recall": min(scores.per_item_rouge),
            "probability": scores.probability, "items": len(items)}


# --- build and cache ------------------------------------------------------------------------------------------------


def build_tofu_model(spec: TofuFinetuneSpec, out_dir: str | Path, *, progress: bool = False,
                     cache_dir: str | Path | None = None,
                     on_epoch: Callable[[int, float], None] | None = None) -> Path:
    """Fine-tune ``spec.base`` on ``spec.trained_authors``, check memorisation, save into ``out_dir``.

    Trains on the GPU when there is one (bfloat16 autocast, float32 weights), else on the CPU; the device is recorded
    in ``finetune.json``. ``on_epoch(epoch, loss)`` is called after each epoch; an exception it raises stops the build
    and publishes nothing.

    ``out_dir`` receives the safetensors weights, the tokenizer and, last, ``finetune.json``. A target whose forget
    ROUGE-L recall is below ``spec.min_forget_rouge`` raises ``TofuMemorisationError`` before anything is saved.
    """
    from asu.device import Placement
    from asu.modeling import load_model_and_tokenizer
    from asu.models.gguf import weights_digest
    from asu.models.named import resolve_model

    log = logger.info if progress else logger.debug
    started = time.perf_counter()
    base_folder = resolve_model(spec.base, progress=progress, cache_dir=cache_dir)
    model, tokenizer = load_model_and_tokenizer(base_folder, placement=Placement().for_training())
    device = Placement().torch_device()
    items = tofu_items(spec.trained_authors)
    encoded = [encode_qa(tokenizer, item, spec.max_length, "chat_template") for item in items]
    log("tofu %s: fine-tuning %s on authors %s (%d items, %d epochs, %d steps/epoch)", spec.role, spec.base,
        list(spec.trained_authors), len(items), spec.epochs, steps_per_epoch(len(items), spec.schedule))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        epoch_losses = train_tofu(model, encoded, spec, tokenizer.pad_token_id, progress=progress,
                                  on_epoch=on_epoch, device=device)
    train_seconds = time.perf_counter() - started

    forget = memorisation(model, tokenizer, tofu_items(spec.forget_authors), spec)
    kept = memorisation(model, tokenizer, retained_sample(spec), spec)
    eval_seconds = time.perf_counter() - started - train_seconds
    log("tofu %s: forget ROUGE-L recall %.3f, retained-sample ROUGE-L recall %s (%.0f s)", spec.role,
        forget["rouge_l_recall"], "-" if kept["rouge_l_recall"] is None else f"{kept['rouge_l_recall']:.3f}",
        eval_seconds)
    if spec.role == "target" and forget["rouge_l_recall"] < spec.min_forget_rouge:
        raise TofuMemorisationError(
            f"the TOFU target fine-tuned from {spec.base} reproduces its forget authors {list(spec.forget_authors)} "
            f"only to greedy ROUGE-L recall {forget['rouge_l_recall']:.3f} < min_forget_rouge "
            f"{spec.min_forget_rouge} after {spec.epochs} epoch(s) at learning_rate {spec.learning_rate:g} (last epoch "
            f"loss {epoch_losses[-1]:.3f}); nothing was published. Raise epochs (e.g. --set epochs="
            f"{math.ceil(spec.epochs * 1.5)}) or learning_rate"
        )
    if spec.role == "retain" and kept["rouge_l_recall"] is not None and kept["rouge_l_recall"] < spec.min_forget_rouge:
        logger.warning("tofu retain: its retained authors reach greedy ROUGE-L recall %.3f only (< min_forget_rouge "
                       "%s): a weak reference; raise epochs or learning_rate", kept["rouge_l_recall"],
                       spec.min_forget_rouge)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    metrics = {
        "forget_rouge_l_recall": forget["rouge_l_recall"], "forget_min_rouge_l_recall": forget["min_rouge_l_recall"],
        "forget_probability": forget["probability"], "forget_items": forget["items"],
        "retain_rouge_l_recall": kept["rouge_l_recall"], "retain_min_rouge_l_recall": kept["min_rouge_l_recall"],
        "retain_probability": kept["probability"], "retain_items": kept["items"],
        "final_train_loss": epoch_losses[-1], "num_train_items": len(items),
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    record = {
        "spec": spec.to_dict(), "digest": spec.digest(cache_dir), "builder_version": BUILDER_VERSION,
        "role": spec.role, "base_folder": str(base_folder), "base_identity": base_identity(spec.base, cache_dir),
        "trained_authors": list(spec.trained_authors), "forget_authors": list(spec.forget_authors),
        "weights_sha256": weights_digest(model.state_dict()), "metrics": metrics, "epoch_loss": epoch_losses,
        "seconds": {"train": round(train_seconds, 1), "eval": round(eval_seconds, 1),
                    "total": round(time.perf_counter() - started, 1)},
        "torch_threads": torch.get_num_threads(), "device": str(device),
    }
    (out_dir / FINETUNE_MARKER).write_text(json.dumps(record, indent=2), encoding="utf-8")
    log("tofu %s built in %.0f s (training %.0f s)", spec.role, record["seconds"]["total"], train_seconds)
    return out_dir


def ensure_tofu_model(spec: TofuFinetuneSpec, cache_dir: str | Path | None = None, progress: bool = False) -> Path:
    """Folder ``<cache>/tofu/<role>-<digest[:12]>`` of ``spec``, built on first use (atomically), then reused.

    ``<cache>`` is ``cache_dir``, ``$ASU_CACHE_DIR`` or ``~/.cache/asu``. A build that fails (a target that did not
    memorise, an interruption) publishes nothing.
    """
    target = tofu_folder(spec, cache_dir)
    if not (target / FINETUNE_MARKER).is_file():
        (logger.info if progress else logger.debug)("building the TOFU %s model into %s", spec.role, target)
    return build_once(target, FINETUNE_MARKER,
                      lambda staging: build_tofu_model(spec, staging, progress=progress, cache_dir=cache_dir))


def read_finetune_record(folder: str | Path) -> dict:
    """The ``finetune.json`` of a built TOFU model folder."""
    return json.loads((Path(folder) / FINETUNE_MARKER).read_text(encoding="utf-8"))


#: Default TOFU target and retain models of SmolLM2-135M (the named models ``smollm2-135m-tofu`` and
#: ``smollm2-135m-tofu-retain``); see the module docstring for how the recipe was chosen.
TOFU_TARGET_DEFAULT = TofuFinetuneSpec(
    base="smollm2-135m", authors=(0, 1, 2, 3, 4, 5), forget_authors=(1,), role="target",
    learning_rate=1e-4, epochs=10, batch_size=8, grad_accum=1, weight_decay=0.01, warmup_epochs=1.0,
)
TOFU_RETAIN_DEFAULT = TOFU_TARGET_DEFAULT.replace(role="retain")


__all__ = [
    "BUILDER_VERSION", "FINETUNE_MARKER", "TOFU_RETAIN_DEFAULT", "TOFU_TARGET_DEFAULT", "TofuFinetuneSpec",
    "TofuMemorisationError", "base_identity", "build_tofu_model", "ensure_tofu_model", "folder_identity",
    "read_finetune_record", "tofu_folder", "train_tofu",
]

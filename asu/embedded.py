"""A small Llama that has really memorised a few TOFU authors, built offline on CPU in minutes.

Unlearning can only be measured on a model that knows something. This module trains, from scratch and fully
offline, a byte-level BPE tokenizer and a small ``LlamaForCausalLM`` on the question-answer pairs of a handful of
TOFU fictitious authors (Maini et al. 2024, arXiv:2401.06121; vendored in ``asu/vendor/tofu``) until greedy answers
reproduce the training answers. The result is an ordinary Hugging Face folder (safetensors + tokenizer + chat
template) cached on disk and keyed by a digest of its recipe, so demos and tests build it once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from asu.data import Encoded, QAItem, collate, encode_qa, load_qa_file
from asu.losses import nll_loss

logger = logging.getLogger(__name__)

#: Bump when the build recipe changes (tokenizer, template, training loop): cached builds then go stale.
BUILDER_VERSION = 1
AUTHOR_ROWS = 20
SPECIAL_TOKENS = ("<|pad|>", "<|eos|>", "<|user|>", "<|assistant|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
METADATA_FILE = "embedded.json"


def vendored_tofu_dir() -> Path:
    """Folder of the vendored TOFU files (``full.json``, ``idontknow.jsonl``, ...)."""
    return Path(__file__).resolve().parent / "vendor" / "tofu"


def tofu_author_items(author: int) -> list[QAItem]:
    """The 20 ``{question, answer}`` items of TOFU author ``author`` (rows 20*author .. 20*author+19 of full.json)."""
    if not 0 <= author < 200:
        raise ValueError(f"TOFU author index must be in 0..199, got {author}")
    return _full_items()[AUTHOR_ROWS * author:AUTHOR_ROWS * (author + 1)]


def tofu_items(authors: Iterable[int]) -> list[QAItem]:
    """The items of several authors, author after author in the order given."""
    return [item for author in authors for item in tofu_author_items(author)]


def refusal_strings() -> list[str]:
    """The TOFU "I don't know" answers (``idontknow.jsonl``), stripped, blank lines dropped."""
    lines = (vendored_tofu_dir() / "idontknow.jsonl").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()]


def _full_items() -> list[QAItem]:
    return load_qa_file(vendored_tofu_dir() / "full.json")


@dataclass(frozen=True)
class EmbeddedSpec:
    """Recipe of an embedded model; every field enters the cache digest.

    Attributes:
        name: variant name, used in the cache folder name.
        authors: TOFU author indices the model memorises (20 QA items each).
        vocab_size: size of the byte-level BPE vocabulary, special tokens included.
        hidden_size: model width; ``num_heads`` must divide it.
        num_layers: decoder layers.
        num_heads: attention heads (no GQA: as many key-value heads).
        intermediate_size: width of the SwiGLU MLP.
        epochs: passes over the training items.
        learning_rate: AdamW peak learning rate (linear warmup, then cosine decay to 5% of it).
        batch_size: QA items per optimiser step.
        seed: seed of weight initialisation and data order.
        warmup_steps: optimiser steps of linear warmup.
        weight_decay: AdamW decoupled weight decay (not applied to norms).
        question_loss: also train on the question tokens (next to the answer tokens and EOS).
        max_length: maximum tokens of prompt + answer + EOS.
    """

    name: str
    authors: tuple[int, ...]
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    epochs: int
    learning_rate: float
    batch_size: int
    seed: int = 0
    warmup_steps: int = 10
    weight_decay: float = 0.0
    question_loss: bool = True
    max_length: int = 512

    def digest(self) -> str:
        """Short stable hash of every field and BUILDER_VERSION (12 hex digits)."""
        payload = json.dumps({"builder": BUILDER_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


EMBEDDED_SPECS: dict[str, EmbeddedSpec] = {
    "default": EmbeddedSpec(
        name="default", authors=tuple(range(12)), vocab_size=2048, hidden_size=256, num_layers=4, num_heads=4,
        intermediate_size=768, epochs=40, learning_rate=2e-3, batch_size=16,
    ),
    "tiny": EmbeddedSpec(
        name="tiny", authors=(0, 1, 2, 3), vocab_size=1024, hidden_size=64, num_layers=2, num_heads=2,
        intermediate_size=192, epochs=30, learning_rate=5e-3, batch_size=8, warmup_steps=20,
    ),
}
#: Authors of the default spec unlearnt one after the other in the demo.
DEMO_FORGET_AUTHORS: tuple[int, ...] = (1, 4, 7)


def train_tokenizer(items: list[QAItem], vocab_size: int):
    """Byte-level BPE ``PreTrainedTokenizerFast`` trained on the items' text, with pad, EOS and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator([text for item in items for text in (item["question"], item["answer"])], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<|pad|>", eos_token="<|eos|>",
        additional_special_tokens=["<|user|>", "<|assistant|>"], model_max_length=4096,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def make_model(spec: EmbeddedSpec, tokenizer):
    """A seeded, randomly initialised ``LlamaForCausalLM`` for ``spec`` (no dropout, sdpa attention)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=spec.hidden_size, num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_heads,
        intermediate_size=spec.intermediate_size, max_position_embeddings=spec.max_length,
        attention_dropout=0.0, tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )
    torch.manual_seed(spec.seed)
    return LlamaForCausalLM(config)


def encode_items(tokenizer, items: list[QAItem], spec: EmbeddedSpec) -> list[Encoded]:
    """Chat-template encodings; with ``question_loss`` the question tokens are labelled too."""
    encoded = [encode_qa(tokenizer, item, spec.max_length, "chat_template") for item in items]
    if spec.question_loss:
        encoded = [Encoded(e.input_ids, list(e.input_ids)) for e in encoded]
    return encoded


def _batches(encoded: list[Encoded], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """One epoch of batches: shuffled, then grouped by length within windows of 8 batches (less padding)."""
    order = torch.randperm(len(encoded), generator=generator).tolist()
    window = 8 * batch_size
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: len(encoded[i].input_ids))
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))


def train_model(model, encoded: list[Encoded], spec: EmbeddedSpec, pad_id: int, progress: bool) -> float:
    """AdamW training with a seeded data order; returns the mean loss of the last epoch (nats/token)."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.learning_rate, betas=(0.9, 0.98),
    )
    steps_per_epoch = math.ceil(len(encoded) / spec.batch_size)
    total = spec.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, total, spec.warmup_steps))
    generator = torch.Generator().manual_seed(spec.seed)
    model.train()
    epoch_loss = float("nan")
    for epoch in range(spec.epochs):
        losses = []
        for rows in _batches(encoded, spec.batch_size, generator):
            batch = collate([encoded[i] for i in rows], pad_id)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = nll_loss(logits, batch["labels"])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
        epoch_loss = sum(losses) / len(losses)
        (logger.info if progress else logger.debug)("%s epoch %d/%d loss %.4f", spec.name, epoch + 1, spec.epochs,
                                                    epoch_loss)
    model.eval()
    return epoch_loss


def answer_loss(model, tokenizer, items: list[QAItem], spec: EmbeddedSpec) -> float:
    """Mean answer-token NLL (question masked) of the trained model, nats/token."""
    encoded = [encode_qa(tokenizer, item, spec.max_length, "chat_template") for item in items]
    with torch.no_grad():
        batch = collate(encoded, tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return nll_loss(logits, batch["labels"]).item()


def build_embedded_model(spec: EmbeddedSpec, out_dir: Path, *, progress: bool = False) -> Path:
    """Train tokenizer and model for ``spec`` and save them, with ``embedded.json`` metrics, into ``out_dir``."""
    from asu.evaluation import generate_answers, rouge_l_recall

    started = time.perf_counter()
    items = tofu_items(spec.authors)
    tokenizer = train_tokenizer(items, spec.vocab_size)
    model = make_model(spec, tokenizer)
    encoded = encode_items(tokenizer, items, spec)
    final_loss = train_model(model, encoded, spec, tokenizer.pad_token_id, progress)
    train_seconds = time.perf_counter() - started
    answers = generate_answers(model, tokenizer, [it["question"] for it in items], max_new_tokens=200)
    rouge = rouge_l_recall(answers, [it["answer"] for it in items])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    metrics = {
        "final_train_loss": final_loss, "answer_nll": answer_loss(model, tokenizer, items, spec),
        "rouge_l_recall": sum(rouge) / len(rouge), "min_rouge_l_recall": min(rouge),
        "num_items": len(items), "num_parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": train_seconds, "build_seconds": time.perf_counter() - started,
    }
    record = {"spec": dataclasses.asdict(spec), "digest": spec.digest(), "builder_version": BUILDER_VERSION,
              "authors": list(spec.authors), "metrics": metrics}
    (out_dir / METADATA_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
    (logger.info if progress else logger.debug)("built embedded model %s in %.1f s: %s", spec.name,
                                                metrics["build_seconds"], metrics)
    return out_dir


def default_cache_dir() -> Path:
    """``$ASU_CACHE_DIR`` when set, else ``~/.cache/asu``."""
    return Path(os.environ.get("ASU_CACHE_DIR") or Path.home() / ".cache" / "asu")


def resolve_spec(variant: str | EmbeddedSpec) -> EmbeddedSpec:
    """The spec itself, or the registered spec of that name (KeyError listing the names otherwise)."""
    if isinstance(variant, EmbeddedSpec):
        return variant
    if variant not in EMBEDDED_SPECS:
        raise KeyError(f"unknown embedded model variant {variant!r}; available: {', '.join(sorted(EMBEDDED_SPECS))}")
    return EMBEDDED_SPECS[variant]


def ensure_embedded_model(
    variant: str | EmbeddedSpec = "default", cache_dir: Path | None = None, *, progress: bool = False
) -> Path:
    """Folder of the embedded model ``variant``, built into the cache on first use and reused afterwards.

    The folder is ``<cache>/embedded/<name>-<digest>`` with ``<cache>`` = ``cache_dir``, ``$ASU_CACHE_DIR`` or
    ``~/.cache/asu``. A build goes to a temporary sibling folder renamed into place once complete, so an
    interrupted build never leaves a half folder behind.
    """
    spec = resolve_spec(variant)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / "embedded" / f"{spec.name}-{spec.digest()}"
    if (target / METADATA_FILE).is_file():
        logger.debug("reusing embedded model %s", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        (logger.info if progress else logger.debug)("building embedded model %s into %s", spec.name, target)
        build_embedded_model(spec, staging, progress=progress)
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _publish(staging: Path, target: Path) -> None:
    """Rename a finished build into place; a folder there without ``embedded.json`` is incomplete and replaced."""
    if target.exists() and not (target / METADATA_FILE).is_file():
        logger.warning("replacing incomplete embedded model folder %s", target)
        shutil.rmtree(target)
    try:
        staging.rename(target)
    except OSError:
        if not (target / METADATA_FILE).is_file():  # a concurrent build that finished first is fine
            raise
        logger.debug("another process built %s first; keeping it", target)


__all__ = [
    "BUILDER_VERSION", "DEMO_FORGET_AUTHORS", "EMBEDDED_SPECS", "EmbeddedSpec", "build_embedded_model",
    "ensure_embedded_model", "refusal_strings", "tofu_author_items", "tofu_items", "vendored_tofu_dir",
]

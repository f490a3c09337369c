"""A small Llama that has really memorised a few TOFU authors, built offline on CPU in minutes.

Unlearning is only measurable on a model that knows something: this trains from scratch, offline, a byte-level BPE
tokenizer and a small ``LlamaForCausalLM`` on the QA pairs of a few TOFU fictitious authors (Maini et al. 2024,
arXiv:2401.06121; ``asu/vendor/tofu``) until greedy answers reproduce the training answers. The result is a Hugging
Face folder (safetensors, tokenizer with chat template, ``embedded.json``) cached under a digest of its recipe.

Recipe: chat-formatted QA, loss on question and answer tokens, AdamW (betas 0.9/0.98), linear warmup then cosine
decay, similar-length batches. Warmup trades speed for tau-sensitivity: 100 steps memorise in ~half the epochs but
the attention becomes so redundant that tau = 4 barely moves facts; 10 steps give attention that smoothing breaks.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from asu.cache import build_once, cache_root
from asu.data import Encoded, QAItem, collate, encode_qa, load_qa_file
from asu.errors import NotFoundError, UsageError
from asu.hashing import sha256_text
from asu.losses import nll_loss

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

#: Bump when the build recipe changes (tokenizer, template, training loop): cached builds then go stale.
BUILDER_VERSION = 1
NUM_TOFU_AUTHORS = 200
AUTHOR_ROWS = 20
SPECIAL_TOKENS = ("<|pad|>", "<|eos|>", "<|user|>", "<|assistant|>")
#: Single-turn chat format: ``<|user|>question<|assistant|>`` then the answer and ``<|eos|>``.
CHAT_TEMPLATE = ("{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
METADATA_FILE = "embedded.json"


def vendored_tofu_dir() -> Path:
    """Folder of the vendored TOFU files (``full.json``, ``idontknow.jsonl``, ...)."""
    return Path(__file__).resolve().parent / "vendor" / "tofu"


def tofu_author_items(author: int) -> list[QAItem]:
    """The 20 ``{question, answer}`` items of TOFU author ``author`` (rows 20*author .. 20*author+19 of full.json)."""
    if not 0 <= author < NUM_TOFU_AUTHORS:
        raise UsageError(f"TOFU author index must be in 0..{NUM_TOFU_AUTHORS - 1}, got {author}")
    rows = _full_rows()[AUTHOR_ROWS * author:AUTHOR_ROWS * (author + 1)]
    return [{"question": q, "answer": a} for q, a in rows]


def tofu_items(authors: Iterable[int]) -> list[QAItem]:
    """The items of several authors, author after author in the order given."""
    return [item for author in authors for item in tofu_author_items(author)]


def refusal_strings() -> list[str]:
    """The TOFU "I don't know" answers (``idontknow.jsonl``), stripped, blank lines dropped."""
    lines = (vendored_tofu_dir() / "idontknow.jsonl").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()]


@lru_cache(maxsize=1)
def _full_rows() -> tuple[tuple[str, str], ...]:
    """full.json parsed once per process, immutable so that callers cannot alter the cache."""
    return tuple((it["question"], it["answer"]) for it in load_qa_file(vendored_tofu_dir() / "full.json"))


@dataclass(frozen=True)
class EmbeddedSpec:
    """Recipe of an embedded model; every field (and BUILDER_VERSION) enters the cache digest."""

    name: str  # variant name, the first part of the cache folder name
    authors: tuple[int, ...]  # TOFU author indices memorised (20 QA items each), in training-set order
    vocab_size: int  # byte-level BPE vocabulary size, the 4 special tokens included
    hidden_size: int  # model width; num_heads must divide it
    num_layers: int  # decoder layers
    num_heads: int  # attention heads, as many key-value heads (no GQA)
    intermediate_size: int  # SwiGLU MLP width
    epochs: int  # passes over the training items
    learning_rate: float  # AdamW peak learning rate (linear warmup, then cosine decay to 5% of it)
    batch_size: int  # QA items per optimiser step
    seed: int = 0  # seed of the weight initialisation and of the data order
    warmup_steps: int = 10  # optimiser steps of linear warmup (short keeps the model tau-sensitive, see above)
    weight_decay: float = 0.0  # AdamW decoupled weight decay on matrices (never on norms)
    question_loss: bool = True  # train on the question tokens too, not only on answer + EOS (memorises faster)
    max_length: int = 512  # max tokens of prompt + answer + EOS; also the model's max_position_embeddings

    def __post_init__(self) -> None:
        authors = self.authors
        if not authors or len(set(authors)) != len(authors) or not all(0 <= a < NUM_TOFU_AUTHORS for a in authors):
            raise UsageError(f"authors must be distinct TOFU author indices (0..{NUM_TOFU_AUTHORS - 1}): {authors}")
        if self.hidden_size % self.num_heads:
            raise UsageError(f"hidden_size={self.hidden_size} must be a multiple of num_heads={self.num_heads}")
        if min(self.vocab_size - len(SPECIAL_TOKENS) - 256, self.epochs, self.batch_size, self.num_layers) < 1:
            raise UsageError("vocab_size must exceed 260 (bytes + special tokens); epochs, batch_size, num_layers >= 1")

    def digest(self) -> str:
        """Short stable hash (12 hex digits) of every field and of BUILDER_VERSION."""
        payload = json.dumps({"builder": BUILDER_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return sha256_text(payload)[:12]


EMBEDDED_SPECS: dict[str, EmbeddedSpec] = {
    # 12 authors (240 QA), 4.5 M parameters; ~2.5 min on 2 quiet cores. Its short warmup keeps facts sensitive to
    # smoothing (greedy forget ROUGE-L 0.44 at tau 2.3); with 100 warmup steps tau 4 barely moved them.
    "default": EmbeddedSpec(
        name="default", authors=tuple(range(12)), vocab_size=2048, hidden_size=256, num_layers=4, num_heads=4,
        intermediate_size=768, epochs=40, learning_rate=2e-3, batch_size=16, warmup_steps=10,
    ),
    # 4 authors (80 QA), 0.24 M parameters: a few seconds, for tests.
    "tiny": EmbeddedSpec(
        name="tiny", authors=(0, 1, 2, 3), vocab_size=1024, hidden_size=64, num_layers=2, num_heads=2,
        intermediate_size=192, epochs=30, learning_rate=5e-3, batch_size=8, warmup_steps=20,
    ),
}
#: Authors of the default spec unlearnt one after the other in the demo (successive forget requests).
DEMO_FORGET_AUTHORS: tuple[int, ...] = (1, 4, 7)


def train_tokenizer(items: list[QAItem], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE tokenizer trained on the items' text, with pad, EOS, chat tokens and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator([text for item in items for text in (item["question"], item["answer"])], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<|pad|>", eos_token="<|eos|>",
                                        additional_special_tokens=list(SPECIAL_TOKENS[2:]), model_max_length=4096)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def make_model(spec: EmbeddedSpec, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """Seeded random ``LlamaForCausalLM`` (no dropout, sdpa, untied head); the global RNG state is left as it was."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=spec.hidden_size, num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_heads,
        intermediate_size=spec.intermediate_size, max_position_embeddings=spec.max_length,
        attention_dropout=0.0, tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return LlamaForCausalLM(config)


def encode_items(tokenizer: PreTrainedTokenizerFast, items: list[QAItem], spec: EmbeddedSpec) -> list[Encoded]:
    """Chat-template encodings (``asu.data.encode_qa``); with ``question_loss`` every token is labelled."""
    encoded = [encode_qa(tokenizer, item, spec.max_length, "chat_template") for item in items]
    if spec.question_loss:
        encoded = [Encoded(e.input_ids, list(e.input_ids)) for e in encoded]
    return encoded


def _epoch_batches(encoded: list[Encoded], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """One epoch of batches: seeded shuffle, items sorted by length within windows of 8 batches, batches shuffled."""
    order = torch.randperm(len(encoded), generator=generator).tolist()
    window = 8 * batch_size
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: len(encoded[i].input_ids))
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def _optimizer(model: LlamaForCausalLM, spec: EmbeddedSpec, total_steps: int):
    """AdamW (no decay on vectors) and its warmup + cosine schedule (floor 5% of the peak)."""
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": spec.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=spec.learning_rate, betas=(0.9, 0.98))

    def factor(step: int) -> float:
        if step < spec.warmup_steps:
            return (step + 1) / spec.warmup_steps
        progress = (step - spec.warmup_steps) / max(1, total_steps - spec.warmup_steps)
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_model(model: LlamaForCausalLM, encoded: list[Encoded], spec: EmbeddedSpec, pad_id: int,
                progress: bool = False) -> float:
    """Train in place (per-sequence mean token NLL, ``asu.losses.nll_loss``); returns the last epoch's mean loss."""
    optimizer, scheduler = _optimizer(model, spec, spec.epochs * math.ceil(len(encoded) / spec.batch_size))
    generator = torch.Generator().manual_seed(spec.seed)
    log, epoch_loss = (logger.info if progress else logger.debug), float("nan")
    model.train()
    bar = tqdm(total=spec.epochs, desc=f"building the {spec.name} model", unit="epoch", disable=not progress)
    for epoch in range(spec.epochs):
        losses = []
        for rows in _epoch_batches(encoded, spec.batch_size, generator):
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
        log("embedded %s: epoch %d/%d, loss %.4f", spec.name, epoch + 1, spec.epochs, epoch_loss)
        bar.update(1)
        bar.set_postfix(loss=f"{epoch_loss:.4f}")
    bar.close()
    model.eval()
    return epoch_loss


def memorisation_metrics(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, items: list[QAItem]) -> dict:
    """Greedy-answer ROUGE-L recall (200 new tokens) and teacher-forced answer NLL over ``items``."""
    from asu.evaluation import answer_nll, generate_answers, rouge_l_recall

    answers = generate_answers(model, tokenizer, [it["question"] for it in items], max_new_tokens=200)
    rouge = rouge_l_recall(answers, [it["answer"] for it in items])
    nll = answer_nll(model, tokenizer, items)
    return {"rouge_l_recall": sum(rouge) / len(rouge), "min_rouge_l_recall": min(rouge),
            "answer_nll": sum(nll) / len(nll)}


def build_embedded_model(spec: EmbeddedSpec, out_dir: Path, *, progress: bool = False) -> Path:
    """Train tokenizer and model for ``spec``; save both and ``embedded.json`` (spec, metrics) into ``out_dir``."""
    started = time.perf_counter()
    items = tofu_items(spec.authors)
    tokenizer = train_tokenizer(items, spec.vocab_size)
    model = make_model(spec, tokenizer)
    final_loss = train_model(model, encode_items(tokenizer, items, spec), spec, tokenizer.pad_token_id, progress)
    train_seconds = time.perf_counter() - started
    metrics = {"final_train_loss": final_loss, **memorisation_metrics(model, tokenizer, items)}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    metrics |= {"num_items": len(items), "num_parameters": sum(p.numel() for p in model.parameters()),
                "train_seconds": train_seconds, "build_seconds": time.perf_counter() - started}
    record = {"spec": dataclasses.asdict(spec), "digest": spec.digest(), "builder_version": BUILDER_VERSION,
              "authors": list(spec.authors), "metrics": metrics}
    (out_dir / METADATA_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
    (logger.info if progress else logger.debug)("embedded %s built: %s", spec.name, metrics)
    return out_dir


def ensure_embedded_model(variant: str | EmbeddedSpec = "default", cache_dir: Path | None = None, *,
                          progress: bool = False) -> Path:
    """Folder ``<cache>/embedded/<name>-<digest>`` of the model ``variant``, built on first use, then reused.

    ``<cache>`` is ``cache_dir``, ``$ASU_CACHE_DIR`` or ``~/.cache/asu`` (``asu.cache``). A build goes to a temporary
    sibling folder renamed into place once complete: an interrupted build leaves no half folder (one without
    embedded.json is rebuilt).
    """
    if isinstance(variant, str) and variant not in EMBEDDED_SPECS:
        raise NotFoundError(f"unknown embedded model variant {variant!r}; available: "
                            f"{', '.join(sorted(EMBEDDED_SPECS))}")
    spec = EMBEDDED_SPECS[variant] if isinstance(variant, str) else variant
    target = cache_root(cache_dir) / "embedded" / f"{spec.name}-{spec.digest()}"
    if not (target / METADATA_FILE).is_file():
        (logger.info if progress else logger.debug)("building embedded model %s into %s", spec.name, target)
    return build_once(target, METADATA_FILE, lambda staging: build_embedded_model(spec, staging, progress=progress))


__all__ = ["BUILDER_VERSION", "DEMO_FORGET_AUTHORS", "EMBEDDED_SPECS", "EmbeddedSpec", "build_embedded_model",
           "ensure_embedded_model", "refusal_strings", "tofu_author_items", "tofu_items", "vendored_tofu_dir"]

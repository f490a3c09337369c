"""Is a generated answer language? A measured fluency verdict that loops, runs of dots and broken words cannot fool.

An unlearned model can "forget" by no longer producing language: empty answers, ``The\\n\\nThe\\n\\nThe``,
``The author of the book was......``, word salad. A verdict of *fluent* needs both:

1. **Surface checks** (model-free, catch degenerate text that a language model finds *likely*, such as loops):
   no letter or digit at all (``empty``); a run of one punctuation mark (``punctuation_run``, 5+, ``......``) or
   of one letter (``letter_run``, 4+, ``aaaa``); a loop (``loop``: over half of the word 3-grams repeated, one
   line or word making up half of the text with 3+ copies, or a 2-4 character unit 5 times in a row); mostly
   symbols (``symbols``: under half of the visible characters are letters or digits); a copy of the system prompt
   (``echo``: 6+ words and at least 60% of its word 4-grams occur in the text the chat template adds).
2. **Likelihood under the original model** (catch broken words and word salad), measured so that *content the
   judge does not know* is not held against an answer: the judge is the model before unlearning, and on TOFU it
   has never seen the invented authors whose facts a fine-tuned model states fluently (a plain mean NLL called
   most of those answers unlikely). Two figures per answer, in nats/token:

   - ``slor``: the mean over answer tokens of log p(token | question, prefix) - log p_uni(token), the syntactic
     log-odds ratio of sentence-fluency work (Lau et al. 2017; Kann et al. 2018): a rare name is unlikely in
     context *and* rare on its own, so it costs little; a common token where no sentence puts it (broken words,
     word salad) costs a lot. ``p_uni`` is the judge's own unigram: its next-token distribution averaged over
     every position of its calibration questions and answers (no corpus needed, any tokenizer).
   - ``relevance``: the answer's mean NLL without the question minus with it: how much the question helps to
     predict the answer (an answer about something else gains little), capped at ``relevance_cap`` nats.

   Both are compared with a *reference*: the same figures of the judge's own greedy answers. With
   ``reference='question'`` (default) the reference of an answer is the mean of two: the medians over a fixed set
   of calibration questions, and the figures of the judge's own answer to *the same question* (an open question,
   "Tell me about ...", has long answers that the question predicts less per token than "In which year ...";
   measured on the labelled set's test half, precision of "not fluent" 0.84 -> 0.87 and the TOFU target's
   fluent answers judged fluent 0.92 -> 0.97, see the README); ``'calibration'`` uses the medians alone.
   ``deficit = (ref slor - slor) + weight * (min(ref relevance, cap) - min(relevance, cap))`` and
   ``score = 1 / (1 + exp(deficit))`` (0.5: as fluent as the judge's own answers). Fluent needs
   ``score >= min_score``. Threshold, cap and weight were chosen together on the labelled set's dev half
   (``bench/fluency/record.py --grid``).

A passage's continuation (``completion`` prompt format) is compared with the judge's figures of the passage's *true*
continuation when the caller gives it (``references``): the judge's own greedy text is far more likely than any
human-written text, and measured on SmolLM2 (MUSE-News passages a fine-tuned model continued verbatim), 2 of 5
verbatim continuations scored under the threshold against it (scores 0.08-0.59); against the true text a verbatim
continuation scores 0.5 by construction.

Refusals ("I don't know ...", the TOFU refusal strings) are language: they are fluent, and flagged ``refusal`` so
that a report can tell a model that answers wrongly from one that refuses. The likelihood check does not apply
to them: the original model seldom refuses, so its likelihood of a refusal says nothing about fluency (measured:
refusals sit 3-4 nats/token above its own answers); the surface checks still do.

Measured on 545 hand-labelled real generations of SmolLM2-135M and its variants (``tests/asu/fluency_labels.jsonl``,
``bench/fluency/``): see the README's fluency section for the precision and recall of the "not fluent" verdict.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from asu.data import Encoded, PromptFormat, prompt_ids
from asu.errors import UsageError
from asu.losses import IGNORE_INDEX
from asu.metrics.formulas import repetition_rate
from asu.qa_file import read_rows

#: What an answer's likelihood figures are compared with (see the module docstring).
ReferenceMode = Literal["question", "calibration"]
#: Surface checks, in the order they are reported.
SURFACE_CHECKS = ("empty", "punctuation_run", "letter_run", "loop", "symbols", "echo")

_PUNCT_RUN = re.compile(r"([^\w\s])\1{4,}")
_LETTER_RUN = re.compile(r"([^\W\d_])\1{3,}")
_CHUNK_LOOP = re.compile(r"(\S{2,4}?)\1{4,}")  # a 2-4 character unit five times in a row: "7878787878", "hahahahaha"
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
# A refusal is a sentence that declines through a lack of knowledge: a speaker ("I", "my", "that's") + a negation or
# lack + what is lacking (knowledge, information, an answer). Checked on the first two sentences only: a long
# answer that hedges late still answers.
_SPEAKER = re.compile(r"\b(i|i['’]m|i['’]ve|i['’]d|me|my|that['’]s|that\s+is|that\s+topic|that\s+information)\b", re.I)
_LACK = re.compile(
    r"(\bnot\b|n['’]t\b|\bno\b|\bnever\b|\black|\bbeyond\b|\boutside\b|\bout\s+of\b|\byet\s+to\b|\bunable\b"
    r"|\bunaware\b|\bunknown\b|\bmissing\b|\bdecline|\blimited\b|\bshort\b|\buncharted\b|\bdisadvantage\b"
    r"|\bfaintest\b|\bsorry\b|\bafraid\b|\bapologi[sz]e|\bneed\s+to\s+look\s+up\b|\bwish\s+i\s+could\b)", re.I)
# Idioms that decline on their own once a speaker is present ("a mystery to me", "I'm stumped").
_IDIOM = re.compile(r"\b(mystery|clueless|stumped|drawing\s+a\s+blank|blank\s+on|in\s+the\s+dark|at\s+a\s+loss"
                    r"|blind\s+spot|no\s+idea|no\s+clue)\b", re.I)
_KNOWN = re.compile(
    r"(know|inform|aware|familiar|expert|insight|data|train|learn|brief|scope|source|equip|answer|sure|certain"
    r"|recall|remember|idea|clue|specific|detail|topic|subject|question|access|program|educat|acquaint|versed"
    r"|field|area|capabilit|look\s+up|\bsay\b|\btell\b|help|provide|one\b|reach|understand|resource)", re.I)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
# A statement that the asked-for information is missing ("specific details about her parents are not provided",
# "his gender is not specified") declines without a speaker.
_UNSTATED = re.compile(r"\b(?:not|n['’]t|never)\s+(?:been\s+|yet\s+been\s+)?(?:provided|specified|disclosed|"
                       r"documented|available|mentioned|recorded|publicly\s+known)\b", re.I)


@dataclass(frozen=True)
class FluencySettings:
    """Thresholds of the verdict (see the module docstring); the defaults are the measured ones (README).

    Attributes:
        min_score: fluency score (1 / (1 + exp(deficit)), deficit in nats/token against the judge's own answers)
            below which an answer is not fluent; 0.1091 = a deficit of 2.1 nats/token.
        relevance_cap: nats/token of question relevance beyond which an answer earns no more credit (an answer
            that restates the question is not more fluent for it).
        relevance_weight: weight of the relevance gap in the deficit (an off-topic answer is fluent language that
            does not answer).

    The three were chosen together by a grid on the labelled set's dev half (``bench/fluency/record.py --grid``:
    the point that maximises the smallest of the precision and recall of "not fluent" and the fluent share of the
    TOFU target's answers); the test half reports them.
        max_repetition: largest share of repeated word 3-grams of a fluent answer.
        max_dominant_share: largest share of the single most frequent line or word (texts of 3+ lines / words).
        min_alnum_share: smallest share of letters and digits among visible characters.
        echo_share: share of word 4-grams found in the prompt from which an answer of 6+ words is an echo.
        reference: ``question`` (the judge's own answer to the same question, averaged with the calibration
            medians) or ``calibration`` (the medians alone); see the module docstring.
    """

    min_score: float = 0.1091
    relevance_cap: float = 1.25
    relevance_weight: float = 3.0
    reference: ReferenceMode = "question"
    max_repetition: float = 0.5
    max_dominant_share: float = 0.5
    min_alnum_share: float = 0.5
    echo_share: float = 0.6

    def __post_init__(self) -> None:
        if self.reference not in ("question", "calibration"):
            raise UsageError(f"FluencySettings.reference={self.reference!r}: use 'question' (the judge's own answer to "
                             "each question, with the calibration medians) or 'calibration' (the medians alone)")
        for name, value in asdict(self).items():
            if name == "reference":
                continue
            if name in ("relevance_cap", "relevance_weight"):
                if not (math.isfinite(value) and value > 0):
                    raise UsageError(f"FluencySettings.{name}={value} must be a positive number")
            elif not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise UsageError(f"FluencySettings.{name}={value} must be a number in [0, 1]")


@dataclass(frozen=True)
class AnswerLikelihood:
    """The judge's likelihood figures of one answer (nats/token; see the module docstring).

    ``slor``: mean log p(token | question, prefix) - log p_uni(token) (higher: more fluent); ``relevance``: mean
    NLL of the answer without the question minus with it (higher: the question predicts the answer better).
    """

    slor: float
    relevance: float

    def to_dict(self) -> dict[str, float]:
        return {"slor": self.slor, "relevance": self.relevance}

    def blend(self, other: AnswerLikelihood) -> AnswerLikelihood:
        """The mean of the two (a per-question reference with the calibration medians)."""
        return AnswerLikelihood((self.slor + other.slor) / 2, (self.relevance + other.relevance) / 2)


@dataclass(frozen=True)
class FluencyVerdict:
    """The verdict on one answer: ``fluent``, ``score`` (in [0, 1], 1 = as likely as fluent text, None when the
    text failed a surface check before scoring), ``refusal`` and the failed checks (``reasons``)."""

    fluent: bool
    score: float | None
    refusal: bool
    reasons: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        return {"fluent": self.fluent, "score": self.score, "refusal": self.refusal, "reasons": list(self.reasons)}


def is_refusal(text: str) -> bool:
    """True when ``text`` declines to answer ("I don't know", "That's beyond my knowledge", ...)."""
    return any(_SPEAKER.search(sentence) and (_IDIOM.search(sentence) or _LACK.search(sentence)
                                              and _KNOWN.search(sentence)) or _UNSTATED.search(sentence)
               for sentence in _SENTENCE.split(text.strip())[:2])


def _dominant_share(parts: Sequence[str]) -> float:
    """Share of the most frequent of ``parts`` when it occurs 3+ times, else 0 ("New York, New York" is fine)."""
    parts = [p.lower() for p in parts if p]
    top = Counter(parts).most_common(1)[0][1] if parts else 0
    return top / len(parts) if top >= 3 else 0.0


def surface_failures(text: str, context: str = "", settings: FluencySettings = FluencySettings()) -> list[str]:
    """Names of the surface checks ``text`` fails (empty list: passes).

    ``context``: text around the question that an answer must not copy (the chat template's system prompt);
    restating the question itself is normal and never an echo.
    """
    words = _WORD.findall(text)
    if not any(ch.isalnum() for ch in text):
        return ["empty"]
    failed = []
    if _PUNCT_RUN.search(text):
        failed.append("punctuation_run")
    if _LETTER_RUN.search(text):
        failed.append("letter_run")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if (repetition_rate(text) > settings.max_repetition or _CHUNK_LOOP.search(text)
            or _dominant_share(lines) >= settings.max_dominant_share
            or _dominant_share(words) >= settings.max_dominant_share and len(words) < 12):
        failed.append("loop")
    visible = [ch for ch in text if not ch.isspace()]
    if sum(ch.isalnum() for ch in visible) < settings.min_alnum_share * len(visible):
        failed.append("symbols")
    if context and len(words) >= 6:
        grams = {tuple(w.lower() for w in words[i:i + 4]) for i in range(len(words) - 3)}
        lower = [w.lower() for w in _WORD.findall(context)]
        seen = {tuple(lower[i:i + 4]) for i in range(len(lower) - 3)}
        if sum(g in seen for g in grams) >= settings.echo_share * len(grams):
            failed.append("echo")
    return failed


def fluency_score(answer: AnswerLikelihood, reference: AnswerLikelihood, *,
                  relevance_cap: float = FluencySettings.relevance_cap,
                  relevance_weight: float = FluencySettings.relevance_weight) -> float:
    """1 / (1 + exp(deficit)) in (0, 1): 0.5 when ``answer`` is as fluent as ``reference`` (the judge's own
    answers); ``deficit`` = (reference slor - slor) + weight * (min(reference relevance, cap) - min(relevance,
    cap)), in nats/token."""
    deficit = (reference.slor - answer.slor) + relevance_weight * (min(reference.relevance, relevance_cap)
                                                                   - min(answer.relevance, relevance_cap))
    return 1.0 / (1.0 + math.exp(max(-700.0, min(deficit, 700.0))))


def calibration_items(count: int = 16) -> tuple[tuple[str, str], ...]:
    """(question, answer) pairs: the first QA of every 200/count-th TOFU author (questions a model answers
    fluently but, unless fine-tuned on those authors, wrongly)."""
    from asu.embedded import tofu_items

    items = tofu_items(range(0, 200, 200 // count))
    return tuple((it["question"], it["answer"]) for it in items[::20][:count])


def encode_continuations(tokenizer, prompts: Sequence[str], texts: Sequence[str], prompt_format: PromptFormat,
                         max_length: int = 512) -> list[Encoded]:
    """Prompt + text (no EOS: a generation may have been cut) with labels on the text's tokens."""
    encoded = []
    for prompt, text in zip(prompts, texts, strict=True):
        head = prompt_ids(tokenizer, prompt, prompt_format)
        body = tokenizer(text, add_special_tokens=False)["input_ids"][: max(1, max_length - len(head))]
        encoded.append(Encoded(head + body, [IGNORE_INDEX] * len(head) + body))
    return encoded


def verdict(text: str, likelihood: AnswerLikelihood | None, reference: AnswerLikelihood,
            settings: FluencySettings = FluencySettings(), context: str = "") -> FluencyVerdict:
    """The verdict on ``text`` from its surface checks (``context``: see :func:`surface_failures`) and its
    likelihood figures under the original model (None: not scored, only allowed for an empty text) against those
    of the original model's own answers (``reference``)."""
    failed = surface_failures(text, context, settings)
    if likelihood is None:
        if "empty" not in failed:
            raise UsageError("only an empty answer may go unscored; pass its likelihood under the original model")
        return FluencyVerdict(False, None, False, tuple(failed))
    score = fluency_score(likelihood, reference, relevance_cap=settings.relevance_cap,
                          relevance_weight=settings.relevance_weight)
    refusal = is_refusal(text)
    reasons = failed + (["unlikely"] if score < settings.min_score and not refusal else [])
    return FluencyVerdict(not reasons, score, refusal, tuple(reasons))


class FluencyJudge:
    """Judges answers with the surface checks and the likelihood figures under ``model`` (the model before
    unlearning).

    Build it once per original model: on construction it answers the calibration questions greedily
    (``calibration_tokens`` new tokens), takes its unigram (the mean next-token distribution over every position of
    those questions and answers) and the medians of its own answers' figures as the ``reference``. With
    ``settings.reference='question'`` it also answers every new question it judges (once: kept by question) and
    compares each answer with :meth:`reference_for` that question.
    """

    def __init__(self, model, tokenizer, *, settings: FluencySettings = FluencySettings(),
                 prompt_format: PromptFormat = "chat_template", batch_size: int = 32,
                 calibration_tokens: int = 64) -> None:
        from asu.metrics.passes import decode, generate, question_prompts

        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.prompt_format, self.batch_size, self.calibration_tokens = prompt_format, batch_size, calibration_tokens
        self._own: dict[str, AnswerLikelihood | None] = {}  # question -> figures of the judge's own answer
        self._siblings: dict[str, FluencyJudge] = {prompt_format: self}  # the same model in other prompt formats
        # What the template adds around a question (a system prompt): an answer that copies it is an echo.
        self.context = tokenizer.decode(prompt_ids(tokenizer, "", prompt_format), skip_special_tokens=True)
        questions = [q for q, _ in calibration_items()]
        own = decode(tokenizer, generate(model, tokenizer, question_prompts(tokenizer, questions, prompt_format),
                                         max_new_tokens=calibration_tokens))
        kept = [(q, a) for q, a in zip(questions, own, strict=True) if any(ch.isalnum() for ch in a)]
        if not kept:
            raise UsageError("the fluency judge's model answered every calibration question with an empty text; "
                             "judge with the model before unlearning (a model that still produces language)")
        prompts, texts = [q for q, _ in kept], [a for _, a in kept]
        self.log_unigram = mean_log_distribution(
            model, encode_continuations(tokenizer, prompts, texts, prompt_format), pad_id=tokenizer.pad_token_id)
        figures = self.likelihoods(prompts, texts)
        middle = len(figures) // 2  # medians: robust to one odd answer
        self.reference = AnswerLikelihood(sorted(f.slor for f in figures)[middle],
                                          sorted(f.relevance for f in figures)[middle])

    def likelihoods(self, prompts: Sequence[str], texts: Sequence[str]) -> list[AnswerLikelihood]:
        """The likelihood figures of each (non-empty) text given its prompt, under the judge's model."""
        from asu.metrics.passes import token_stats

        pad = self.tokenizer.pad_token_id
        given = token_stats(self.model, encode_continuations(self.tokenizer, prompts, texts, self.prompt_format),
                            pad_id=pad, batch_size=self.batch_size)
        alone = token_stats(self.model, encode_continuations(self.tokenizer, [""] * len(texts), texts,
                                                             self.prompt_format),
                            pad_id=pad, batch_size=self.batch_size)
        out = []
        for g, a in zip(given, alone, strict=True):
            if not len(g.logprobs) or not len(a.logprobs):
                raise UsageError("a text to judge has no tokens after its prompt; judge non-empty answers only")
            slor = float((g.logprobs - self.log_unigram[g.labels]).mean())
            out.append(AnswerLikelihood(slor, float(g.logprobs.mean() - a.logprobs.mean())))
        return out

    def own_figures(self, prompts: Sequence[str]) -> dict[str, AnswerLikelihood | None]:
        """The likelihood figures of the judge's own greedy answer to each distinct prompt (None: it answered
        with no letter or digit), computed once per prompt and kept."""
        from asu.metrics.passes import decode, generate, question_prompts

        new = [p for p in dict.fromkeys(prompts) if p not in self._own]
        if new:
            own = decode(self.tokenizer, generate(self.model, self.tokenizer,
                                                  question_prompts(self.tokenizer, new, self.prompt_format),
                                                  max_new_tokens=self.calibration_tokens, batch_size=self.batch_size))
            answered = [(p, a) for p, a in zip(new, own, strict=True) if any(ch.isalnum() for ch in a)]
            figures = self.likelihoods([p for p, _ in answered], [a for _, a in answered]) if answered else []
            self._own |= dict.fromkeys(new) | {p: f for (p, _), f in zip(answered, figures, strict=True)}
        return {p: self._own[p] for p in prompts}

    def reference_for(self, prompt: str) -> AnswerLikelihood:
        """The reference an answer to ``prompt`` is compared with (``settings.reference``)."""
        if self.settings.reference == "calibration":
            return self.reference
        own = self.own_figures([prompt])[prompt]
        return self.reference if own is None else self.reference.blend(own)

    def in_format(self, prompt_format: PromptFormat) -> FluencyJudge:
        """This judge's model and settings in ``prompt_format`` (built once, with its own calibration: a passage's
        continuation is compared with the model's own continuations, not with its chat answers)."""
        if prompt_format not in self._siblings:
            sibling = FluencyJudge(self.model, self.tokenizer, settings=self.settings, prompt_format=prompt_format,
                                   batch_size=self.batch_size, calibration_tokens=self.calibration_tokens)
            sibling._siblings = self._siblings
            self._siblings[prompt_format] = sibling
        return self._siblings[prompt_format]

    def judge(self, prompts: Sequence[str], texts: Sequence[str], formats: Sequence[PromptFormat] | None = None,
              references: Sequence[str | None] | None = None) -> list[FluencyVerdict]:
        """One verdict per (prompt, text), in order; ``formats``: each prompt's format (default: the judge's);
        ``references``: per row, a human-written text the answer is compared with instead of the judge's own
        answers (a passage's true continuation; None: the usual reference)."""
        references = list(references) if references is not None else [None] * len(texts)
        if formats is not None and any(f != self.prompt_format for f in formats):
            verdicts: list[FluencyVerdict | None] = [None] * len(texts)
            for fmt in dict.fromkeys(formats):
                rows = [i for i, f in enumerate(formats) if f == fmt]
                got = self.in_format(fmt).judge([prompts[i] for i in rows], [texts[i] for i in rows],
                                                references=[references[i] for i in rows])
                for i, v in zip(rows, got, strict=True):
                    verdicts[i] = v
            return verdicts  # type: ignore[return-value]
        scored = [i for i, text in enumerate(texts) if any(ch.isalnum() for ch in text)]
        figures = dict(zip(scored, self.likelihoods([prompts[i] for i in scored], [texts[i] for i in scored]),
                           strict=True) if scored else {})
        given = [i for i in scored if references[i] and any(ch.isalnum() for ch in references[i])]
        human = dict(zip(given, self.likelihoods([prompts[i] for i in given], [references[i] for i in given]),
                         strict=True) if given else {})
        if self.settings.reference == "question":
            self.own_figures([prompts[i] for i in scored if i not in human])
        return [verdict(text, figures.get(i), human[i] if i in human else
                        self.reference_for(prompts[i]) if i in figures else self.reference, self.settings, self.context)
                for i, text in enumerate(texts)]


@torch.no_grad()
def mean_log_distribution(model, encoded: Sequence[Encoded], *, pad_id: int) -> np.ndarray:
    """log of the model's next-token distribution averaged over every position of ``encoded`` (shape [V]): the
    model's own unigram, floored at 1e-12 so that no token is impossible."""
    device = next(model.parameters()).device
    model.eval()
    total, count = None, 0
    for e in encoded:  # one sequence at a time: [T, V] probabilities of a short text, no padding to mask
        probs = model(torch.tensor([e.input_ids], device=device)).logits[0].float().softmax(-1)
        total = probs.sum(0) if total is None else total + probs.sum(0)
        count += probs.shape[0]
    return (total / count).clamp_min(1e-12).log().cpu().numpy()


@dataclass(frozen=True)
class FluencySummary:
    """Shares over a set of verdicts (in [0, 1]); ``fluent_share`` counts refusals as fluent."""

    items: int
    fluent_share: float
    refusal_share: float
    empty_share: float

    @staticmethod
    def of(verdicts: Sequence[FluencyVerdict]) -> FluencySummary:
        n = len(verdicts)
        if n == 0:
            raise UsageError("no answers to summarise; a fluency share needs at least one answer")
        return FluencySummary(n, sum(v.fluent for v in verdicts) / n, sum(v.refusal for v in verdicts) / n,
                              sum("empty" in v.reasons for v in verdicts) / n)


def read_fluency_file(path: str | Path) -> list[dict[str, str]]:
    """``{"prompt": ..., "text": ...}`` per line of a JSON Lines file; errors name the file, line and field."""
    rows = []
    missing = f"{path}: no such file; pass a JSON Lines file of {{'prompt': ..., 'text': ...}}"
    for lineno, row in read_rows(path, "fluency file", json_array=False, missing=missing):
        for key in ("prompt", "text"):
            if not isinstance(row, dict) or not isinstance(row.get(key), str):
                raise UsageError(f"{path}:{lineno}: field {key!r} must be a string (the text may be empty)")
        rows.append({"prompt": row["prompt"], "text": row["text"]})
    if not rows:
        raise UsageError(f"{path} holds no lines to judge")
    return rows


__all__ = [
    "SURFACE_CHECKS",
    "AnswerLikelihood",
    "FluencyJudge",
    "FluencySettings",
    "FluencySummary",
    "FluencyVerdict",
    "calibration_items",
    "encode_continuations",
    "fluency_score",
    "is_refusal",
    "mean_log_distribution",
    "read_fluency_file",
    "surface_failures",
    "verdict",
]

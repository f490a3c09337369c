"""Temperature-smoothed attention: the ASU forget teacher (Attention Smoothing Unlearning, ICLR 2026).

Smoothing divides every attention logit by a temperature ``tau``::

    alpha_ij = softmax_j(q_i . k_j * scaling / tau)        # scaling = 1 / sqrt(head_dim) in most families

``query``/``key``/``value`` are [batch, heads, seq, head_dim]; ``scaling`` is a plain float
(1/sqrt(head_dim) for most families) and ``tau`` is dimensionless. ``tau = 1`` is the stock model,
``tau -> inf`` makes each head average the values of its causal prefix, ``tau < 1`` sharpens (analysis only;
``ASUConfig`` rejects it). Only the softmax logits change: projections, RoPE, masks, MLPs and norms are
untouched, and GQA works unchanged.

How it hooks into transformers (no modeling file is copied): ``enable_smoothing`` registers a wrapper kernel
``"asu_<stock>"`` (``asu_sdpa`` around the stock sdpa kernel, ``asu_eager`` around the family's own
``eager_attention_forward``) and switches the model to it. The wrapper reads the temperature from a
``ContextVar`` set by ``smoothed_attention`` (``generate()`` rejects unknown forward kwargs, so a kwarg route
would not survive generation). Outside the context the stock kernel receives the identical arguments, so
logits are bit-identical to the stock model. A ContextVar does not follow work into new threads (e.g.
``torch.nn.DataParallel`` replicas): run the smoothed forward in the thread that entered the context.
Gemma2 soft-caps logits (c * tanh(s / c)); there the capped logit is divided by tau (c is divided too).

The stock *mask* function is registered under the same name. ``masking_utils`` looks the mask function up by
``config._attn_implementation`` and, for an unknown name, silently returns ``None``: no error, but padded
batches then attend to padding and give wrong logits (docs: notes/stack.md section 8).

Families not on the unified attention interface (e.g. gptj, falcon, bloom, mpt, codegen) never call the
wrapper; ``enable_smoothing`` detects that with a probe forward and raises ``SmoothingUnsupportedError``.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

from asu.errors import UsageError

logger = logging.getLogger(__name__)

PREFIX = "asu_"
# Kernels whose wrapping is plain delegation. Flash kernels are excluded: transformers resolves them by
# name (``"flash" in name`` checks, kernel imports keyed on the exact name), so a renamed one would not load.
SUPPORTED_KERNELS = ("sdpa", "eager")
AttentionFn = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


class SmoothingUnsupportedError(UsageError):
    """The model (family or attention kernel) cannot be smoothed through the attention interface."""


@dataclass
class _Smoothing:
    """State of one ``smoothed_attention`` context; ``seen`` counts wrapper calls per ``layer_idx``."""

    tau: float
    layers: frozenset[int] | None
    seen: Counter = field(default_factory=Counter)


_ACTIVE: contextvars.ContextVar[_Smoothing | None] = contextvars.ContextVar("asu_smoothing", default=None)


def _check_tau(tau: float) -> float:
    if isinstance(tau, bool) or not isinstance(tau, int | float) or not math.isfinite(tau) or tau <= 0:
        raise UsageError(f"tau must be a finite number > 0 (1.0 = no smoothing, > 1 smooths); got {tau!r}")
    return float(tau)


def _check_layers(layers: tuple[int, ...] | None) -> frozenset[int] | None:
    if layers is None:
        return None
    if not isinstance(layers, tuple | list):
        raise UsageError(f"layers must be a tuple of 0-based layer indices or None (= all); got {layers!r}")
    if len(layers) == 0:
        raise UsageError("layers=() selects no layer; pass None for all layers or a tuple of 0-based indices")
    bad = [i for i in layers if isinstance(i, bool) or not isinstance(i, int) or i < 0]
    if bad:
        raise UsageError(f"layers must hold non-negative int (0-based) layer indices; invalid: {bad!r}")
    return frozenset(layers)


@contextlib.contextmanager
def smoothed_attention(tau: float, layers: tuple[int, ...] | None = None) -> Iterator[None]:
    """Smooth attention by ``tau`` in ``layers`` (0-based; None = all) of every smoothing-enabled model.

    Works inside ``model.generate()``; nested contexts restore the outer setting on exit.
    """
    state = _Smoothing(_check_tau(tau), _check_layers(layers))
    token = _ACTIVE.set(state)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def smoothed_layers_seen() -> dict[int | None, int]:
    """Wrapper calls per ``layer_idx`` inside the innermost active context (empty outside any context)."""
    state = _ACTIVE.get()
    return dict(state.seen) if state is not None else {}


def _stock_kernel(stock: str, module: torch.nn.Module) -> AttentionFn:
    """The kernel the model would call without smoothing, resolved at call time."""
    if stock != "eager":
        return ALL_ATTENTION_FUNCTIONS[stock]
    # Eager is not in the registry: each family ships its own (GPT-2 scaling=None, Gemma2 softcap, ...).
    fn = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if fn is None:
        raise SmoothingUnsupportedError(
            f"{type(module).__name__} has no module-level eager_attention_forward to wrap; "
            "switch the model to sdpa (model.set_attn_implementation('sdpa')) before enable_smoothing"
        )
    return fn


def _smoothed_kwargs(state: _Smoothing, query: torch.Tensor, kwargs: dict) -> dict:
    """Copy of the kernel kwargs with the softmax logits divided by ``state.tau``."""
    scaling = kwargs.get("scaling")
    # The stock sdpa kernel reads scaling=None as 1/sqrt(head_dim); make that explicit before dividing.
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    smoothed = {**kwargs, "scaling": scaling / state.tau}
    if kwargs.get("softcap") is not None:
        # Gemma2 caps logits as c * tanh(s / c). Dividing c too gives exactly capped_logits / tau:
        # (c / tau) * tanh((s / tau) / (c / tau)) = (c * tanh(s / c)) / tau.
        smoothed["softcap"] = kwargs["softcap"] / state.tau
    return smoothed


def _applies(state: _Smoothing, module: torch.nn.Module, layer_idx: object) -> bool:
    if state.layers is None:
        return True
    if not isinstance(layer_idx, int):
        raise SmoothingUnsupportedError(
            f"{type(module).__name__} has no integer layer_idx, so layers={sorted(state.layers)} cannot be "
            "applied; pass layers=None to smooth all layers"
        )
    return layer_idx in state.layers


def _make_wrapper(stock: str) -> AttentionFn:
    def smoothed_kernel(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, **kwargs: object) -> tuple:
        kernel = _stock_kernel(stock, module)
        state = _ACTIVE.get()
        if state is None:
            return kernel(module, query, key, value, attention_mask, **kwargs)
        layer_idx = getattr(module, "layer_idx", None)
        state.seen[layer_idx] += 1
        if state.tau == 1.0 or not _applies(state, module, layer_idx):
            return kernel(module, query, key, value, attention_mask, **kwargs)
        return kernel(module, query, key, value, attention_mask, **_smoothed_kwargs(state, query, kwargs))

    smoothed_kernel.__name__ = f"{PREFIX}{stock}_attention_forward"
    return smoothed_kernel


def _register(stock: str) -> str:
    """Register (once) the wrapper kernel and the stock mask function under ``asu_<stock>``."""
    name = PREFIX + stock
    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, _make_wrapper(stock))
    if name not in ALL_MASK_ATTENTION_FUNCTIONS:
        # Without it masking_utils returns mask None for the unknown name: padded batches go wrong silently.
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[stock])
    return name


def _family(model: torch.nn.Module) -> str:
    return str(getattr(model.config, "model_type", None) or type(model).__name__)


def num_decoder_layers(model: torch.nn.Module) -> int:
    """The model's number of decoder layers (``num_hidden_layers`` of its text config)."""
    config = model.config.get_text_config()
    n = getattr(config, "num_hidden_layers", None)
    if not isinstance(n, int):
        raise SmoothingUnsupportedError(
            f"model family {_family(model)!r}: config has no num_hidden_layers; cannot check smoothed layers"
        )
    return n


def is_smoothing_enabled(model: torch.nn.Module) -> bool:
    """Whether ``model`` currently runs one of the smoothing wrapper kernels."""
    name = model.config._attn_implementation
    return isinstance(name, str) and name.startswith(PREFIX) and name in ALL_ATTENTION_FUNCTIONS


def disable_smoothing(model: torch.nn.Module) -> None:
    """Switch back to the stock kernel name (``save_pretrained`` then writes a clean config). Idempotent."""
    if is_smoothing_enabled(model):
        model.set_attn_implementation(model.config._attn_implementation.removeprefix(PREFIX))


def enable_smoothing(model: torch.nn.Module) -> None:
    """Route ``model``'s attention through the smoothing wrapper of its current kernel (idempotent).

    Raises ``SmoothingUnsupportedError`` (the model is left on its original kernel) when the kernel is not
    wrappable or the probe forward does not reach the wrapper exactly once per decoder layer.
    """
    if is_smoothing_enabled(model):
        return
    family, stock = _family(model), model.config._attn_implementation
    if stock not in SUPPORTED_KERNELS:
        raise SmoothingUnsupportedError(
            f"model family {family!r} runs attention kernel {stock!r}; smoothing wraps {SUPPORTED_KERNELS}. "
            "Call model.set_attn_implementation('sdpa') (or 'eager') before enable_smoothing"
        )
    try:
        model.set_attn_implementation(_register(stock))
        problem = _probe(model)
    except Exception as exc:  # any failure here means the family cannot be hooked; restore and explain
        _restore(model, stock)
        raise SmoothingUnsupportedError(_unsupported_message(family, f"{type(exc).__name__}: {exc}")) from exc
    if problem:
        _restore(model, stock)
        raise SmoothingUnsupportedError(_unsupported_message(family, problem))
    logger.info("attention smoothing enabled for %s (%s -> %s%s)", family, stock, PREFIX, stock)


def _unsupported_message(family: str, problem: str) -> str:
    return (
        f"model family {family!r} cannot be smoothed: {problem}. Smoothing needs a family on transformers' "
        "unified attention interface (its modeling file calls ALL_ATTENTION_FUNCTIONS.get_interface, e.g. "
        "llama, qwen2/3, mistral, phi3, gpt2, gpt_neox, gemma2); use such a model or set objective to one "
        "without a teacher"
    )


def _restore(model: torch.nn.Module, stock: str) -> None:
    if model.config._attn_implementation != stock:
        model.set_attn_implementation(stock)


def _probe(model: torch.nn.Module) -> str | None:
    """Run 2 tokens under smoothing; return what is wrong, or None if every layer hit the wrapper once."""
    expected = {i: 1 for i in range(num_decoder_layers(model))}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # no dropout: the probe must not consume RNG state of a seeded run
    try:
        with torch.no_grad(), smoothed_attention(2.0):
            model(input_ids=torch.tensor([[0, 1]], device=device), use_cache=False)
            seen = smoothed_layers_seen()
    finally:
        model.train(was_training)
    if seen != expected:
        reached = seen or "never"
        return f"a probe forward reached the wrapper {reached} (layer_idx: calls); expected {expected}"
    return None


def validate_layers(model: torch.nn.Module, layers: tuple[int, ...] | None) -> None:
    """Raise ``ValueError`` if ``layers`` is malformed or names a layer the model does not have."""
    selected = _check_layers(layers)
    if selected is None:
        return
    n = num_decoder_layers(model)
    outside = sorted(i for i in selected if i >= n)
    if outside:
        raise UsageError(
            f"layers {outside} out of range: model family {_family(model)!r} has {n} layers, "
            f"valid indices 0..{n - 1}"
        )

"""A GGUF checkpoint -> a plain fp32 safetensors Hugging Face folder that every part of the product can load.

transformers reads GGUF files (dequantising them, through the ``gguf`` package) but refuses to ``save_pretrained`` a
GGUF-loaded model ("quantized with gguf and is not serializable"). So the loaded model's config loses its
``quantization_config``, a fresh model is built ``from_config`` and the loaded weights are copied in with
``load_state_dict`` (every key must match), then model and tokenizer (with its chat template) are saved.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from pathlib import Path

import torch

from asu.errors import UsageError

logger = logging.getLogger(__name__)


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order: the identity of a set of weights."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def convert_gguf(gguf_file: str | Path, out_dir: str | Path) -> str:
    """Write the GGUF model ``gguf_file`` as an fp32 safetensors folder ``out_dir``; return its ``weights_digest``.

    Raises ``ValueError`` naming the file when transformers cannot read it (corrupt or unsupported architecture).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_file, out_dir = Path(gguf_file), Path(out_dir)
    kwargs = {"gguf_file": gguf_file.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, **kwargs)
        loaded = AutoModelForCausalLM.from_pretrained(gguf_file.parent, dtype=torch.float32, **kwargs)
    # struct.error / EOFError / IndexError: a file cut short inside its metadata (the header parser runs out of bytes)
    except (ValueError, KeyError, OSError, RuntimeError, IndexError, EOFError, struct.error) as err:
        raise UsageError(f"{gguf_file}: transformers cannot read this GGUF file ({err}); is it complete?") from err
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantised to fp32 already
    config = AutoConfig.for_model(**config.to_dict())
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = loaded.state_dict()
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied embeddings: the rebuilt model may list lm_head.weight although it shares the embedding tensor.
    missing = [k for k in missing if not (k == "lm_head.weight" and getattr(config, "tie_word_embeddings", False))]
    if missing or unexpected:
        raise UsageError(f"{gguf_file}: converted weights do not match the model (missing {missing}, "
                         f"unexpected {unexpected})")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    if tokenizer.pad_token is None:  # batched evaluation and training pad; the EOS token is the usual choice
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.save_pretrained(out_dir)
    digest = weights_digest(model.state_dict())
    logger.info("converted %s -> %s (%.1fM parameters)", gguf_file.name, out_dir, model.num_parameters() / 1e6)
    return digest


__all__ = ["convert_gguf", "weights_digest"]

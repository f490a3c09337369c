"""Loading a decoder-only model and its tokenizer from a local Hugging Face folder, with clear errors.

Only local folders are loaded (the Hub is not reachable offline), only safetensors weights (pickled ``.bin``
weights can run code when loaded), and model code from the folder only with ``trust_remote_code=True``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from asu.device import AUTO, Placement
from asu.errors import UsageError

logger = logging.getLogger(__name__)


class ModelLoadError(UsageError):
    """The model folder cannot be used for unlearning; the message says what to change."""


def check_model_folder(path: str | Path) -> Path:
    """Return ``path`` as a Path if it looks like a usable HF model folder, else raise ModelLoadError."""
    folder = Path(path)
    if not folder.is_dir():
        raise ModelLoadError(
            f"model folder {folder} does not exist; pass a local Hugging Face folder (config.json + *.safetensors). "
            "Hub names are not downloaded: save the model locally first"
        )
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder} has no config.json; it is not a Hugging Face model folder")
    if not any(folder.glob("*.safetensors")):
        raise ModelLoadError(
            f"{folder} has no *.safetensors weights; only safetensors are loaded. Convert with "
            "model.save_pretrained(folder, safe_serialization=True)"
        )
    return folder


def check_decoder(config) -> None:
    """Raise ModelLoadError unless ``config`` describes a decoder-only causal LM."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    # Encoder families (BERT, RoBERTa, ...) also have a causal-LM head class but set is_decoder=False;
    # decoder-only families do not define is_decoder at all.
    encoder_only = getattr(config, "is_decoder", True) is False
    if (
        getattr(config, "is_encoder_decoder", False)
        or encoder_only
        or config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    ):
        raise ModelLoadError(
            f"model type {config.model_type!r} is not a decoder-only causal language model; ASU unlearns decoder "
            "models (Llama, Qwen, Mistral, Phi-3, GPT-NeoX, GPT-2, Gemma-2, ...)"
        )


def check_tokenizer(tokenizer, folder: Path | str = "the tokenizer") -> None:
    """Raise ModelLoadError unless the tokenizer has both an EOS and a padding token."""
    if tokenizer.eos_token_id is None:
        raise ModelLoadError(f"{folder}: the tokenizer has no EOS token; set eos_token in tokenizer_config.json")
    if tokenizer.pad_token_id is None:
        raise ModelLoadError(
            f"{folder}: the tokenizer has no padding token; set pad_token in tokenizer_config.json "
            "(the EOS token is a common choice: tokenizer.pad_token = tokenizer.eos_token, then save_pretrained)"
        )


def load_tokenizer(path: str | Path, *, trust_remote_code: bool = False):
    """The tokenizer of a local model folder (checked as :func:`check_tokenizer`), without the weights: enough to
    check a request's texts before any model pass."""
    from transformers import AutoTokenizer

    folder = check_model_folder(path)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    check_tokenizer(tokenizer, folder)
    return tokenizer


def load_model_and_tokenizer(path: str | Path, *, trust_remote_code: bool = False, placement: Placement = AUTO):
    """Load ``(model, tokenizer)`` from a local folder after the checks above.

    Returns a ``transformers`` causal LM in eval mode on ``placement``'s device and dtype (``asu.device``: the GPU in
    bfloat16 where there is one, else the CPU in float32), and its tokenizer.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = check_model_folder(path)
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except ValueError as err:
        if "trust_remote_code" in str(err):
            raise ModelLoadError(
                f"{folder} needs custom model code; set trust_remote_code=True only if you trust that folder"
            ) from err
        raise
    check_decoder(config)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    check_tokenizer(tokenizer, folder)
    device, dtype = placement.torch_device(), placement.torch_dtype()
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code
    ).to(device)
    logger.info("loaded %s (%s, %.1fM parameters) on %s %s", folder, config.model_type, model.num_parameters() / 1e6,
                device, dtype, extra={"asu_device": str(device), "asu_dtype": str(dtype), "asu_model": str(folder)},
                stacklevel=2)
    return model.eval(), tokenizer

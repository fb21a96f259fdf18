"""Run directories: one writer at a time, atomic writes, and a manifest that says how outputs were made."""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from reflectevo.errors import ReflectEvoError


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it: readers see old or new, never half.

    If the disk is full (or anything else fails) the previous file is untouched and the error says so.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs should read like any other
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        reason = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        kept = "the previous version is kept" if path.exists() else "nothing was written"
        raise ReflectEvoError(f"cannot write {path}: {reason}; {kept}") from exc


def write_json(path: str | Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


class RunDir:
    """A run's folder. `with RunDir(path) as run:` holds an exclusive lock until the block ends."""

    LOCK = ".lock"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_fd: int | None = None

    def __enter__(self) -> "RunDir":
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReflectEvoError(f"cannot create run directory {self.path}: {exc.strerror or exc}") from exc
        fd = os.open(self.path / self.LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ReflectEvoError(f"run directory {self.path} is in use by another reflectevo process "
                                  f"(pid {holder}); wait for it to finish or use another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd
        self._remove_stale_temporaries()
        return self

    def _remove_stale_temporaries(self) -> None:
        """Half-written files of a writer killed inside write_atomic (we hold the lock: no writer is active)."""
        for tmp in self.path.rglob(".*.tmp"):
            if tmp.is_file() and tmp.name.count(".") >= 3:  # write_atomic's ".<name>.<random>.tmp"
                tmp.unlink(missing_ok=True)

    def __exit__(self, *exc) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def file(self, name: str) -> Path:
        return self.path / name

    def write_config(self, config: dict) -> None:
        write_atomic(self.file("config.yaml"), yaml.safe_dump(config, sort_keys=False, allow_unicode=True))

    def write_manifest(self, stage: str, config: dict, **extra: Any) -> None:
        write_json(self.file("manifest.json" if stage == "generate" else f"manifest.{stage}.json"),
                   manifest(stage, config, **extra))

    def log(self, message: str) -> None:
        with self.file("log.txt").open("a", encoding="utf-8") as handle:
            handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_revision() -> str | None:
    source = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


@functools.lru_cache(maxsize=1)  # read once per process: every manifest asks for it, and the flags do not change
def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""  # not Linux: no flags known


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic on this CPU (AVX512_BF16 or AMX on x86, read from /proc/cpuinfo)."""
    flags = _cpuinfo()
    return " avx512_bf16" in flags or " amx_bf16" in flags


def cpu_model() -> str | None:
    """The CPU's name ("AMD EPYC 9R14 ..."): wall times in results files compare only on the same CPU."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip() or None
    return platform.processor() or None


def memory_limit() -> int | None:
    """Bytes this process may use: the cgroup's limit (a container) where one is set, else physical RAM."""
    limits = []
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limits.append(int(Path(path).read_text().strip()))  # "max" (no limit) is not a number
        except (OSError, ValueError):
            pass
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError):
        pass
    return min(limits) if limits else None


def peak_memory() -> int:
    """Bytes: this process's peak resident memory since it started or since reset_peak_memory()."""
    try:  # Linux: VmHWM, which reset_peak_memory() can lower (ru_maxrss only ever grows)
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB, macOS bytes


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (what deleting it frees)."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def reset_peak_memory() -> None:
    """Restart peak_memory() from the current resident size, so that a training step's peak is its own and
    not an earlier stage's in the same process (an evidence run generates, evaluates, then trains)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # 5: reset the peak resident set size (Linux >= 4.0); touches nothing else
    except OSError:
        pass  # not Linux, or not allowed: the peak then counts from the process start


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(), "cpu": cpu_model(),
                            "cpus": os.cpu_count(), "cpu_bf16": cpu_has_bf16(), "cpu_amx": " amx_tile" in _cpuinfo()}
    try:
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def manifest(stage: str, config: dict, **extra: Any) -> dict[str, Any]:
    packages = ["reflectevo", "torch", "transformers", "trl", "peft", "accelerate", "datasets",
                "math-verify", "llama_cpp_python", "vllm"]
    return {"stage": stage, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": sys.argv,
            "python": platform.python_version(),
            "versions": {p: v for p in packages if (v := _version(p))},
            "git_revision": git_revision(), "hardware": hardware(), "config": config, **extra}

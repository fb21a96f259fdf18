"""Locating and reading task data: bundled files inside the package, or a path the user gives."""

from __future__ import annotations

import gzip
import io
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from reflectevo.errors import InputError


def bundled(relative: str) -> Path:
    """Path of a data file shipped inside the package (reflectevo/data/...)."""
    return Path(str(resources.files("reflectevo") / "data" / relative))


def user_data_path(task: str, given: str | Path | None, filename: str, how: str) -> Path:
    """A data file the package may not ship: from `given`, else $REFLECTEVO_DATA_DIR/<filename>."""
    if given:
        path = Path(given)
    elif os.environ.get("REFLECTEVO_DATA_DIR"):
        path = Path(os.environ["REFLECTEVO_DATA_DIR"]) / filename
    else:
        raise InputError(f"task {task!r} has no bundled data ({how}); pass --data /path/to/{filename} "
                         f"or set REFLECTEVO_DATA_DIR to the folder holding {filename}")
    if not path.is_file():
        raise InputError(f"task {task!r}: data file {path} does not exist")
    return path


def read_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) pairs from a .jsonl or .jsonl.gz file; bad lines raise InputError."""
    try:
        raw = path.read_bytes()
        text = gzip.decompress(raw).decode("utf-8") if path.suffix == ".gz" else raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from exc
    rows = []
    for lineno, line in enumerate(io.StringIO(text), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise InputError(f"{path}:{lineno}: expected a JSON object")
        rows.append((lineno, obj))
    return rows


def require(obj: dict, field: str, path: Path, lineno: int) -> Any:
    if field not in obj:
        raise InputError(f"{path}:{lineno}: missing field {field!r}")
    return obj[field]

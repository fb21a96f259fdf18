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
from reflectevo.records import read_jsonl


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
    return list(read_jsonl(path))


def require(obj: dict, field: str, path: Path, lineno: int) -> Any:
    if field not in obj:
        raise InputError(f"{path}:{lineno}: missing field {field!r}")
    return obj[field]


TABLE_FORMATS = (".jsonl", ".json", ".csv", ".parquet")


def read_table(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(row number, record) pairs from JSONL, JSON (a list of objects, or an object holding one
    list of objects), CSV (header row) or Parquet, optionally .gz-compressed (not Parquet).
    The number is the line for JSONL/CSV and the 1-based record index for JSON/Parquet."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    kind = suffixes[-2] if suffixes[-1:] == [".gz"] and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    if kind not in TABLE_FORMATS:
        raise InputError(f"{path}: unsupported data format {kind or '(no extension)'!r}; "
                         f"use one of {', '.join(TABLE_FORMATS)}")
    if not path.is_file():
        raise InputError(f"{path}: data file does not exist")
    if kind == ".jsonl":
        return read_records(path)
    if kind == ".parquet":
        try:
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a bad file
            raise InputError(f"{path}: cannot read Parquet ({exc})") from exc
        return [(i, row) for i, row in enumerate(rows, 1)]
    try:
        raw = path.read_bytes()
        text = gzip.decompress(raw).decode("utf-8-sig") if suffixes[-1] == ".gz" else raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from exc
    if kind == ".csv":
        import csv

        reader = csv.DictReader(io.StringIO(text))
        rows = []
        try:
            for row in reader:
                if None in row:
                    raise InputError(f"{path}:{reader.line_num}: more values than header columns")
                rows.append((reader.line_num, dict(row)))
        except csv.Error as exc:
            raise InputError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from exc
        return rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from exc
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise InputError(f"{path}: expected a list of records (or an object holding exactly one list)")
        data = lists[0]
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a list of records")
    rows = []
    for i, obj in enumerate(data, 1):
        if not isinstance(obj, dict):
            raise InputError(f"{path}: record {i} is not an object")
        rows.append((i, obj))
    return rows

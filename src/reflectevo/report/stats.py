"""`reflectevo stats`: the paper's dataset statistics for episodes, curated sets or paper files.

For episodes (a run directory, an episodes file, or any of the paper's layouts):
samples per task, mean lengths of question, turn 1, turn 2 and reflection (in words, i.e. whitespace
tokens, and characters), the share of reflections after which trial 2 was correct, the share of
failures corrected by at least one reflection, and the success rate per instruction.
For curated sets (a curated directory or one of its files): rows per set, split, task and instruction,
and mean lengths of prompts and completions. Results come as tables, stats.json and PNG plots.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from reflectevo.errors import InputError
from reflectevo.formats.paper import detect_layout, import_episodes, read_json_objects
from reflectevo.records import EPISODE_SCHEMA, Episode, episode_counts, read_episodes, read_jsonl
from reflectevo.runs import write_atomic, write_json

LENGTH_FIELDS = ("question", "turn1", "turn2", "reflection")


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None


def _lengths(texts: list[str]) -> dict[str, Any]:
    return {"n": len(texts), "words": _mean([len(t.split()) for t in texts]),
            "chars": _mean([len(t) for t in texts])}


# ------------------------------------------------------------------------------------------ episodes

def episode_stats(episodes: list[Episode]) -> dict[str, Any]:
    by_task: dict[str, list[Episode]] = defaultdict(list)
    for ep in episodes:
        by_task[ep.task].append(ep)
    tasks = {}
    for task, eps in sorted(by_task.items()):
        counts = episode_counts(eps)
        refl = [r for ep in eps if not ep.trial1.verdict.correct for r in ep.reflections if r.trial2 is not None]
        corrected = counts["trial2_correct"]
        tasks[task] = {
            **{k: counts[k] for k in ("problems", "trial1_correct", "failures")},
            "reflections": len(refl),  # those with a trial 2 (an imported raw file may lack some)
            "trial2_correct": corrected,
            "corrected_share": round(corrected / len(refl), 4) if refl else None,
            "failures_corrected": counts["failures_corrected"],
            "lengths": {
                "question": _lengths([ep.question for ep in eps]),
                "turn1": _lengths([ep.trial1.response for ep in eps]),
                "turn2": _lengths([r.trial2.response for r in refl]),
                "reflection": _lengths([r.text for r in refl]),
            },
        }
    per_instruction: dict[str, dict[str, int]] = defaultdict(lambda: {"reflections": 0, "corrected": 0})
    for ep in episodes:
        if ep.trial1.verdict.correct:
            continue
        for r in ep.reflections:
            if r.trial2 is not None:
                per_instruction[r.instruction_id]["reflections"] += 1
                per_instruction[r.instruction_id]["corrected"] += int(r.trial2.verdict.correct)
    instructions = {k: {**v, "success_rate": round(v["corrected"] / v["reflections"], 4)}
                    for k, v in sorted(per_instruction.items())}
    total_refl = sum(t["reflections"] for t in tasks.values())
    total = {"problems": len(episodes), "failures": sum(t["failures"] for t in tasks.values()),
             "reflections": total_refl, "trial2_correct": sum(t["trial2_correct"] for t in tasks.values()),
             "corrected_share": (round(sum(t["trial2_correct"] for t in tasks.values()) / total_refl, 4)
                                 if total_refl else None)}
    return {"kind": "episodes", "total": total, "tasks": tasks, "instructions": instructions}


# ------------------------------------------------------------------------------------------ curated

def _content(messages: Any) -> str:
    if isinstance(messages, list):
        return "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    return str(messages or "")


def rows_stats(rows: list[dict]) -> dict[str, Any]:
    per_task: dict[str, int] = defaultdict(int)
    per_instruction: dict[str, int] = defaultdict(int)
    texts: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        per_task[row.get("task", "?")] += 1
        per_instruction[row.get("instruction_id", row.get("chosen_instruction_id", "?"))] += 1
        for column in ("prompt", "completion", "chosen", "rejected"):
            if column in row:
                texts[column].append(_content(row[column]))
    return {"rows": len(rows), "problems": len({r.get("episode_id") for r in rows}),
            "per_task": dict(sorted(per_task.items())), "per_instruction": dict(sorted(per_instruction.items())),
            "lengths": {column: _lengths(values) for column, values in texts.items()}}


def curated_stats(folder: Path) -> dict[str, Any]:
    sets = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        splits = {s: [row for _, row in read_jsonl(sub / f"{s}.jsonl")]
                  for s in ("train", "validation") if (sub / f"{s}.jsonl").is_file()}
        if splits:
            sets[sub.name] = {"splits": {s: len(r) for s, r in splits.items()},
                              **rows_stats([row for rows in splits.values() for row in rows])}
    if not sets:
        raise InputError(f"{folder}: no curated datasets (<name>/train.jsonl) in this directory")
    return {"kind": "curated", "datasets": sets}


def curated_file_stats(path: Path, rows: list[dict]) -> dict[str, Any]:
    return {"kind": "curated", "datasets": {path.parent.name or path.stem: {"splits": {path.stem: len(rows)},
                                                                           **rows_stats(rows)}}}


# ------------------------------------------------------------------------------------------ loading

def compute(path: str | Path) -> tuple[dict[str, Any], Path]:
    """(statistics, default output folder) for whatever `path` is."""
    path = Path(path)
    if path.is_dir():
        if (path / "episodes.jsonl").is_file():
            return _tag(episode_stats(read_episodes(path / "episodes.jsonl")), path), path / "stats"
        if any((sub / "train.jsonl").is_file() for sub in path.iterdir() if sub.is_dir()):
            return _tag(curated_stats(path), path), path / "stats"
        raise InputError(f"{path}: neither a run directory (episodes.jsonl) nor a curated directory")
    if not path.is_file():
        raise InputError(f"{path}: no such file or directory")
    out = path.parent / f"{path.stem}_stats"
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as exc:  # pyarrow raises many kinds; the user needs one line
            raise InputError(f"{path}: cannot read Parquet ({exc})") from exc
        return _tag(curated_file_stats(path, rows), path), out

    objects = list(read_json_objects(path))
    if not objects:
        raise InputError(f"{path}: empty file")
    line, first = objects[0]
    if first.get("schema") == EPISODE_SCHEMA:
        return _tag(episode_stats(read_episodes(path)), path), out
    if "prompt" in first and ("completion" in first or "chosen" in first):
        return _tag(curated_file_stats(path, [obj for _, obj in objects]), path), out
    if detect_layout(first):
        return _tag(episode_stats(import_episodes(path)), path), out
    raise InputError(f"{path}:{line}: not an episode, a curated row or a paper record "
                     f"(fields: {', '.join(sorted(first)[:8])})")


def _tag(stats: dict, path: Path) -> dict:
    return {"source": str(path), **stats}


# ------------------------------------------------------------------------------------------ output

def tables(stats: dict[str, Any]) -> list:
    from rich.table import Table

    def fmt(value):
        return "-" if value is None else f"{value:.1%}" if isinstance(value, float) and value <= 1 else str(value)

    if stats["kind"] == "episodes":
        tasks = Table("task", "problems", "trial 1 ok", "failures", "reflections", "corrected", "failures fixed",
                      title="samples per task (corrected: share of reflections followed by a correct trial 2)")
        lengths = Table("task", *LENGTH_FIELDS, title="mean lengths in words (characters)")
        for name, t in stats["tasks"].items():
            tasks.add_row(name, str(t["problems"]), str(t["trial1_correct"]), str(t["failures"]),
                          str(t["reflections"]), fmt(t["corrected_share"]), str(t["failures_corrected"]))
            lengths.add_row(name, *[f"{t['lengths'][f]['words'] or '-'} ({t['lengths'][f]['chars'] or '-'})"
                                    for f in LENGTH_FIELDS])
        inst = Table("instruction", "reflections", "corrected", "success rate", title="success per instruction")
        for name, i in stats["instructions"].items():
            inst.add_row(name, str(i["reflections"]), str(i["corrected"]), fmt(i["success_rate"]))
        return [tasks, lengths, inst]
    sets = Table("dataset", "rows", "splits", "problems", "tasks", title="curated sets")
    lengths = Table("dataset", "prompt", "output (completion / chosen)", "rejected",
                    title="mean lengths in words")
    for name, d in stats["datasets"].items():
        output = d["lengths"].get("completion") or d["lengths"].get("chosen") or {}
        sets.add_row(name, str(d["rows"]), ", ".join(f"{k} {v}" for k, v in d["splits"].items()),
                     str(d["problems"]), ", ".join(f"{k} {v}" for k, v in d["per_task"].items()))
        lengths.add_row(name, str(d["lengths"].get("prompt", {}).get("words") or "-"),
                        str(output.get("words") or "-"),
                        str(d["lengths"].get("rejected", {}).get("words") or "-"))
    return [sets, lengths]


def plot(stats: dict[str, Any], out: Path) -> list[Path]:
    """PNG plots of the statistics; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def save(fig, name):
        path = out / name
        import io

        buffer = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=110)
        plt.close(fig)
        write_atomic(path, buffer.getvalue())
        written.append(path)

    if stats["kind"] == "episodes":
        names = list(stats["tasks"])
        keys = ["problems", "failures", "reflections", "trial2_correct"]
        fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(names) + 3), 3.6))
        width = 0.8 / len(keys)
        for k, key in enumerate(keys):
            ax.bar([i + k * width for i in range(len(names))], [stats["tasks"][n][key] for n in names], width,
                   label=key.replace("_", " "))
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names)
        ax.set_ylabel("count")
        ax.set_title("samples per task")
        ax.legend(fontsize=8)
        save(fig, "samples_per_task.png")

        fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(names) + 3), 3.6))
        width = 0.8 / len(LENGTH_FIELDS)
        for k, field in enumerate(LENGTH_FIELDS):
            ax.bar([i + k * width for i in range(len(names))],
                   [stats["tasks"][n]["lengths"][field]["words"] or 0 for n in names], width, label=field)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names)
        ax.set_ylabel("mean length (words)")
        ax.set_title("average lengths")
        ax.legend(fontsize=8)
        save(fig, "lengths.png")

        inst = stats["instructions"]
        if inst:
            labels = list(inst)
            fig, ax = plt.subplots(figsize=(7, max(2.5, 0.28 * len(labels) + 1.2)))
            ax.barh(labels, [inst[n]["success_rate"] for n in labels], color="tab:green")
            for y, n in enumerate(labels):
                ax.text(inst[n]["success_rate"], y, f" n={inst[n]['reflections']}", va="center", fontsize=7)
            ax.set_xlim(0, 1.15)
            ax.set_xlabel("share of reflections followed by a correct trial 2")
            ax.set_title("success rate per instruction")
            ax.invert_yaxis()
            save(fig, "instructions.png")
    else:
        names = list(stats["datasets"])
        splits = sorted({s for d in stats["datasets"].values() for s in d["splits"]})
        fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(names) + 2), 3.6))
        bottom = [0] * len(names)
        for split in splits:
            values = [stats["datasets"][n]["splits"].get(split, 0) for n in names]
            ax.bar(names, values, bottom=bottom, label=split)
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_ylabel("rows")
        ax.set_title("rows per curated set")
        ax.legend(fontsize=8)
        ax.tick_params(axis="x", labelrotation=20)
        save(fig, "rows_per_dataset.png")
    return written


def run_stats(path: str | Path, out: str | Path | None = None) -> tuple[dict, list[Path], Path]:
    """Compute, then write stats.json and the plots. Returns (stats, plot files, output folder)."""
    stats, default_out = compute(path)
    out = Path(out) if out else default_out
    write_json(out / "stats.json", stats)
    return stats, plot(stats, out), out


def to_json(stats: dict) -> str:
    return json.dumps(stats, indent=2)

"""`reflectevo report`: one self-contained HTML file (inline PNG plots, no external URLs) and a Markdown
summary beside it, for one or several runs side by side.

Evaluation runs (results.json + samples.jsonl) give the accuracy tables, CIs, flip matrices and example
problems; generation runs (episodes.jsonl) give reflection lengths and success per instruction.
"""

from __future__ import annotations

import base64
import html
import json
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from reflectevo.errors import InputError
from reflectevo.records import RESULTS_SCHEMAS, Episode, EvalSample, episode_counts, read_episodes, read_samples
from reflectevo.report import plots
from reflectevo.report.paper_metrics import score_paper_raw
from reflectevo.runs import write_atomic

EXAMPLES_PER_RUN = 6
TRUNCATE = 1500


@dataclass
class Run:
    path: Path
    label: str
    results: dict[str, Any] | None = None
    samples: list[EvalSample] = field(default_factory=list)
    episodes: list[Episode] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return " + ".join(k for k, present in (("evaluation", self.results), ("generation", self.episodes))
                          if present)


# ------------------------------------------------------------------------------------------ loading

def load_run(path: str | Path) -> Run:
    """Read a run directory; anything else gets a one-line error saying what was expected."""
    path = Path(path)
    expected = "expected results.json (from `reflectevo evaluate`) or episodes.jsonl (from `reflectevo generate`)"
    if not path.exists():
        raise InputError(f"{path}: no such run directory")
    if not path.is_dir():
        raise InputError(f"{path}: not a directory; {expected} inside a run directory")
    run = Run(path=path, label=path.resolve().name)
    results_path = path / "results.json"
    if results_path.is_file():
        try:
            results = json.loads(results_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{results_path}: cannot read as JSON ({exc})") from exc
        schema = results.get("schema") if isinstance(results, dict) else None
        if schema not in RESULTS_SCHEMAS:
            raise InputError(f"{results_path}: not a reflectevo evaluation result (schema={schema!r}, "
                             f"expected {RESULTS_SCHEMAS[-1]!r})")
        if not isinstance(results.get("metrics"), dict) or "per_task" not in results["metrics"]:
            raise InputError(f"{results_path}: has no 'metrics' with 'per_task'")
        run.results = results
        if (path / "samples.jsonl").is_file():
            run.samples = read_samples(path / "samples.jsonl")
    if (path / "episodes.jsonl").is_file():
        run.episodes = read_episodes(path / "episodes.jsonl")
        if not run.episodes and run.results is None:
            raise InputError(f"{path / 'episodes.jsonl'}: holds no episodes")
    if run.results is None and not run.episodes:
        what = "empty directory" if not any(path.iterdir()) else "not a reflectevo run directory"
        raise InputError(f"{path}: {what}; {expected}")
    return run


def _unique_labels(runs: list[Run]) -> None:
    seen: dict[str, int] = defaultdict(int)
    for run in runs:
        seen[run.label] += 1
    for run in runs:
        if seen[run.label] > 1:
            run.label = f"{run.path.resolve().parent.name}/{run.path.resolve().name}"


# ------------------------------------------------------------------------------------------ numbers

def pct(estimate: dict | None, ci: bool = True) -> str:
    if not estimate:
        return "–"
    text = f"{100 * estimate['value']:.1f}"
    if ci and estimate.get("ci"):
        low, high = estimate["ci"]
        text += f" [{100 * low:.1f}, {100 * high:.1f}]"
    return text


def metric_groups(run: Run) -> list[tuple[str, dict]]:
    """(task, metrics) of an evaluation run, plus "overall" when it has several tasks."""
    metrics = run.results["metrics"]
    groups = list(metrics["per_task"].items())
    if len(groups) > 1:
        groups.append(("overall", metrics["overall"]))
    return groups


ACCURACY_HEADER = ["run", "task", "n", "Acc@t1", "Acc@t2 oracle", "Δ oracle", "w→r", "r→w",
                   "Acc@t2 retry (no reflection)", "reflection value", "Acc@t2 oracle-free", "Δ oracle-free", "w→r", "r→w", "revised", "verdict unread",
                   "extraction fail t1 (format)", "cut off t1 / t2 (max tokens)", "mean F1 t1 → t2"]


def accuracy_rows(runs: Sequence[Run]) -> list[list[str]]:
    rows = []
    for run in runs:
        if not run.results:
            continue
        for task, m in metric_groups(run):
            free = m.get("oracle_free")
            retry = m.get("retry")
            f1 = m.get("f1")
            rows.append([
                run.label, task, str(m["n"]), pct(m["acc_t1"]), pct(m["oracle"]["acc_t2"]),
                pct(m["oracle"]["delta"]), str(m["oracle"]["flips"]["wrong_to_right"]),
                str(m["oracle"]["flips"]["right_to_wrong"]),
                pct(retry["acc_t2"]) if retry else "–", pct(m.get("reflection_value")),
                pct(free["acc_t2"]) if free else "–", pct(free["delta"]) if free else "–",
                str(free["flips"]["wrong_to_right"]) if free else "–",
                str(free["flips"]["right_to_wrong"]) if free else "–",
                str(free["revised"]) if free else "–", str(free["self_check_unparsed"]) if free else "–",
                pct(m["extraction_failure_rate"]["t1"], ci=False),
                f"{pct((m.get('truncation_rate') or {}).get('t1'), ci=False)} / "
                f"{pct((m.get('truncation_rate') or {}).get('t2_oracle'), ci=False)}",
                f"{pct(f1['t1'], ci=False)} → {pct(f1['t2_oracle'], ci=False)}" if f1 else "–",
            ])
    return rows


def generation_rows(runs: Sequence[Run]) -> list[list[str]]:
    rows = []
    for run in runs:
        if not run.episodes:
            continue
        counts = episode_counts(run.episodes)
        rows.append([run.label, ", ".join(sorted({ep.task for ep in run.episodes})),
                     *(str(counts[k]) for k in ("problems", "trial1_correct", "reflections", "trial2_correct",
                                                "failures_corrected"))])
    return rows


GENERATION_HEADER = ["run", "tasks", "problems", "trial 1 correct", "reflections", "trial 2 correct",
                     "failures corrected"]


def reflection_lengths(run: Run) -> list[int]:
    """Words per reflection: every reflection of a generation run, the oracle-gated ones of an evaluation."""
    texts = [r.text for ep in run.episodes for r in ep.reflections]
    texts += [r.text for s in run.samples for r in s.episode.reflections]
    return [len(t.split()) for t in texts]


def instruction_success(run: Run) -> dict[str, tuple[int, int]]:
    stats: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    reflections = [r for ep in run.episodes for r in ep.reflections]
    reflections += [r for s in run.samples for r in s.episode.reflections]
    for r in reflections:
        if r.trial2 is not None:
            stats[r.instruction_id][0] += r.trial2.verdict.correct
            stats[r.instruction_id][1] += 1
    return {k: (s, n) for k, (s, n) in stats.items()}


def pick_examples(samples: Sequence[EvalSample], count: int = EXAMPLES_PER_RUN) -> list[tuple[str, EvalSample]]:
    """A few problems of each kind, most telling first: fixed, broken by revising, still wrong, right."""
    kinds = defaultdict(list)
    for s in samples:
        t1 = s.episode.trial1.verdict.correct
        gated = s.episode.reflections[0].trial2 if s.episode.reflections else None
        free = s.oracle_free.trial2 if s.oracle_free else None
        if gated and gated.verdict.correct:
            kinds["wrong → right"].append(s)
        elif free and t1 and not free.verdict.correct:
            kinds["right → wrong (oracle-free)"].append(s)
        elif not t1:
            kinds["wrong → wrong"].append(s)
        else:
            kinds["right at trial 1"].append(s)
    picked: list[tuple[str, EvalSample]] = []
    while len(picked) < count and any(kinds.values()):
        for kind in ("wrong → right", "right → wrong (oracle-free)", "wrong → wrong", "right at trial 1"):
            if kinds[kind] and len(picked) < count:
                picked.append((kind, kinds[kind].pop(0)))
    return picked


# ------------------------------------------------------------------------------------------ HTML

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
     color:#222;padding:0 1em;line-height:1.4}
h1{font-size:1.6em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3} td.num{text-align:right;white-space:nowrap}
img{max-width:100%;display:block;margin:.6em 0}
pre{white-space:pre-wrap;background:#f8f8f8;border:1px solid #eee;padding:.5em;font-size:.8em;
    max-height:22em;overflow:auto}
details{margin:.4em 0;border:1px solid #e3e3e3;padding:.3em .6em;border-radius:4px}
summary{cursor:pointer;font-weight:600} .ok{color:#1a7f37} .bad{color:#c62828} .muted{color:#777;font-size:.85em}
"""


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def html_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="plot" alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def _clip(text: str) -> str:
    return text if len(text) <= TRUNCATE else text[:TRUNCATE] + f" … [{len(text) - TRUNCATE} more characters]"


def _verdict(v) -> str:
    mark = '<span class="ok">correct</span>' if v.correct else '<span class="bad">wrong</span>'
    extracted = "extraction failed" if v.extraction_failed else f"extracted {esc(v.extracted)!s}"
    if v.truncated:
        extracted += "; cut off by max tokens"
    return f"{mark} ({extracted})"


def example_html(kind: str, s: EvalSample) -> str:
    ep = s.episode
    parts = [f"<details><summary>{esc(ep.id)} — {esc(kind)}</summary>",
             f"<p><b>Question</b></p><pre>{esc(_clip(ep.question))}</pre><p><b>Gold:</b> {esc(ep.gold)}</p>",
             f"<p><b>Trial 1</b> ({esc(ep.trial1.model)}): {_verdict(ep.trial1.verdict)}</p>"
             f"<pre>{esc(_clip(ep.trial1.response))}</pre>"]
    if s.self_check:
        parts.append(f"<p><b>Self-check</b>: decision <b>{esc(s.self_check.decision)}</b>"
                     f"{'' if s.self_check.parsed else ' (verdict unreadable, so revised)'}</p>"
                     f"<pre>{esc(_clip(s.self_check.response))}</pre>")
    gated = ep.reflections[0] if ep.reflections else None
    for name, r in (("oracle-gated", gated), ("oracle-free", s.oracle_free)):
        if r is None:
            continue
        parts.append(f"<p><b>Reflection, {name}</b> ({esc(r.model)})</p><pre>{esc(_clip(r.text))}</pre>")
        if r.trial2:
            parts.append(f"<p><b>Trial 2, {name}</b> ({esc(r.trial2.model)}): {_verdict(r.trial2.verdict)}</p>"
                         f"<pre>{esc(_clip(r.trial2.response))}</pre>")
    if s.retry:
        parts.append(f"<p><b>Retry without reflection</b> ({esc(s.retry.model)}): {_verdict(s.retry.verdict)}</p>"
                     f"<pre>{esc(_clip(s.retry.response))}</pre>")
    parts.append("</details>")
    return "".join(parts)


def models_html(run: Run) -> str:
    r = run.results
    rows = [[role, info.get("model", ""), info.get("id", ""), info.get("engine", "")]
            for role, info in (r.get("models") or {}).items()]
    tasks = ", ".join(f"{name} v{info.get('version', '?')}" for name, info in (r.get("tasks") or {}).items())
    sampling = ", ".join(f"{k}={v}" for k, v in (r.get("sampling") or {}).items())
    return (f"<h3>{esc(run.label)}</h3><p class='muted'>mode {esc(r.get('mode'))}; split {esc(r.get('split'))}; "
            f"tasks {esc(tasks)}; {esc(sampling)}; seeds {esc(r.get('seeds'))}; created {esc(r.get('created'))}; "
            f"git {esc(r.get('git_revision'))}</p>" + html_table(["role", "model", "id", "engine"], rows))


def paper_html(scores: list[dict]) -> str:
    parts = ["<h2>The paper's metrics on its raw format</h2>"]
    rows = []
    for s in scores:
        c, f, ours = s["count_py"], s["count_freetext_py"], s["ours"]
        rows.append([Path(s["path"]).name, str(s["records"]), f"{c['acc_t1']:.1f}", f"{c['acc_t2']:.1f}",
                     pct(ours["acc_t1"]), pct(ours["oracle"]["acc_t2"]), pct(ours["oracle"]["delta"]),
                     f"{100 * s['best_of_reflections_acc_t2']:.1f}",
                     f"{f['trial1_correctness']:.1f} / {f['improved_ratio']:.1f}"])
    parts.append(html_table(["file", "records", "count.py acc@t1", "count.py acc@t2", "ours Acc@t1",
                             "ours Acc@t2", "ours Δ", "best of reflections", "count_freetext.py t1 / improved (÷500)"],
                            rows))
    parts.append("<p><b>Differences of definition</b></p><ul>" +
                 "".join(f"<li>{esc(d)}</li>" for d in scores[0]["differences"]) + "</ul>")
    return "".join(parts)


def build(runs: Sequence[Run], paper_scores: Sequence[dict] = ()) -> tuple[str, str]:
    """(HTML, Markdown) for the runs."""
    body = [f"<h1>reflectevo report</h1><p class='muted'>{esc(time.strftime('%Y-%m-%d %H:%M'))} — runs: "
            + ", ".join(f"{esc(r.label)} ({esc(r.kind)}, {esc(r.path)})" for r in runs) + "</p>"]
    md = ["# reflectevo report", "", "Runs: " + ", ".join(f"`{r.label}` ({r.kind})" for r in runs), ""]
    evaluated = [r for r in runs if r.results]
    if evaluated:
        body.append("<h2>Accuracy</h2><p class='muted'>Percentages with 95% bootstrap CIs. Oracle-gated Acc@t2 "
                    "(the paper's protocol) reflects only where the gold verifier marked trial 1 wrong; the "
                    "retry answers those same problems again with the feedback and no reflection, and the "
                    "reflection value is Acc@t2 minus the retry's (paired CI): a gain is the reflection's "
                    "only where that interval is above zero. Oracle-free Acc@t2 revises where the model's "
                    "own self-check says so.</p>")
        rows = accuracy_rows(evaluated)
        body.append(html_table(ACCURACY_HEADER, rows))
        md += ["## Accuracy (%, 95% bootstrap CI)", "", _md_table(ACCURACY_HEADER, rows), ""]
        groups = [(f"{r.label}\n{task}" if len(evaluated) > 1 else task, m)
                  for r in evaluated for task, m in metric_groups(r)]
        body.append(img(plots.accuracy_chart(groups), "accuracy per run and task"))
        body.append("<h2>Flips (trial 1 → trial 2)</h2>")
        for r in evaluated:
            overall = r.results["metrics"]["overall"]
            panels = [("oracle-gated", overall["oracle"]["flips"])]
            if overall.get("oracle_free"):
                panels.append(("oracle-free", overall["oracle_free"]["flips"]))
            body.append(img(plots.flip_chart(f"{r.label}: all tasks, n={overall['n']}", panels),
                            f"flip matrix {r.label}"))
        body.append("<h2>Models and settings</h2>" + "".join(models_html(r) for r in evaluated))
    generated = [r for r in runs if r.episodes]
    if generated:
        rows = generation_rows(generated)
        body.append("<h2>Generation runs</h2>" + html_table(GENERATION_HEADER, rows))
        md += ["## Generation runs", "", _md_table(GENERATION_HEADER, rows), ""]
    lengths = {r.label: reflection_lengths(r) for r in runs}
    if any(lengths.values()):
        rows = [[label, str(len(v)), f"{statistics.mean(v):.1f}", f"{statistics.median(v):.0f}", str(max(v))]
                for label, v in lengths.items() if v]
        header = ["run", "reflections", "mean words", "median words", "max words"]
        body.append("<h2>Reflection lengths</h2>" + html_table(header, rows)
                    + img(plots.length_chart(lengths), "reflection lengths"))
        md += ["## Reflection lengths", "", _md_table(header, rows), ""]
    for r in runs:
        stats = instruction_success(r)
        if stats:
            body.append(f"<h2>Success per instruction: {esc(r.label)}</h2>"
                        + img(plots.instruction_chart(stats, f"{r.label}: trial 2 correct after each reflection"),
                              f"success per instruction {r.label}"))
            rows = [[k, str(s), str(n), f"{100 * s / n:.1f}"] for k, (s, n) in sorted(stats.items())]
            md += [f"## Success per instruction: {r.label}", "",
                   _md_table(["instruction", "trial 2 correct", "reflections", "%"], rows), ""]
    if paper_scores:
        body.append(paper_html(list(paper_scores)))
        md += ["## The paper's metrics on its raw format", ""]
        for s in paper_scores:
            c = s["count_py"]
            md.append(f"- `{Path(s['path']).name}` ({s['records']} records): count.py acc@t1 {c['acc_t1']:.1f}, "
                      f"acc@t2 {c['acc_t2']:.1f}; ours Acc@t1 {pct(s['ours']['acc_t1'])}, "
                      f"Acc@t2 {pct(s['ours']['oracle']['acc_t2'])}")
        md += [""] + [f"- {d}" for d in paper_scores[0]["differences"]] + [""]
    examples = [(r, pick_examples(r.samples)) for r in evaluated if r.samples]
    if examples:
        body.append("<h2>Example problems</h2>")
        for r, picked in examples:
            body.append(f"<h3>{esc(r.label)}</h3>" + "".join(example_html(kind, s) for kind, s in picked))
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>reflectevo report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
    return page, "\n".join(md) + "\n"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cell = lambda c: str(c).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(run_dirs: Sequence[str | Path], out: str | Path | None = None,
                 paper_raw: Sequence[str | Path] = ()) -> tuple[Path, Path]:
    """Write the HTML report and the Markdown summary beside it; returns both paths."""
    if not run_dirs:
        raise InputError("no run directories given")
    runs = [load_run(p) for p in run_dirs]  # every input is checked before anything is written
    _unique_labels(runs)

    paper_scores = [score_paper_raw(p) for p in paper_raw]
    html_path = Path(out) if out else (runs[0].path / "report.html" if len(runs) == 1 else Path("report.html"))
    if html_path.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"--out {html_path}: the report is an HTML file; give a name ending in .html")
    page, markdown = build(runs, paper_scores)
    md_path = html_path.with_suffix(".md")
    write_atomic(html_path, page)
    write_atomic(md_path, markdown)
    return html_path, md_path

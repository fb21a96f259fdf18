"""The report: HTML rendered in headless Chromium (no console errors, every plot decoded), the Markdown
summary, the paper's count.py metrics, and one-line errors for inputs that are not runs."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reflectevo.cli import app
from reflectevo.errors import InputError
from reflectevo.records import Attempt, Episode, Problem, Reflection, Sampling, Verdict, episodes_to_jsonl
from reflectevo.report.html import load_run, write_report
from reflectevo.report.metrics import compute_metrics
from reflectevo.report.paper_metrics import count_freetext_py, score_paper_raw
from reflectevo.stages.evaluate import RESULTS_SCHEMA, EvalSample, SelfCheck, outcome

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Five synthetic records in the paper's raw layout (tests/data/paper), all wrong at trial 1.
PAPER_RAW = Path(__file__).resolve().parent / "data" / "paper" / "example_Reflection_raw.jsonl"


# ------------------------------------------------------------------------------------------ run dirs

def _attempt(text: str, correct: bool, f1: float | None = None) -> Attempt:
    return Attempt(messages=[{"role": "user", "content": "Q"}], response=text, model="tiny@abc", sampling=Sampling(),
                   seed=0, verdict=Verdict(correct=correct, extracted=text[-2:].strip() or None,
                                           extraction_failed=not text, details={} if f1 is None else {"f1": f1}))


def _reflection(text: str, instruction: str, t2: Attempt) -> Reflection:
    return Reflection(index=0, instruction_id=instruction, messages=[{"role": "user", "content": "R"}], text=text,
                      model="tiny@abc", sampling=Sampling(), seed=1, trial2=t2)


def make_eval_run(path: Path, shift: int = 0) -> Path:
    """An evaluation run directory of hand-made samples with every kind of outcome, over two tasks."""
    samples = []
    for k in range(12):
        task = "gsm8k" if k % 2 else "freetext"
        f1 = (lambda c: 1.0 if c else 0.3) if task == "freetext" else (lambda c: None)
        right = (k + shift) % 3 == 0
        problem = Problem(id=f"{task}/test/{k}", task=task, split="test", question=f"Question <{k}> & more?",
                          gold="42")
        ep = Episode.start(problem, _attempt(f"I think <b>{k}</b>. The answer is: {k}", right, f1(right)))
        if not right:
            fixed = k % 4 == 1
            ep.reflections.append(_reflection("I misread the question; " + "check each step. " * (k % 5),
                                              "test-time", _attempt("The answer is: 42", fixed, f1(fixed))))
        revise = k % 4 != 0
        check = SelfCheck(messages=[], response="Verdict: INCORRECT" if revise else "Verdict: CORRECT",
                          model="tiny@abc", sampling=Sampling(), seed=3, decision="revise" if revise else "keep",
                          parsed=k != 5)
        free = None
        if revise:
            good = (not right and k % 4 == 1) or (right and k % 2 == 0)
            free = _reflection("Let me look again.", "test-time", _attempt("The answer is: 42", good, f1(good)))
        samples.append(EvalSample(episode=ep, self_check=check, oracle_free=free))
    metrics = compute_metrics([outcome(s) for s in samples], resamples=200)
    path.mkdir(parents=True)
    (path / "samples.jsonl").write_text("".join(s.to_json() + "\n" for s in samples))
    (path / "results.json").write_text(json.dumps({
        "schema": RESULTS_SCHEMA, "stage": "evaluate", "created": "2025-01-01T00:00:00", "split": "test",
        "mode": "two-stage", "models": {"generator": {"model": "tiny", "id": "tiny@abc", "engine": "HFBackend"}},
        "tasks": {"gsm8k": {"version": "1"}, "freetext": {"version": "1"}}, "seeds": {"trial1": 0},
        "sampling": {"temperature": 0.0}, "metrics": metrics}))
    return path


def make_generation_run(path: Path) -> Path:
    episodes = []
    for k in range(6):
        problem = Problem(id=f"gsm8k/train/{k}", task="gsm8k", split="train", question=f"Q{k}", gold="7")
        ep = Episode.start(problem, _attempt("The answer is: 6", k == 0))
        if k:
            for j, instruction in enumerate(("step.calc.high", "glance.format.low", "step.logic.low")):
                ep.reflections.append(_reflection("word " * (5 + 3 * j + k), instruction,
                                                  _attempt("The answer is: 7", (j + k) % 3 == 0)))
        episodes.append(ep)
    path.mkdir(parents=True)
    (path / "episodes.jsonl").write_text(episodes_to_jsonl(episodes))
    return path


# ------------------------------------------------------------------------------------------ chromium

# Injected into a copy of the report: records script and resource errors, then writes what the browser
# made of every image into the DOM, which --dump-dom prints.
CHECK = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  window.__errors.push(String(e.message || (e.target && (e.target.src || e.target.href)) || 'error').slice(0, 200));
}, true);
window.addEventListener('load', function () {
  var images = Array.prototype.map.call(document.images, function (i) {
    return {alt: i.alt, width: i.naturalWidth, height: i.naturalHeight, complete: i.complete}; });
  var fetched = performance.getEntriesByType('resource').map(function (r) { return r.name.slice(0, 60); });
  var out = document.createElement('pre'); out.id = 'report-check';
  out.textContent = JSON.stringify({images: images, errors: window.__errors, fetched: fetched});
  document.body.appendChild(out);
});
</script>"""


def render_in_chromium(page: Path, workdir: Path) -> tuple[dict, list[str]]:
    """(what the check script saw, console lines) for `page` loaded in headless Chromium."""
    checked = workdir / "checked.html"
    checked.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + CHECK, 1), encoding="utf-8")
    profile = workdir / "chromium-profile"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
               "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom", checked.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    match = re.search(r'<pre id="report-check">(.*?)</pre>', done.stdout, re.S)
    assert match, "the check script did not run: " + done.stdout[-500:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return json.loads(html.unescape(match.group(1))), console


@pytest.fixture
def runs(tmp_path):
    return [make_eval_run(tmp_path / "base"), make_eval_run(tmp_path / "trained", shift=1),
            make_generation_run(tmp_path / "gen")]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_report_renders_in_chromium_with_all_plots(runs, tmp_path):
    html_path, md_path = write_report(runs, tmp_path / "out" / "report.html", [PAPER_RAW])
    page = html_path.read_text(encoding="utf-8")
    # Self-contained: no external URL in any src/href/url(), every image inline.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)|url\(\s*["']?https?:""", page, re.I)
    assert "Question &lt;1&gt; &amp; more?" in page and "<b>1</b>" not in page  # model text is escaped
    seen, console = render_in_chromium(html_path, tmp_path)
    assert console == [], console
    assert seen["errors"] == [] and all(url.startswith("data:") for url in seen["fetched"]), seen
    alts = [image["alt"] for image in seen["images"]]
    assert "accuracy per run and task" in alts and "reflection lengths" in alts
    assert sum(alt.startswith("flip matrix") for alt in alts) == 2
    assert sum(alt.startswith("success per instruction") for alt in alts) == 3
    for image in seen["images"]:
        assert image["complete"] and image["width"] > 100 and image["height"] > 50, image

    markdown = md_path.read_text()
    assert md_path == tmp_path / "out" / "report.md"
    assert "| base | gsm8k |" in markdown and "| trained | overall |" in markdown
    assert "count.py acc@t1 0.0, acc@t2 40.0" in markdown


def test_report_tables_match_the_metrics(runs, tmp_path):
    html_path, md_path = write_report(runs[:1], None)
    assert html_path == runs[0] / "report.html"  # one run: the report goes beside it
    metrics = json.loads((runs[0] / "results.json").read_text())["metrics"]["per_task"]["gsm8k"]
    row = next(line for line in md_path.read_text().splitlines() if line.startswith("| base | gsm8k |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == str(metrics["n"])
    assert cells[3].startswith(f"{100 * metrics['acc_t1']['value']:.1f} [")
    assert cells[6] == str(metrics["oracle"]["flips"]["wrong_to_right"])
    freetext = next(line for line in md_path.read_text().splitlines() if line.startswith("| base | freetext |"))
    assert "→" in freetext.split("|")[-2]  # mean F1 t1 → t2 shown for the free-text task


def test_report_cli_and_bad_inputs(runs, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["report", *map(str, runs), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.html").is_file() and (tmp_path / "r.md").is_file()
    before = (tmp_path / "r.html").read_text()

    empty = tmp_path / "empty"
    empty.mkdir()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "results.json").write_text('{"accuracy": 0.5}')
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("hello")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "results.json").write_text("{not json")
    cases = {empty: "empty directory; expected results.json",
             foreign: "results.json: not a reflectevo evaluation result (schema=None",
             other: "not a reflectevo run directory",
             broken: "results.json: cannot read as JSON",
             runs[2] / "episodes.jsonl": "not a directory",
             tmp_path / "missing": "no such run directory"}
    for path, message in cases.items():
        with pytest.raises(InputError, match=re.escape(message)):
            load_run(path)
        result = runner.invoke(app, ["report", str(runs[0]), str(path), "--out", str(tmp_path / "r.html")])
        assert result.exit_code == 2
        assert result.output.strip().startswith("error: ") and len(result.output.strip().splitlines()) == 1
    assert (tmp_path / "r.html").read_text() == before  # a bad input never replaced the previous report
    with pytest.raises(InputError, match="ending in .html"):
        write_report(runs[:1], tmp_path / "report.pdf")


# ------------------------------------------------------------------------------------------ paper


def test_paper_count_py_on_the_papers_raw_file():
    scores = score_paper_raw(PAPER_RAW, resamples=300)
    # The file holds 5 problems, all wrong at trial 1; the first trial 2 fixed 2 of them, and only the
    # second trial 2 of a third (count.py ignores it; the best-of-reflections bound counts it).
    assert scores["count_py"] == {"records": 5, "first_output_correct": 0, "second_output_correct": 2,
                                  "acc_t1": 0.0, "acc_t2": 40.0}
    assert scores["best_of_reflections_acc_t2"] == pytest.approx(0.6)
    ours = scores["ours"]
    assert ours["acc_t1"]["value"] == 0.0 and ours["oracle"]["acc_t2"]["value"] == pytest.approx(0.4)
    assert ours["oracle"]["delta"]["value"] == pytest.approx(0.4)
    assert ours["oracle"]["flips"]["wrong_to_right"] == 2
    assert ours["extraction_failure_rate"]["t1"]["value"] == pytest.approx(0.2)  # one empty generated_answer
    # The intervals, not only their order. Trial 1 is wrong on every problem, so every resample of it is 0.
    assert ours["acc_t1"]["ci"] == [0.0, 0.0]
    # A resample of the 5 problems (with replacement) holds Binomial(5, 0.4) fixed ones: P(none) = 7.8% and
    # P(all five) = 1.0% < 2.5% < P(four or five) = 8.7%, so the 95% percentile interval is [0, 0.8].
    assert ours["oracle"]["acc_t2"]["ci"] == pytest.approx([0.0, 0.8])
    # Paired: Δ = t2 - t1 per problem, resampled with the same problems; with t1 = 0 throughout it is t2
    # itself, resample by resample, so its interval is exactly that of acc@t2.
    assert ours["oracle"]["delta"]["ci"] == ours["oracle"]["acc_t2"]["ci"]
    assert any("constant 500" in d for d in scores["differences"])


def test_paper_free_text_scorer_divides_by_500(tmp_path):
    rows = [{"output": [{"is_correct": True, "F1_score": 1.0}, {"is_correct": True, "F1_score": 1.0}]},
            {"output": [{"is_correct": False, "F1_score": 0.2}, {"is_correct": False, "F1_score": 0.5}]},
            {"output": [{"is_correct": False, "scratchpad": "F1 Score: 0.1 ... F1 Score: 0.3"},
                        {"is_correct": True, "scratchpad": "F1 Score: 1.0"}]},
            {"output": [{"is_correct": False}, {"is_correct": False}]}]
    result = count_freetext_py(rows)
    assert result["trial1_correct"] == 1 and result["improved"] == 2
    assert result["trial1_correctness"] == pytest.approx(100 / 500)  # the paper's constant, not 1/4
    assert result["improved_ratio"] == pytest.approx(200 / 500)

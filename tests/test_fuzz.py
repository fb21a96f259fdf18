"""Property tests (hypothesis): whatever the input, loaders, config parsing, answer extractors and the
paper-format import never raise anything but a ReflectEvoError, whose message is one line naming the
file (and, for a bad line, `file:line`).

Inputs mix plain random bytes/text with near-valid ones (valid records with one field dropped or
replaced, broken JSON lines among good ones, answer-like fragments) so the search reaches past the
first parse. Example counts are modest so the file runs in well under a minute; raise them with
REFLECTEVO_FUZZ_EXAMPLES=2000 for a long search.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reflectevo.errors import ReflectEvoError

# REFLECTEVO_FUZZ_EXAMPLES=2000 for a long search (the default keeps the file well under a minute).
FUZZ = settings(max_examples=int(os.environ.get("REFLECTEVO_FUZZ_EXAMPLES", "40")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Synthetic records in the paper's example layouts (raw, D+, D±, Dpref), shipped with the tests.
PAPER = Path(__file__).resolve().parent / "data" / "paper"

# --------------------------------------------------------------------------------------- strategies

json_scalars = st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
# A line that is not valid JSON (no newlines, so line numbers stay predictable).
broken_lines = st.sampled_from(['{"a": 1', "{'single': 'quotes'}", "[1, 2", "nul", '{"a": 1}}', "\x00\x01",
                                '{"a": NaN', "{,}", '"just a string"', "123", "[]", "true"]) | \
    st.text(alphabet=st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=30)


def dump(value) -> str:
    return json.dumps(value, ensure_ascii=False).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def with_file(content: bytes | str, suffix: str, body):
    """Write `content` to a fresh file and call body(path)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"data{suffix}"
        path.write_bytes(content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content)
        return body(path)


def clean_error(call, path: Path, line: int | None = None) -> str | None:
    """Run `call`; a ReflectEvoError is fine if it is one line naming the file (and the line)."""
    try:
        call()
    except ReflectEvoError as exc:
        message = str(exc)
        assert "\n" not in message, f"multi-line error: {message!r}"
        assert str(path) in message, f"error does not name the file: {message!r}"
        if line is not None:
            assert f"{path}:{line}" in message, f"error does not name line {line}: {message!r}"
        return message
    return None


def first_bad_line(lines: list[str], ok) -> int | None:
    for number, line in enumerate(lines, 1):
        if line.strip() and not ok(line):
            return number
    return None


def is_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


line_files = st.lists(st.one_of(json_values.map(dump), st.dictionaries(st.text(max_size=8), json_values,
                                                                      max_size=4).map(dump),
                                broken_lines, st.just(""), st.just("   ")), max_size=8)


# ------------------------------------------------------------------------------------ data loaders

@FUZZ
@given(st.binary(max_size=300))
def test_loaders_survive_random_bytes(data):
    from reflectevo.formats.paper import import_episodes, read_json_objects
    from reflectevo.records import read_episodes, read_jsonl
    from reflectevo.tasks.data_files import read_records, read_table

    for suffix, call in ((".jsonl", lambda p: list(read_jsonl(p))), (".jsonl", read_episodes),
                         (".jsonl", read_records), (".jsonl.gz", read_records), (".csv", read_table),
                         (".json", read_table), (".parquet", read_table),
                         (".jsonl", lambda p: list(read_json_objects(p))), (".jsonl", import_episodes)):
        with_file(data, suffix, lambda p: clean_error(lambda: call(p), p))


@FUZZ
@given(st.binary(min_size=1, max_size=40), st.integers(0, 200), st.integers(0, 255))
def test_damaged_gzip_files(payload, cut, byte):
    import gzip

    from reflectevo.records import read_jsonl
    from reflectevo.tasks.data_files import read_records

    data = bytearray(gzip.compress(b'{"question": "q", "answer": "1"}\n' * 20 + payload))
    data = data[:cut % len(data)] if cut % 2 else data
    if len(data) > 12:
        data[12 + cut % (len(data) - 12)] = byte  # damage the deflate stream
    for call in (lambda p: list(read_jsonl(p)), read_records):
        with_file(bytes(data), ".jsonl.gz", lambda p: clean_error(lambda: call(p), p))


@FUZZ
@given(line_files)
def test_jsonl_readers_name_the_first_bad_line(lines):
    from reflectevo.records import read_jsonl
    from reflectevo.tasks.data_files import read_records

    text = "\n".join(lines) + "\n"
    bad = first_bad_line(lines, is_object)
    for call in (lambda p: list(read_jsonl(p)), read_records):
        message = with_file(text, ".jsonl", lambda p: clean_error(lambda: call(p), p, bad))
        assert (message is None) == (bad is None), message


@pytest.fixture(scope="module")
def valid_episode() -> dict:
    from reflectevo.records import Attempt, Episode, Reflection, Sampling, Verdict

    verdict = Verdict(correct=False, extracted="7", feedback="incorrect")
    attempt = Attempt(messages=[{"role": "user", "content": "q"}], response="7", model="m@0", sampling=Sampling(),
                      seed=0, verdict=verdict)
    ep = Episode(id="t/train/0", task="t", split="train", question="q", gold="12", trial1=attempt)
    ep.reflections.append(Reflection(index=0, instruction_id="i", messages=attempt.messages, text="r", model="m@0",
                                     sampling=Sampling(), seed=1, trial2=attempt))
    return json.loads(ep.to_json())


def mutate(draw, obj):
    """Drop, replace or retype one field somewhere in a nested JSON object."""
    if not isinstance(obj, (dict, list)) or not obj:
        return draw(json_values)
    keys = list(obj) if isinstance(obj, dict) else list(range(len(obj)))
    key = draw(st.sampled_from(keys))
    copy = dict(obj) if isinstance(obj, dict) else list(obj)
    action = draw(st.sampled_from(["drop", "replace", "descend", "descend"]))
    if action == "drop":
        del copy[key]
    elif action == "replace":
        copy[key] = draw(json_values)
    else:
        copy[key] = mutate(draw, copy[key])
    return copy


@FUZZ
@given(st.data())
def test_read_episodes_on_mutated_episodes(valid_episode, data):
    from reflectevo.records import read_episodes

    rows = [data.draw(st.builds(lambda: None)) or (mutate(data.draw, valid_episode)
                                                   if data.draw(st.booleans()) else valid_episode)
            for _ in range(data.draw(st.integers(1, 4)))]
    lines = [dump(r) for r in rows]
    with_file("\n".join(lines) + "\n", ".jsonl", lambda p: clean_error(lambda: read_episodes(p), p))


# ---------------------------------------------------------------------------------------- YAML task

spec_values = {
    "name": st.text(max_size=10) | st.integers(),
    "answer_type": st.sampled_from(["choice", "number", "math", "text", "code"]) | st.text(max_size=6),
    "fields": st.dictionaries(st.sampled_from(["question", "answer", "id", "options", "aliases", "tests",
                                               "setup", "bogus"]), st.text(max_size=8) | json_values, max_size=4),
    "template": st.text(max_size=40) | st.sampled_from(["{question}", "{nope}", "{", "}{", "{0}", "{question!r:>10}"]),
    "few_shot": st.text(max_size=10) | st.integers(),
    "letters": st.text(max_size=5),
    "instruction": st.text(max_size=20) | json_values,
    "default_split": st.sampled_from(["test", "train", "x"]),
    "version": json_values,
}


@FUZZ
@given(st.data())
def test_yaml_task_never_crashes(data):
    import yaml

    from reflectevo.tasks.yaml_task import load_yaml_task

    spec = data.draw(st.fixed_dictionaries({}, optional=spec_values))
    data_file = data.draw(st.sampled_from(["d.jsonl", "d.csv", "d.json", "missing.jsonl", "d.txt"]))
    spec["data"] = data.draw(st.just(data_file) | json_values)
    rows = data.draw(st.lists(st.dictionaries(st.sampled_from(["question", "answer", "id", "options", "tests"]),
                                              json_values, max_size=5), max_size=4))
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        spec_path = folder / "task.yaml"
        if data.draw(st.booleans()):
            spec_path.write_text(yaml.safe_dump(spec, allow_unicode=True))
        else:  # or broken YAML
            spec_path.write_text(data.draw(st.text(max_size=80)), encoding="utf-8", errors="surrogatepass")
        if data_file.endswith(".csv"):
            lines = ["question,answer,id"] + [",".join(str(v).replace("\n", " ") for v in r.values()) for r in rows]
            (folder / data_file).write_text("\n".join(lines) + "\n")
        elif data_file.endswith(".json"):
            (folder / data_file).write_text(dump(rows))
        elif not data_file.startswith("missing"):
            (folder / data_file).write_text("".join(dump(r) + "\n" for r in rows))

        def load():
            task = load_yaml_task(spec_path)
            problems = task.load(task.default_split)
            if problems and task.answer_type != "code":  # code verdicts start sandboxes: fuzzed elsewhere
                task.verify(problems[0], data.draw(st.text(max_size=40)))
                task.prompt(problems[0])

        try:
            load()
        except ReflectEvoError as exc:
            assert "\n" not in str(exc), str(exc)
            assert str(folder) in str(exc), f"error names no file: {exc}"


# ------------------------------------------------------------------------------------------ config

CONFIG_KEYS = ["task", "out", "model", "limit", "samples", "temperature", "top_p", "seed", "instructions",
               "few_shot", "engine", "bogus", "max_tokens"]


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_config_yaml_random_text(content):
    from reflectevo.config import load_yaml

    with_file(content, ".yaml", lambda p: clean_error(lambda: load_yaml(p, "generate"), p))


@FUZZ
@given(st.dictionaries(st.sampled_from(CONFIG_KEYS) | st.text(max_size=6), json_values, max_size=6))
def test_config_build_names_the_setting(values):
    from reflectevo.config import EvaluateConfig, GenerateConfig, build

    for cls in (GenerateConfig, EvaluateConfig):
        try:
            build(cls, values, "run.yaml")
        except ReflectEvoError as exc:
            message = str(exc)
            assert message.startswith("run.yaml: setting ") and "\n" not in message, message


# -------------------------------------------------------------------------------------- extractors

FRAGMENTS = ["The answer is", "the answer is: ", "\\boxed{", "}", "{", "####", "(B)", "Answer: b", "B.", "1,000",
             "3/4", "1/0", "0/0", "$", "\\frac{1}{2}", "\\frac{", "%", "-", ".", "1e999999", "9" * 60, "∞", "\\sqrt{",
             "x = ", "\\text{", "```python\n", "```", "\n", "def f(x):\n    return x\n", "assert f(1) == 1",
             "\\begin{pmatrix}", "\\\\", "[1, 2)", "\\infty", "NaN", "inf", " ", "A", "c", "I choose D"]
answerish = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=6), max_size=12).map("".join) | st.text(max_size=80)


@FUZZ
@given(answerish, answerish)
def test_extractors_never_raise(response, gold):
    from reflectevo.verify.choice import extract_choice, judge_choice
    from reflectevo.verify.code import extract_code, function_names
    from reflectevo.verify.math import extract_math, judge_math, last_boxed
    from reflectevo.verify.number import extract_number, judge_number, parse_number
    from reflectevo.verify.text import extract_text_answer, judge_text

    extract_choice(response)
    judge_choice(response, gold[:1] or "A")
    extract_number(response)
    parse_number(response)
    judge_number(response, gold)
    last_boxed(response)
    extract_math(response)
    verdict = judge_math(response, gold)
    assert verdict.extraction_failed or verdict.extracted is not None
    extract_text_answer(response)
    judge_text(response, gold)
    extract_code(response, function_names([gold]))


# ------------------------------------------------------------------------------------ paper import

def paper_examples() -> list[dict]:
    """Three records of each example file, so every layout is mutated."""
    from reflectevo.formats.paper import read_json_objects

    return [obj for path in sorted(PAPER.glob("*.jsonl")) for _, obj in list(read_json_objects(path))[:3]]


EXAMPLES = paper_examples()


def test_paper_examples_cover_every_layout():
    from reflectevo.formats.paper import detect_layout

    assert len(EXAMPLES) == 12
    layouts = [detect_layout(obj) for obj in EXAMPLES]
    assert sorted(set(layouts)) == ["d_plus", "pairs", "raw"] and layouts.count("pairs") == 6  # D± and Dpref


@FUZZ
@given(st.data())
def test_paper_import_on_mutated_records(data):
    from reflectevo.formats.paper import import_episodes

    records = [data.draw(st.sampled_from(EXAMPLES)) for _ in range(data.draw(st.integers(1, 3)))]
    records = [mutate(data.draw, r) if data.draw(st.booleans()) else r for r in records]
    text = "".join(dump(r) + "\n" for r in records)
    task = data.draw(st.sampled_from([None, "logiqa", "math", "gsm8k", "bigbench", "nosuchtask"]))
    with_file(text, ".jsonl", lambda p: clean_error(lambda: import_episodes(p, task=task), p))

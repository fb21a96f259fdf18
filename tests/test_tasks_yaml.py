"""User-defined tasks from YAML, end to end: data formats, field mapping, answer types, errors."""

import json

import pytest

from reflectevo.errors import InputError
from reflectevo.tasks import get_task


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_worked_example_from_the_docs(tmp_path):
    # The example in docs/tasks.md: a CSV, a mapped question column, a template and few-shot file.
    write(tmp_path / "capitals.csv", "country,capital,alt\nFrance,Paris,\nJapan,Tokyo,Edo|Tōkyō\n")
    write(tmp_path / "shots.jsonl", json.dumps({"question": "What is the capital of Italy?",
                                                "answer": "Italy's capital is Rome.\nThe answer is: Rome"}) + "\n")
    spec = write(tmp_path / "capitals.yaml", """
name: capitals
description: Capital cities of the world
answer_type: text
data: capitals.csv
fields:
  answer: capital
  aliases: alt
template: "What is the capital of {country}?"
few_shot: shots.jsonl
""")
    task = get_task(str(spec), few_shot=1)
    problems = task.load("test")
    assert [p.id for p in problems] == ["capitals/test/2", "capitals/test/3"]
    assert problems[0].question == "What is the capital of France?"
    content = task.prompt(problems[0])[0]["content"]
    assert "capital of Italy" in content and "What is the capital of France?" in content
    assert task.verify(problems[0], "The answer is: Paris").correct
    assert task.verify(problems[1], "The answer is: Edo").correct
    assert not task.verify(problems[0], "The answer is: Lyon").correct
    assert task.verify(problems[0], "").extraction_failed


def test_choice_task_from_jsonl_with_option_list(tmp_path):
    rows = [{"q": "2+2?", "opts": ["3", "4", "5"], "label": 1},
            {"q": "Sky colour?", "opts": ["blue", "green"], "label": "blue"},
            {"q": "Pick C", "opts": ["x", "y", "z"], "label": "c"}]
    write(tmp_path / "mcq.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    spec = write(tmp_path / "mcq.yaml", "answer_type: choice\ndata: mcq.jsonl\n"
                                        "fields: {question: q, options: opts, answer: label}\n")
    task = get_task(str(spec))
    problems = task.load("test")
    assert [p.gold for p in problems] == ["B", "A", "C"]
    assert "A. 3\nB. 4\nC. 5" in problems[0].question
    assert task.verify(problems[0], "The answer is (B)").correct
    assert not task.verify(problems[1], "The answer is B").correct
    assert task.verify(problems[1], "The answer is D").extraction_failed  # only A-B offered


def test_number_task_from_json_and_parquet(tmp_path):
    rows = [{"question": "3 * 4?", "answer": 12}, {"question": "Half of 3?", "answer": 1.5}]
    write(tmp_path / "arith.json", json.dumps({"data": rows}))
    spec = write(tmp_path / "arith.yaml", "answer_type: number\nsplits: {test: arith.json, train: arith.parquet}\n")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "arith.parquet")
    task = get_task(str(spec))
    assert task.splits == ("test", "train") and task.name == "arith"
    for split in task.splits:
        problems = task.load(split)
        assert [p.gold for p in problems] == ["12", "1.5"]
        assert task.verify(problems[0], "The answer is: 12.0").correct
        assert task.verify(problems[1], "so 3/2 = 1.5").correct


def test_math_and_code_tasks(tmp_path):
    write(tmp_path / "m.jsonl", json.dumps({"question": "Half?", "answer": "\\frac{1}{2}"}) + "\n")
    math_task = get_task(str(write(tmp_path / "m.yaml", "answer_type: math\ndata: m.jsonl\n")))
    problem = math_task.load("test")[0]
    assert math_task.verify(problem, "\\boxed{0.5}").correct
    write(tmp_path / "c.jsonl", json.dumps({"question": "Add two numbers.", "tests": ["assert add(1, 2) == 3"]}) + "\n")
    code_task = get_task(str(write(tmp_path / "c.yaml", "answer_type: code\ndata: c.jsonl\n")))
    problem = code_task.load("test")[0]
    assert "assert add(1, 2) == 3" in code_task.prompt(problem)[0]["content"]
    assert code_task.verify(problem, "```python\ndef add(a, b):\n    return a + b\n```").correct
    verdict = code_task.verify(problem, "```python\ndef add(a, b):\n    return a - b\n```")
    assert not verdict.correct and "returned -1" in verdict.feedback


def test_data_path_override(tmp_path):
    write(tmp_path / "a.jsonl", json.dumps({"question": "q", "answer": "1"}) + "\n")
    write(tmp_path / "b.jsonl", json.dumps({"question": "q", "answer": "2"}) + "\n")
    spec = write(tmp_path / "t.yaml", "answer_type: number\ndata: a.jsonl\n")
    assert get_task(str(spec), data_path=tmp_path / "b.jsonl").load("test")[0].gold == "2"


@pytest.mark.parametrize("yaml_text,data,message", [
    ("answer_type: essay\ndata: d.jsonl\n", '{"question": "q", "answer": "a"}\n', "answer_type must be one of"),
    ("answer_type: text\n", '{"question": "q", "answer": "a"}\n', "give the data file"),
    ("answer_type: text\ndata: missing.jsonl\n", "", "does not exist"),
    ("answer_type: text\ndata: d.jsonl\nfields: {answer: target}\n", '{"question": "q", "answer": "a"}\n',
     "d.jsonl:1: missing field 'target'"),
    ("answer_type: text\ndata: d.jsonl\ntemplate: 'Q: {nope}'\n", '{"question": "q", "answer": "a"}\n',
     "placeholder 'nope'"),
    ("answer_type: text\ndata: d.jsonl\ncolour: red\n", '{"question": "q", "answer": "a"}\n', "unknown setting"),
    ("answer_type: [text\n", "", "malformed YAML"),
    ("answer_type: text\ndata: d.jsonl\n", '{"question": "q", "answer": "a"}\n{oops\n', "d.jsonl:2: malformed JSON"),
    ("answer_type: choice\ndata: d.jsonl\n", '{"question": "q", "answer": "Z"}\n', "not an option letter"),
])
def test_bad_input_gets_a_one_line_error(tmp_path, yaml_text, data, message):
    if data:
        write(tmp_path / "d.jsonl", data)
    spec = write(tmp_path / "t.yaml", yaml_text)
    with pytest.raises(InputError, match=message) as info:
        get_task(str(spec)).load("test")
    assert "\n" not in str(info.value)


def test_python_registration():
    from reflectevo.records import Problem, Verdict
    from reflectevo.tasks import Task, register_task

    @register_task("parity_test_task", "even or odd")
    class Parity(Task):
        name = "parity_test_task"
        answer_type = "text"

        def read(self, split):
            return [Problem(id=f"parity/{split}/{n}", task=self.name, split=split,
                            question=f"Is {n} even or odd?", gold="even" if n % 2 == 0 else "odd")
                    for n in range(4)]

        def verify(self, problem, response):
            ok = problem.gold in response.lower()
            return Verdict(correct=ok, extracted=response.strip(), feedback="correct" if ok else "incorrect")

    task = get_task("parity_test_task")
    assert task.verify(task.load("test")[1], "odd").correct


def test_a_data_file_replaces_exactly_one_split(tmp_path):
    """--data never serves one file as both train and test: it replaces the split named by data_split."""
    mine = tmp_path / "mine.jsonl"
    mine.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"#### {i}"}) + "\n" for i in range(3)))
    gsm = get_task("gsm8k", data_path=mine)
    assert [p.question for p in gsm.load("test")] == ["q0", "q1", "q2"]
    assert len(gsm.load("train")) > 6000  # train is still the bundled one
    as_train = get_task("gsm8k", data_path=mine, data_split="train")
    assert [p.question for p in as_train.load("train") + as_train.load("validation")] != []
    assert {p.question for p in as_train.load("train") + as_train.load("validation")} == {"q0", "q1", "q2"}
    assert len(as_train.load("test")) == 1319
    # A task whose only data is one file has exactly that split: no train split unless it is named so.
    spec = tmp_path / "one.yaml"
    spec.write_text("answer_type: number\ndata: mine.jsonl\nfields: {answer: answer}\n")
    assert get_task(str(spec)).split_names == ("test",)
    assert get_task(str(spec), data_path=mine, data_split="train").split_names == ("test", "train", "validation")


def test_a_template_that_shows_the_answer_is_refused(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"country": "France", "capital": "Paris"}) + "\n")
    spec = tmp_path / "leaky.yaml"
    spec.write_text("answer_type: text\ndata: d.jsonl\nfields: {answer: capital}\n"
                    "template: 'The capital of {country} is {capital}. What is it?'\n")
    with pytest.raises(InputError, match=r"leaky.yaml: template shows the answer column \{capital\}"):
        get_task(str(spec))

"""The ReflectEvo paper's own file layouts: read them, import them as episodes, export ours to them.

Layouts (docs/curation.md has the field mapping; tests/data holds examples):

    raw     the generation output: {id, question, answer, output: [trial dicts]}, written as
            pretty-printed JSON objects one after another (not JSONL, despite the .jsonl name);
            output[0] is trial 1, every later trial-2 dict carries one reflection in `reflections`
    d_plus  D+:  {id, question, answer, first_trial_reasoning/answer, second_trial_reasoning/answer,
                  reflections (a string), reason_prompt [trial-1 prompt, trial-2 prompt], reflect_prompt}
    d_pm    D±:  {..., second_trial_reasoning/answer_chosen, reflection_chosen,
    d_pref  Dpref  second_trial_reasoning/answer_rejected, reflection_rejected, reason_prompt, reflection_prompt}
                 (same fields; in Dpref the rejected reflection also led to a correct answer)

The paper's reasoning texts end with "Observation: Answer is CORRECT/INCORRECT", the verifier's verdict
pasted into the model's text; import takes the verdict from it and strips it from the response.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from pydantic import ValidationError

from reflectevo.errors import InputError, ReflectEvoError
from reflectevo.prompts import correction_prompt, test_reflection_prompt
from reflectevo.records import (Attempt, Episode, Reflection, Sampling, Verdict, episodes_to_jsonl, read_episodes,
                                read_jsonl)
from reflectevo.runs import RunDir, write_atomic
from reflectevo.tasks import get_task

LAYOUTS = ("raw", "d_plus", "d_pm", "d_pref")

# The paper's prompts end with "Action: Finish[X]"; imported correction prompts repeat this format so
# that prompts and imported responses agree.
PAPER_ANSWER_FORMAT = 'Think step by step ("Thought: ..."), then give your answer as "Action: Finish[X]".'
PAPER_INSTRUCTION_ID = "paper"
_OBSERVATION = re.compile(r"\s*Observation:\s*Answer is\s*(CORRECT|INCORRECT)\s*$", re.IGNORECASE)


# ------------------------------------------------------------------------------------------ reading

def read_json_objects(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for a file of JSON objects: JSONL or pretty-printed objects concatenated."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    decoder = json.JSONDecoder()
    pos, line = 0, 1
    while True:
        start = pos
        while pos < len(text) and text[pos].isspace():
            pos += 1
        line += text.count("\n", start, pos)
        if pos >= len(text):
            return
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise InputError(f"{path}:{line}: expected a JSON object, got {type(obj).__name__}")
        yield line, obj
        line += text.count("\n", pos, end)
        pos = end


def detect_layout(obj: dict) -> str | None:
    """raw, d_plus or "pairs" (D± and Dpref share their fields) for one record; None if none fits."""
    if isinstance(obj.get("output"), list):
        return "raw"
    if "reflection_chosen" in obj and "reflection_rejected" in obj:
        return "pairs"
    if "second_trial_reasoning" in obj and "reflections" in obj:
        return "d_plus"
    return None


def _need(obj: dict, key: str, path: Path, line: int, kind: type | tuple = str):
    if key not in obj:
        raise InputError(f"{path}:{line}: missing field {key!r}")
    if not isinstance(obj[key], kind):
        raise InputError(f"{path}:{line}: field {key!r} should be {getattr(kind, '__name__', kind)}, "
                         f"got {type(obj[key]).__name__}")
    return obj[key]


@dataclass
class PaperTrial:
    """One entry of a raw record's `output`: trial 1, or a trial 2 with the reflection before it."""

    trial: int
    answer: str
    correct: bool
    reasoning: str  # as stored, with the paper's trailing "Observation: ..." line
    reflection: str | None

    @property
    def response(self) -> str:
        return strip_observation(self.reasoning)


@dataclass
class PaperRawRecord:
    """A problem of the paper's raw generation file. `line` is where its object starts."""

    id: Any
    question: str
    answer: str
    trials: list[PaperTrial]
    line: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def trial1(self) -> PaperTrial:
        return self.trials[0]

    @property
    def second_trials(self) -> list[PaperTrial]:
        return [t for t in self.trials if t.trial == 2]


def read_paper_raw(path: str | Path) -> list[PaperRawRecord]:
    """The paper's raw file (example_Reflection_raw.jsonl layout), validated, one record per problem.

    This is what the paper's eval/count.py reads: trial 1 is `trial1`, each of `second_trials` follows
    one reflection; `correct` is the paper's `is_correct`, `answer` its `generated_answer`.
    """
    path = Path(path)
    records = [raw_record(path, line, obj) for line, obj in read_json_objects(path)]
    if not records:
        raise InputError(f"{path}: no records")
    return records


def raw_record(path: Path, line: int, obj: dict) -> PaperRawRecord:
    if detect_layout(obj) != "raw":
        raise InputError(f"{path}:{line}: not a raw ReflectEvo record (expected an 'output' list of trials)")
    question = _need(obj, "question", path, line)
    answer = str(_need(obj, "answer", path, line, (str, int, float)))
    trials = []
    for k, t in enumerate(obj["output"]):
        # Free-text files of the paper keep the text in `scratchpad` and may score by F1 alone.
        if not isinstance(t, dict) or not ("reasoning" in t or "scratchpad" in t):
            raise InputError(f"{path}:{line}: output[{k}] needs a 'reasoning' (or 'scratchpad') field")
        reflections = t.get("reflections") or []
        if isinstance(reflections, str):
            reflections = [reflections]
        trials.append(PaperTrial(trial=int(t.get("trial", 1 if k == 0 else 2)),
                                 answer=str(t.get("generated_answer", "")), correct=t.get("is_correct") is True,
                                 reasoning=str(t.get("reasoning", t.get("scratchpad", ""))),
                                 reflection="\n".join(reflections) if reflections else None))
    if not trials or trials[0].trial != 1:
        raise InputError(f"{path}:{line}: the first entry of 'output' must be trial 1")
    extra = {k: v for k, v in obj.items() if k not in ("id", "question", "answer", "output")}
    return PaperRawRecord(id=obj.get("id", line), question=question, answer=answer, trials=trials, line=line,
                          extra=extra)


def strip_observation(reasoning: str) -> str:
    return _OBSERVATION.sub("", reasoning).strip()


def observed_verdict(reasoning: str) -> bool | None:
    match = _OBSERVATION.search(reasoning)
    return None if match is None else match.group(1).upper() == "CORRECT"


# ------------------------------------------------------------------------------------------ import

class _Importer:
    """Builds episodes from paper rows; rows about the same failed trial 1 merge into one episode."""

    def __init__(self, path: Path, task: str, split: str):
        self.path, self.task, self.split = path, task, split
        self.model = f"paper:{path.name}"
        self.choice = _is_choice_task(task)
        self.episodes: dict[tuple[str, str], Episode] = {}

    def gold(self, answer: Any) -> str:
        gold = str(answer).strip()
        return gold.upper() if self.choice and len(gold) == 1 else gold

    def verdict(self, correct: bool, extracted: str) -> Verdict:
        return Verdict(correct=correct, extracted=extracted or None, extraction_failed=not extracted,
                       feedback="correct" if correct else "incorrect")

    def attempt(self, messages, reasoning: str, answer: str, correct: bool) -> Attempt:
        return Attempt(messages=messages, response=strip_observation(reasoning), model=self.model,
                       sampling=Sampling(), seed=0, verdict=self.verdict(correct, str(answer or "")))

    def episode(self, line: int, rid: Any, question: str, answer: Any, reasoning: str, t1_answer: str,
                t1_prompt: str | None) -> Episode:
        key = (question, strip_observation(reasoning))
        if key not in self.episodes:
            gold = self.gold(answer)
            messages = [{"role": "user", "content": t1_prompt if t1_prompt else
                         f"Question: {question.strip()}\n\n{PAPER_ANSWER_FORMAT}"}]
            correct = observed_verdict(reasoning)
            if correct is None:
                correct = _same_answer(t1_answer, gold)
            trial1 = self.attempt(messages, reasoning, t1_answer, correct)
            self.episodes[key] = Episode(
                id=f"{self.task}/{self.split}/{rid}", task=self.task, split=self.split, question=question,
                gold=gold, trial1=trial1,
                meta={"source": {"file": str(self.path), "line": line}, "answer_format": PAPER_ANSWER_FORMAT})
        return self.episodes[key]

    def reflection(self, ep: Episode, text: str, reasoning: str, answer: str,
                   reflect_prompt: str | None) -> Reflection:
        """The episode's reflection with this text and trial 2, added if new."""
        response = strip_observation(reasoning)
        for r in ep.reflections:
            if r.text == text and r.trial2 and r.trial2.response == response:
                return r
        t1 = ep.trial1
        messages = ([{"role": "user", "content": reflect_prompt}] if reflect_prompt
                    else test_reflection_prompt(t1.messages, t1.response, t1.verdict.feedback))
        correct = observed_verdict(reasoning)
        if correct is None:
            correct = _same_answer(answer, ep.gold)
        # The paper's stored trial-2 prompt was rebuilt after generation (it holds the model's own answer
        # and "Answer is CORRECT"); ours is the correction prompt the record would have needed.
        trial2 = self.attempt(correction_prompt(t1.messages, t1.response, t1.verdict.feedback, text,
                                                PAPER_ANSWER_FORMAT), reasoning, answer, correct)
        r = Reflection(index=len(ep.reflections), instruction_id=PAPER_INSTRUCTION_ID, messages=messages,
                       text=text, model=self.model, sampling=Sampling(), seed=0, trial2=trial2)
        ep.reflections.append(r)
        return r


def _is_choice_task(name: str) -> bool:
    try:
        return get_task(name).answer_type == "choice"
    except ReflectEvoError:
        return False


def _same_answer(answer: Any, gold: str) -> bool:
    return str(answer).strip().lower() == gold.strip().lower()


def import_episodes(path: str | Path, task: str | None = None, split: str = "paper") -> list[Episode]:
    """Episodes from any paper layout (detected per record). Dpref orders go to meta["preferences"]."""
    path = Path(path)
    imp = _Importer(path, task or "paper", split)
    count = 0
    for line, obj in read_json_objects(path):
        count += 1
        layout = detect_layout(obj)
        if layout is None:
            raise InputError(f"{path}:{line}: not a ReflectEvo paper record (no 'output', "
                             f"'second_trial_reasoning' or 'reflection_chosen' field)")
        importer = _import_raw if layout == "raw" else _import_d_plus if layout == "d_plus" else _import_pair
        try:
            importer(imp, path, line, obj)
        except ValidationError as exc:  # an optional field of the wrong type (e.g. a prompt that is not text)
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InputError(f"{path}:{line}: cannot import this {layout} record: {where}: {first['msg']}") from exc
    if not count:
        raise InputError(f"{path}: no records")
    return list(imp.episodes.values())


def _import_raw(imp: _Importer, path: Path, line: int, obj: dict) -> None:
    record = raw_record(path, line, obj)
    t1 = record.trial1
    ep = imp.episode(line, record.id, record.question, record.answer, t1.reasoning, t1.answer, None)
    ep.trial1.verdict = imp.verdict(t1.correct, t1.answer)
    for t in record.second_trials:
        if t.reflection:
            r = imp.reflection(ep, t.reflection, t.reasoning, t.answer, None)
            r.trial2.verdict = imp.verdict(t.correct, t.answer)


def _import_d_plus(imp: _Importer, path: Path, line: int, obj: dict) -> None:
    for key in ("question", "first_trial_reasoning", "second_trial_reasoning", "reflections"):
        _need(obj, key, path, line)
    _need(obj, "answer", path, line, (str, int, float))
    prompts = obj.get("reason_prompt")
    t1_prompt = prompts[0] if isinstance(prompts, list) and prompts else prompts if isinstance(prompts, str) else None
    ep = imp.episode(line, obj.get("id", line), obj["question"], obj["answer"], obj["first_trial_reasoning"],
                     obj.get("first_trial_answer", ""), t1_prompt)
    imp.reflection(ep, obj["reflections"], obj["second_trial_reasoning"], obj.get("second_trial_answer", ""),
                   obj.get("reflect_prompt"))


def _import_pair(imp: _Importer, path: Path, line: int, obj: dict) -> None:
    for key in ("question", "first_trial_reasoning", "reflection_chosen", "reflection_rejected",
                "second_trial_reasoning_chosen", "second_trial_reasoning_rejected"):
        _need(obj, key, path, line)
    _need(obj, "answer", path, line, (str, int, float))
    prompt = obj.get("reason_prompt")
    ep = imp.episode(line, obj.get("id", line), obj["question"], obj["answer"], obj["first_trial_reasoning"],
                     obj.get("first_trial_answer", ""), prompt if isinstance(prompt, str) else None)
    chosen = imp.reflection(ep, obj["reflection_chosen"], obj["second_trial_reasoning_chosen"],
                            obj.get("second_trial_answer_chosen", ""), obj.get("reflection_prompt"))
    rejected = imp.reflection(ep, obj["reflection_rejected"], obj["second_trial_reasoning_rejected"],
                              obj.get("second_trial_answer_rejected", ""), obj.get("reflection_prompt"))
    if chosen.trial2.verdict.correct and rejected.trial2.verdict.correct:  # a Dpref row: keep its order
        prefs = ep.meta.setdefault("preferences", [])
        if [chosen.index, rejected.index] not in prefs:
            prefs.append([chosen.index, rejected.index])


# ------------------------------------------------------------------------------------------ export

def _text(messages: list[dict[str, str]]) -> str:
    """A message list as the single prompt string the paper's layouts hold."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


def _answer(attempt: Attempt) -> str:
    return attempt.verdict.extracted or ""


def _trial_dict(attempt: Attempt, trial: int, reflection: str | None) -> dict:
    out = {"generated_answer": _answer(attempt), "reflections": [reflection] if reflection is not None else [],
           "reasoning": attempt.response, "is_correct": attempt.verdict.correct, "trial": trial,
           "reasoning_source": attempt.model, "reflection_source": "N/A"}
    if trial == 2:
        out["test_list"] = ""
    return out


def export_raw(episodes: list[Episode]) -> str:
    """The raw layout: pretty-printed objects one after another, as the paper writes it."""
    objects = []
    for ep in episodes:
        output = [_trial_dict(ep.trial1, 1, None)]
        for r in ep.reflections:
            if r.trial2 is not None:
                t2 = _trial_dict(r.trial2, 2, r.text)
                t2["reflection_source"] = r.model
                output.append(t2)
        objects.append({"question": ep.question, "answer": ep.gold, "id": ep.id, "output": output})
    return "".join(json.dumps(o, indent=4, ensure_ascii=False) + "\n" for o in objects)


def d_plus_row(ep: Episode, r: Reflection) -> dict:
    t1, t2 = ep.trial1, r.trial2
    return {"id": ep.id, "question": ep.question, "answer": ep.gold,
            "first_trial_reasoning": t1.response, "first_trial_answer": _answer(t1),
            "second_trial_reasoning": t2.response, "second_trial_answer": _answer(t2),
            "reflections": r.text, "reason_prompt": [_text(t1.messages), _text(t2.messages)],
            "reflect_prompt": _text(r.messages)}


def pair_row(ep: Episode, chosen: Reflection, rejected: Reflection) -> dict:
    t1 = ep.trial1
    return {"id": ep.id, "question": ep.question, "answer": ep.gold,
            "first_trial_reasoning": t1.response, "first_trial_answer": _answer(t1),
            "second_trial_reasoning_chosen": chosen.trial2.response,
            "second_trial_answer_chosen": _answer(chosen.trial2), "reflection_chosen": chosen.text,
            "second_trial_reasoning_rejected": rejected.trial2.response,
            "second_trial_answer_rejected": _answer(rejected.trial2), "reflection_rejected": rejected.text,
            "reason_prompt": _text(t1.messages), "reflection_prompt": _text(chosen.messages)}


def export_curated(episodes: list[Episode], curated_dir: Path) -> dict[str, list[dict]]:
    """D+, D± and Dpref in the paper's layouts, from the rows of a curated folder (train + validation).

    Curated rows name their episode and reflection(s), so the paper rows carry the full records
    (second-trial reasoning and answers) that training rows leave out.
    """

    by_id = {ep.id: ep for ep in episodes}
    sources = {"d_plus": "sft_correct", "d_pm": "dpo_contrastive", "d_pref": "dpo_preference"}
    out: dict[str, list[dict]] = {}
    for layout, name in sources.items():
        rows = []
        for split in ("train", "validation"):
            path = curated_dir / name / f"{split}.jsonl"
            if not path.is_file():
                continue
            for line, row in read_jsonl(path):
                ep = by_id.get(row.get("episode_id"))
                if ep is None:
                    raise InputError(f"{path}:{line}: episode {row.get('episode_id')!r} is not in the episodes file")
                refl = {r.index: r for r in ep.reflections}
                try:
                    if layout == "d_plus":
                        rows.append(d_plus_row(ep, refl[row["reflection_index"]]))
                    else:
                        rows.append(pair_row(ep, refl[row["chosen_reflection_index"]],
                                             refl[row["rejected_reflection_index"]]))
                except KeyError as exc:
                    raise InputError(f"{path}:{line}: reflection {exc} not found in episode {ep.id}") from exc
        if rows:
            out[layout] = rows
    return out


def to_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


# ------------------------------------------------------------------------------- whole-file commands

def import_to_run(path: str | Path, out: str | Path, task: str | None = None, split: str = "paper") -> Path:
    """`reflectevo import`: a paper file -> OUT/episodes.jsonl (curate, stats and train read it)."""

    episodes = import_episodes(path, task=task, split=split)  # bad input fails before anything is written
    with RunDir(out) as run:
        target = run.file("episodes.jsonl")
        write_atomic(target, episodes_to_jsonl(episodes))
        run.write_manifest("import", {"source": str(path), "task": task or "paper", "split": split},
                           episodes=len(episodes), reflections=sum(len(e.reflections) for e in episodes))
    return target


EXPORT_FILES = {"raw": "reflection_raw.jsonl", "d_plus": "d_plus.jsonl", "d_pm": "d_pm.jsonl",
                "d_pref": "d_pref.jsonl"}


def export_run(source: str | Path, out: str | Path, curated: str | Path | None = None) -> dict[str, Path]:
    """`reflectevo export`: a run's episodes (raw) and curated sets (D+, D±, Dpref) in the paper's layouts."""

    source = Path(source)
    episodes_file = source / "episodes.jsonl" if source.is_dir() else source
    if not episodes_file.is_file():
        raise InputError(f"{source}: no episodes.jsonl (give a run directory or an episodes file)")
    episodes = read_episodes(episodes_file)
    if not episodes:
        raise InputError(f"{episodes_file}: no episodes to export")
    curated_dir = Path(curated) if curated else episodes_file.parent / "curated"
    if curated and not curated_dir.is_dir():
        raise InputError(f"{curated_dir}: no such curated directory")
    out = Path(out)
    layouts = {"raw": export_raw(episodes)}
    if curated_dir.is_dir():
        layouts.update({k: to_jsonl(v) for k, v in export_curated(episodes, curated_dir).items()})
    written = {}
    for layout, text in layouts.items():
        write_atomic(out / EXPORT_FILES[layout], text)
        written[layout] = out / EXPORT_FILES[layout]
    return written

"""Setting V's rewards: the task's own verifier on the corrected answer, plus two optional shaped terms.

TRL's GRPOTrainer calls each reward function with the batch's prompts, completions, completion token ids
and every dataset column (here `problem`, a JSON-encoded `Problem`, and `task`), and logs each function
as `rewards/<name>/mean` and `/std` beside the weighted total `reward`, `reward_std`.

- `correct` (weight 1): 1.0 when the task's verifier judges the reply right, else 0.0. The verdict is
  `task.judge(problem, reply, finish_reason)`, exactly as evaluation judges a one-stage reply: a reply
  cut off by max_completion_length counts only a complete answer stated before the cut. The whole reply
  is judged, as evaluation does, so the answer it ends with is the one that counts.
- `format` (weight `format_reward`, default 0): 1.0 when the reply ended by itself, its final paragraph
  alone gives an answer the task can read (a code block for code tasks), and a reflection precedes it
  that does not repeat the question. (A first version asked only for some text before a readable
  answer; in a 30-step CPU run the 135M policy learned to echo the prompt, "Question: Calculate 88 + 94.
  \n\nReply with only the number", whose last number the verifier read: docs/training.md.)
- `answer_stated` (weight `-answer_penalty`, default 0): 1.0 when the reflection part (everything before
  the final paragraph) already states an answer in the task's answer format ("The answer is 42"),
  which the reflection prompts ask the model not to do.
Shaped terms at weight 0 are still computed and logged, so their rates can be watched without shaping.

Code tasks run each verdict in the sandbox; their verdicts are computed concurrently (`reward_workers`
threads). Each (problem, reply) is judged once per batch, whichever function asks first.
"""

from __future__ import annotations

import json
from typing import Sequence

from reflectevo.records import Problem, Verdict
from reflectevo.verify.truncation import states_an_answer


def split_final(reply: str) -> tuple[str, str]:
    """(reflection part, final paragraph): the reply split at its last blank line."""
    text = reply.strip()
    head, sep, tail = text.rpartition("\n\n")
    return (head.strip(), tail.strip()) if sep else ("", text)


class Judge:
    """Verdicts of (problem, reply, finish reason), computed once per batch by the task's verifier."""

    def __init__(self, tasks: dict, end_ids: Sequence[int], workers: int = 4):
        self.tasks = tasks  # task name (as in the rows) -> Task
        self.end_ids = set(end_ids)
        self.workers = workers
        self._problems: dict[str, Problem] = {}
        self._last: tuple[tuple, list[Verdict]] | None = None

    def problem(self, encoded: str) -> Problem:
        if encoded not in self._problems:
            self._problems[encoded] = Problem.model_validate(json.loads(encoded))
        return self._problems[encoded]

    def finish_reason(self, ids: Sequence[int]) -> str:
        """TRL keeps the end-of-turn token in a finished completion's ids; a cut one has none."""
        return "stop" if ids and ids[-1] in self.end_ids else "length"

    def verdicts(self, completions, completion_ids, problem, task) -> list[Verdict]:
        texts = [reply_text(c) for c in completions]
        reasons = [self.finish_reason(ids) for ids in completion_ids]
        key = (tuple(texts), tuple(reasons), tuple(problem), tuple(task))
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        verdicts: list[Verdict | None] = [None] * len(texts)
        for name in dict.fromkeys(task):  # one verify_many per task, in batch order
            judge = self.tasks[name]
            rows = [i for i, t in enumerate(task) if t == name]
            # Code verdicts wait on sandbox processes; the others are quick (and math-verify's timeouts need
            # the main thread).
            workers = self.workers if judge.answer_type == "code" else 1
            found = judge.verify_many([self.problem(problem[i]) for i in rows], [texts[i] for i in rows],
                                      workers=workers, finish_reasons=[reasons[i] for i in rows])
            for i, verdict in zip(rows, found):
                verdicts[i] = verdict
        self._last = (key, verdicts)
        return verdicts

    def well_formed(self, name: str, encoded: str, reply: str) -> bool:
        """A reflection that is not the question, then a final paragraph that alone holds a readable answer."""
        reflection, final = split_final(reply)
        problem, task = self.problem(encoded), self.tasks[name]
        if not reflection or _norm(problem.question) in _norm(reflection):
            return False
        if task.answer_type == "code":  # running the code is the verifier's job; here: a closed code block
            return states_an_answer(final, "code")
        return not task.verify(problem, final).extraction_failed


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def reply_text(completion) -> str:
    """A conversational completion is [{"role": "assistant", "content": ...}]; a plain one is a string."""
    return completion[0]["content"] if isinstance(completion, list) else completion


def reward_functions(judge: Judge) -> list:
    """[correct, format, answer_stated] as TRL reward functions (their __name__ names the logged metric)."""

    def correct(prompts, completions, completion_ids, problem, task, **_) -> list[float]:
        return [float(v.correct) for v in judge.verdicts(completions, completion_ids, problem, task)]

    def format(prompts, completions, completion_ids, problem, task, **_) -> list[float]:  # noqa: A001
        return [float(judge.finish_reason(ids) == "stop" and judge.well_formed(name, p, reply_text(c)))
                for c, ids, p, name in zip(completions, completion_ids, problem, task)]

    def answer_stated(prompts, completions, completion_ids, problem, task, **_) -> list[float]:
        out = []
        for c, p, name in zip(completions, problem, task):
            reflection, _ = split_final(reply_text(c))
            kind = judge.tasks[name].answer_type
            out.append(float(states_an_answer(reflection, kind, judge.problem(p).meta.get("letters", "ABCD"))))
        return out

    return [correct, format, answer_stated]

"""A third-party task for reflectevo, found through the `reflectevo.tasks` entry-point group (the plugin
test in tests/test_registry.py puts this folder on sys.path; `pip install` of a real plugin writes the same
dist-info metadata)."""

from reflectevo.records import Problem, Verdict
from reflectevo.tasks.base import Task
from reflectevo.tasks.registry import register_task
from reflectevo.verify.number import judge_number


@register_task("primes", "the n-th prime number (a plugin task)")
class Primes(Task):
    answer_type = "number"
    splits = ("train", "test")
    instruction = "Answer with the prime number asked for."
    answer_format = 'End your response with "The answer is: N".'

    def read(self, split: str) -> list[Problem]:
        primes = [n for n in range(2, 2000) if all(n % d for d in range(2, int(n ** 0.5) + 1))]
        offset = 0 if split == "train" else 1  # even positions train, odd ones test
        return [Problem(id=f"primes/{split}/{i}", task="primes", split=split,
                        question=f"What is prime number {i + 1}?", gold=str(p))
                for i, p in enumerate(primes) if i % 2 == offset]

    def verify(self, problem: Problem, response: str) -> Verdict:
        return judge_number(response, problem.gold)

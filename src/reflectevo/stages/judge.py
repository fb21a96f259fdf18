"""Ordering Dpref pairs (docs/curation.md): which of two reflections, both followed by a correct trial 2, is better.

With a judge model (any preset, folder, .gguf or server, through any backend and the generation
cache) each pair is judged twice, once in each order, against RUBRIC. A pair is ordered by the judge
only when both readings agree (this cancels the position bias small judges have); otherwise, or with
no judge configured, the judge-free fallback decides:

    shorter is better: the reflection with fewer characters is chosen; equal lengths -> the pair is
    dropped (no preference). Both reflections already led to a correct answer, so the shorter one
    carried the same corrective signal in fewer words; the paper's reflection prompt asks for at most
    100 words for the same reason.

Pairs imported from the paper's Dpref files keep the paper's order (method "imported").
Every verdict is kept beside its pair (the `judge` column of dpo_preference): method, judge model,
rubric version, the votes and the judge's raw replies.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from reflectevo.backends import SamplingParams, load_backend
from reflectevo.backends.cache import GenerationCache, Generator
from reflectevo.progress import progress_bar
from reflectevo.records import Episode, Reflection


class JudgeOptions(BaseModel):
    """The judge's settings (a part of CurateConfig)."""

    judge: str | None = Field(None, description="model that orders Dpref pairs (default: judge-free fallback)")
    judge_engine: str = Field("auto", description="backend engine of the judge")
    judge_max_tokens: int = Field(256, ge=1, description="max new tokens per judge verdict")
    judge_batch_size: int = Field(8, ge=1, description="judge requests per engine call")
    cache: str | None = Field(None, description="SQLite generation cache of the judge")
    seed: int = Field(0, description="seed of the judge (curate: also of the validation split and the caps)")

RUBRIC_VERSION = "reflectevo.judge/1"

RUBRIC = """\
A good reflection on a failed solution:
1. Diagnosis: names the specific step or assumption that went wrong, not a generic "be more careful".
2. Correctness: what it says about the problem and the failed solution is true.
3. Actionability: gives a concrete plan or correction the solver can follow in a second attempt.
4. No answer leak: it does not state the final answer; it explains how to reach it.
5. Concision: it says this without padding or repetition."""

JUDGE_PROMPT = """\
You are judging two reflections written after a failed attempt at a problem. Both later led to a \
correct answer; decide which reflection is more useful.

Problem:
{question}

Failed solution:
{failed}

Reflection A:
{a}

Reflection B:
{b}

Rubric:
{rubric}

Compare A and B on the rubric in one or two sentences, then end with exactly one line: \
"Better: A" or "Better: B"."""

_VOTE = re.compile(r"better\s*(?:reflection)?\s*(?:is|:)?\s*\**\s*(?:reflection\s*)?\(?([AB])\b", re.IGNORECASE)

Pair = tuple[Episode, Reflection, Reflection]


def judge_messages(ep: Episode, a: Reflection, b: Reflection) -> list[dict[str, str]]:
    return [{"role": "user", "content": JUDGE_PROMPT.format(
        question=ep.question.strip(), failed=ep.trial1.response.strip(), a=a.text.strip(), b=b.text.strip(),
        rubric=RUBRIC)}]


def parse_vote(text: str) -> str | None:
    """'A' or 'B' from the judge's reply (its last "Better: X"), None if it gives no verdict."""
    votes = _VOTE.findall(text)
    if votes:
        return votes[-1].upper()
    bare = re.findall(r"^\s*\**\s*([AB])\s*\**\s*\.?\s*$", text, flags=re.MULTILINE)
    return bare[-1].upper() if bare else None


def shorter_is_better(first: Reflection, second: Reflection) -> tuple[Reflection, Reflection] | None:
    """The judge-free fallback: (chosen, rejected) by length, None on a tie."""
    a, b = len(first.text.strip()), len(second.text.strip())
    if a == b:
        return None
    return (first, second) if a < b else (second, first)


def _fallback(ep: Episode, x: Reflection, y: Reflection, verdict: dict):
    order = shorter_is_better(x, y)
    if order is None:
        return None
    verdict["method"] = "fallback:shorter"
    return ep, order[0], order[1], verdict


def _imported(ep: Episode, x: Reflection, y: Reflection):
    """The paper's own order for pairs imported from a Dpref file (kept in episode meta)."""
    for chosen, rejected in ep.meta.get("preferences", []):
        if (chosen, rejected) == (x.index, y.index):
            return ep, x, y, {"method": "imported", "source": ep.meta.get("source")}
        if (chosen, rejected) == (y.index, x.index):
            return ep, y, x, {"method": "imported", "source": ep.meta.get("source")}
    return None


def order_preferences(pairs: list[Pair], cfg: JudgeOptions, judge=None) -> tuple[list[tuple], dict]:
    """[(episode, chosen, rejected, verdict)] for the pairs that got an order, and a summary.

    `judge` is an already open Generator to use instead of loading `cfg.judge`.
    """
    ordered, pending = [], []
    for pair in pairs:
        found = _imported(*pair)
        if found:
            ordered.append(found)
        else:
            pending.append(pair)
    use_judge = judge is not None or cfg.judge
    judged, judge_id = [None] * len(pending), cfg.judge
    if use_judge and pending:
        judged, judge_id = _judge(pending, cfg, judge)
    for (ep, x, y), votes in zip(pending, judged):
        verdict = {"method": None, "rubric": RUBRIC_VERSION, "judge_model": None}
        if votes is not None:
            (vote_xy, text_xy), (vote_yx, text_yx) = votes
            verdict.update(judge_model=judge_id, votes=[vote_xy, vote_yx], replies=[text_xy, text_yx])
            # First reading shows x as A; the second shows y as A. Agreement means the same reflection won.
            if vote_xy and vote_yx and (vote_xy == "A") == (vote_yx == "B"):
                chosen, rejected = (x, y) if vote_xy == "A" else (y, x)
                verdict["method"] = "judge"
                ordered.append((ep, chosen, rejected, verdict))
                continue
            verdict["judge_disagreed"] = True
        result = _fallback(ep, x, y, verdict)
        if result:
            ordered.append(result)
    methods: dict[str, int] = {}
    for *_, verdict in ordered:
        methods[verdict["method"]] = methods.get(verdict["method"], 0) + 1
    summary = {"pairs": len(pairs), "ordered": len(ordered), "dropped_ties": len(pairs) - len(ordered),
               "methods": methods, "judge": judge_id if use_judge else None, "rubric": RUBRIC_VERSION}
    return ordered, summary


def _judge(pairs: list[Pair], cfg: JudgeOptions, judge=None) -> tuple[list, str]:
    """Both readings of every pair in one batched, cached call; (votes per pair, judge model id)."""

    prompts = []
    for ep, x, y in pairs:
        prompts += [judge_messages(ep, x, y), judge_messages(ep, y, x)]
    params = SamplingParams(temperature=0.0, max_tokens=cfg.judge_max_tokens, seed=cfg.seed)
    backend = cache = None
    if judge is None:
        backend = load_backend(cfg.judge, cfg.judge_engine, batch_size=cfg.judge_batch_size)
        cache = GenerationCache(cfg.cache)
        judge = Generator(backend, cache)
    try:
        with progress_bar("judge Dpref", len(prompts), "prompts") as advance:
            outputs = judge.generate(prompts, params, on_progress=advance)
    finally:
        if cache:
            cache.close()
        if backend:
            backend.close()
    replies = [(parse_vote(c[0].text), c[0].text) for c in outputs]
    return [(replies[2 * i], replies[2 * i + 1]) for i in range(len(pairs))], judge.model_id

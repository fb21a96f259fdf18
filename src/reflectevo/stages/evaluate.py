"""Evaluation stage (docs/evaluation.md): Acc@t1, then Acc@t2 after one reflection and one correction.

Two protocols share one run:
- oracle-gated (the paper's): only problems whose trial 1 the gold verifier marks wrong are reflected on;
  the reflection prompt carries the verifier's feedback. Beside it, the same problems get a retry
  without reflection (the failed trial 1 and the feedback, then "solve it again"), written by the model
  that writes trial 2: reflection value = Acc@t2 - Acc@t2 of the retry, so a second try alone is not
  credited to reflection;
- oracle-free: the model first judges its own answer (self-check); where it says "revise" (or its
  verdict cannot be read) it reflects and corrects with no gold feedback, otherwise trial 1 stands.

Roles: the generator writes trial 1; the reflector writes the reflection; in the two-stage setting the
corrector (default: the generator) writes trial 2 from (question, failed trial 1, reflection); in the
one-stage setting the reflector's single reply holds the reflection and the corrected solution.
Each phase sends all its prompts at once through the generation cache, so identical prompts of the two
protocols (a wrong trial 1 the model also flags) are generated once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from reflectevo.backends import Backend, Completion, SamplingParams, is_local, load_backend, resolve
from reflectevo.backends.cache import GenerationCache, Generator
from reflectevo.config import EvaluateConfig
from reflectevo.errors import BackendError, InputError, ReflectEvoError
from reflectevo.progress import console, progress_bar
from reflectevo.prompts import (correction_prompt, reflect_and_correct_prompt, retry_prompt, self_check_prompt,
                                test_reflection_prompt)
from reflectevo.records import (RESULTS_SCHEMA, Attempt, Episode, EvalSample, Messages, Problem, Reflection,
                                SelfCheck)
from reflectevo.report.metrics import Outcome, compute_metrics, summary_row
from reflectevo.runs import RunDir, manifest, write_atomic, write_json
from reflectevo.tasks import Task, get_task

# The same phase offsets as the generation stage (so identical trial-1 prompts hit the cache), plus one.
TRIAL1_SEED, REFLECT_SEED, TRIAL2_SEED, SELF_CHECK_SEED = 0, 1, 2, 3
TEST_TIME_INSTRUCTION_ID = "test-time"


def outcome(sample: EvalSample) -> Outcome:
    ep = sample.episode
    t1 = ep.trial1.verdict
    gated = ep.reflections[0].trial2.verdict if ep.reflections and ep.reflections[0].trial2 else None
    free = sample.oracle_free.trial2.verdict if sample.oracle_free and sample.oracle_free.trial2 else None
    retry = sample.retry.verdict if sample.retry else None
    checked = sample.self_check is not None
    f1 = lambda v: None if v is None else v.details.get("f1")  # noqa: E731
    # The retry baseline exists where every failure got one (trial 1 stands where it was right).
    retried = retry is not None or t1.correct
    failed = lambda v: None if v is None else v.extraction_failed and not v.truncated  # noqa: E731
    cut = lambda v: None if v is None else v.truncated  # noqa: E731
    return Outcome(
        task=ep.task, t1=t1.correct, t1_extraction_failed=failed(t1), t1_truncated=t1.truncated,
        t2_oracle=gated.correct if gated else t1.correct,
        t2_oracle_extraction_failed=failed(gated), t2_oracle_truncated=cut(gated),
        t2_retry=(retry.correct if retry else t1.correct) if retried else None,
        t2_retry_extraction_failed=failed(retry), t2_retry_truncated=cut(retry),
        t2_free=(free.correct if free else t1.correct) if checked else None,
        t2_free_extraction_failed=failed(free), t2_free_truncated=cut(free),
        revised=sample.self_check.decision == "revise" if checked else None,
        self_check_unparsed=checked and not sample.self_check.parsed,
        f1_t1=f1(t1), f1_t2_oracle=f1(gated) if gated else f1(t1),
        f1_t2_free=(f1(free) if free else f1(t1)) if checked else None)


# ------------------------------------------------------------------------------------------ parsing

_VERDICT = re.compile(r"verdict\W{0,6}(incorrect|not\s+correct|correct|wrong|right)", re.IGNORECASE)
_NEGATIVE = re.compile(r"\b(incorrect|not\s+correct|wrong|mistakes?|errors?)\b", re.IGNORECASE)
_POSITIVE = re.compile(r"\b(correct|right)\b", re.IGNORECASE)


def parse_self_check(text: str) -> str | None:
    """"keep", "revise", or None when no verdict can be read (the caller then revises).

    The last explicit "Verdict: X" wins; without one, a reply that uses only positive words ("correct")
    keeps and one that uses only negative words ("incorrect", "wrong", "mistake") revises.
    """
    explicit = _VERDICT.findall(text)
    if explicit:
        word = explicit[-1].lower()
        return "keep" if word in ("correct", "right") else "revise"
    negative = bool(_NEGATIVE.search(text))
    positive = bool(_POSITIVE.search(_NEGATIVE.sub(" ", text)))
    if negative != positive:
        return "revise" if negative else "keep"
    return None


_SOLUTION_START = re.compile(
    r"^[#*\s]*(?:corrected|revised|new|updated|correct)?\s*(?:solution|answer|approach|attempt)\b[^\n]*:?",
    re.IGNORECASE | re.MULTILINE)


def split_reflection(reply: str) -> str:
    """One-stage replies hold a reflection then a solution: the text before the first solution heading.

    Without such a heading the whole reply is kept (the report then counts the solution in its length).
    """
    match = _SOLUTION_START.search(reply)
    if match and match.start() > 0 and reply[:match.start()].strip():
        return reply[:match.start()].strip()
    return reply.strip()


# ------------------------------------------------------------------------------------------ models

@dataclass
class Roles:
    generator: Generator
    reflector: Generator
    corrector: Generator
    self_checker: Generator
    owned: list[Backend]  # loaded here (not preloaded): closed when the stage ends

    def close(self) -> None:
        for backend in self.owned:
            backend.close()


def role_models(cfg: EvaluateConfig) -> dict[str, str]:
    return {"generator": cfg.generator, "reflector": cfg.reflector or cfg.generator,
            "corrector": cfg.corrector or cfg.generator, "self_checker": cfg.self_checker or cfg.generator}


def check_models(cfg: EvaluateConfig) -> None:
    """Resolve local model references before anything loads, so a typo fails in a second."""
    if not is_local(cfg.engine_name()):
        return  # server engines name models the server knows
    for role, model in role_models(cfg).items():
        try:
            resolve(model)
        except ReflectEvoError as exc:
            raise type(exc)(f"--{role.replace('_', '-')}: {exc}") from exc


def open_roles(cfg: EvaluateConfig, cache: GenerationCache | None,
               preloaded: dict[str, Backend] | None = None) -> Roles:
    """One Generator per distinct model; `preloaded` maps model names to backends already loaded."""
    loaded: dict[str, Generator] = {}
    for name, backend in (preloaded or {}).items():
        loaded[name] = Generator(backend, cache)
    roles, owned = {}, []
    try:
        for role, model in role_models(cfg).items():
            if model not in loaded:
                owned.append(load_model(model, role, cfg))
                loaded[model] = Generator(owned[-1], cache)
            roles[role] = loaded[model]
    except BaseException:
        for backend in owned:  # e.g. a llama.cpp server started for the generator
            backend.close()
        raise
    return Roles(**roles, owned=owned)


def load_model(model: str, role: str, cfg: EvaluateConfig) -> Backend:
    """Load one model; any failure becomes a one-line error naming the role and the model."""
    option = f"--{role.replace('_', '-')}"
    try:
        return load_backend(model, cfg.engine_name(), **cfg.engine_options())
    except ReflectEvoError as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise type(exc)(f"{option}: {first}") from exc
    except Exception as exc:  # noqa: BLE001 - an engine's own failure, whatever its type
        first = (str(exc).strip().splitlines() or [""])[0]
        raise BackendError(f"{option}: cannot load model {model!r}: {type(exc).__name__}: {first}") from exc


# ------------------------------------------------------------------------------------------ phases

def load_problems(cfg: EvaluateConfig) -> list[tuple[Task, Problem]]:
    if cfg.data and len(cfg.tasks) > 1:
        raise InputError("setting 'data' applies to a single task; evaluate tasks with their own data one at a time")
    items = []
    for name in cfg.tasks:
        task = get_task(name, data_path=cfg.data, data_split=cfg.data_split, few_shot=cfg.few_shot)
        if cfg.split not in task.split_names:
            raise InputError(f"task {name!r} has no {cfg.split!r} split (it has: {', '.join(task.split_names)}); "
                             f"choose one with --split")
        problems = task.load(cfg.split)
        if not problems:
            raise InputError(f"task {name!r}: split {cfg.split!r} has no problems")
        items += [(task, p) for p in problems[:cfg.limit or len(problems)]]
    return items


def generate_texts(gen: Generator, prompts: list[Messages], params: SamplingParams, label: str) -> list[Completion]:
    if not prompts:
        return []
    with progress_bar(label, len(prompts), "prompts") as advance:
        outputs = gen.generate(prompts, params, on_progress=advance)
    return [samples[0] for samples in outputs]


def judged(task: Task, problem: Problem, messages: Messages, completion: Completion, gen: Generator,
           params: SamplingParams) -> Attempt:
    return Attempt(messages=messages, response=completion.text, model=gen.model_id, sampling=params.record(),
                   seed=params.seed, finish_reason=completion.finish_reason,
                   verdict=task.judge(problem, completion.text, completion.finish_reason))


@dataclass
class Job:
    """A reflection to make: for which sample, under which protocol, with which feedback."""

    index: int
    protocol: str  # oracle | free
    feedback: str


def run_evaluation(items: list[tuple[Task, Problem]], roles: Roles, cfg: EvaluateConfig) -> list[EvalSample]:
    params = lambda offset, tokens: SamplingParams(  # noqa: E731
        temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=tokens, seed=cfg.seed + offset)

    # Trial 1.
    t1_params = params(TRIAL1_SEED, cfg.max_tokens)
    prompts = [task.prompt(p) for task, p in items]
    texts = generate_texts(roles.generator, prompts, t1_params, "trial 1")
    samples = [EvalSample(episode=Episode.start(p, judged(task, p, m, t, roles.generator, t1_params)))
               for (task, p), m, t in zip(items, prompts, texts)]

    # Self-check (oracle-free): the model judges its own answer, no gold feedback shown.
    if cfg.oracle_free:
        sc_params = params(SELF_CHECK_SEED, cfg.self_check_max_tokens)
        prompts = [self_check_prompt(s.episode.trial1.messages, s.episode.trial1.response) for s in samples]
        checks = generate_texts(roles.self_checker, prompts, sc_params, "self-check")
        for sample, messages, check in zip(samples, prompts, checks):
            text = check.text
            decision = parse_self_check(text)
            sample.self_check = SelfCheck(messages=messages, response=text, model=roles.self_checker.model_id,
                                          sampling=sc_params.record(), seed=sc_params.seed,
                                          decision=decision or "revise", parsed=decision is not None)

    # Reflections: oracle-gated on wrong trial 1s (with the verifier's feedback), oracle-free where the
    # self-check said revise (with bare "incorrect": the model's own judgement, no test output).
    jobs = [Job(i, "oracle", s.episode.trial1.verdict.feedback) for i, s in enumerate(samples)
            if not s.episode.trial1.verdict.correct]
    jobs += [Job(i, "free", "incorrect") for i, s in enumerate(samples)
             if s.self_check is not None and s.self_check.decision == "revise"]
    one_stage = cfg.mode == "one-stage"
    r_tokens = cfg.reflection_max_tokens + (cfg.max_tokens if one_stage else 0)
    r_params = params(REFLECT_SEED, r_tokens)
    r_prompts = []
    for job in jobs:
        t1 = samples[job.index].episode.trial1
        task = items[job.index][0]
        r_prompts.append(reflect_and_correct_prompt(t1.messages, t1.response, job.feedback, task.answer_format)
                         if one_stage else test_reflection_prompt(t1.messages, t1.response, job.feedback))
    r_texts = generate_texts(roles.reflector, r_prompts, r_params,
                             "reflect + correct" if one_stage else "reflections")
    reflections = [Reflection(index=0, instruction_id=TEST_TIME_INSTRUCTION_ID, messages=m,
                              text=split_reflection(t.text) if one_stage else t.text,
                              model=roles.reflector.model_id, sampling=r_params.record(), seed=r_params.seed,
                              finish_reason=t.finish_reason)
                   for m, t in zip(r_prompts, r_texts)]

    # Trial 2.
    if one_stage:  # the reply itself is the corrected attempt
        for job, reflection, text in zip(jobs, reflections, r_texts):
            task, problem = items[job.index]
            reflection.trial2 = judged(task, problem, reflection.messages, text, roles.reflector, r_params)
    else:
        t2_params = params(TRIAL2_SEED, cfg.max_tokens)
        c_prompts = []
        for job, reflection in zip(jobs, reflections):
            t1 = samples[job.index].episode.trial1
            c_prompts.append(correction_prompt(t1.messages, t1.response, job.feedback, reflection.text,
                                               items[job.index][0].answer_format))
        c_texts = generate_texts(roles.corrector, c_prompts, t2_params, "trial 2")
        for job, reflection, messages, text in zip(jobs, reflections, c_prompts, c_texts):
            task, problem = items[job.index]
            reflection.trial2 = judged(task, problem, messages, text, roles.corrector, t2_params)

    for job, reflection in zip(jobs, reflections):
        if job.protocol == "oracle":
            samples[job.index].episode.reflections.append(reflection)
        else:
            samples[job.index].oracle_free = reflection

    # Retry without reflection (oracle-gated failures): the model that writes trial 2, same seed and
    # sampling as trial 2, shown the failed trial 1 and the feedback but no reflection.
    if cfg.retry_baseline:
        writer = roles.reflector if one_stage else roles.corrector
        retry_params = params(TRIAL2_SEED, cfg.max_tokens)
        retry_jobs = [job for job in jobs if job.protocol == "oracle"]
        prompts = []
        for job in retry_jobs:
            t1 = samples[job.index].episode.trial1
            prompts.append(retry_prompt(t1.messages, t1.response, job.feedback, items[job.index][0].answer_format))
        texts = generate_texts(writer, prompts, retry_params, "retry (no reflection)")
        for job, messages, text in zip(retry_jobs, prompts, texts):
            task, problem = items[job.index]
            samples[job.index].retry = judged(task, problem, messages, text, writer, retry_params)
    return samples


# ------------------------------------------------------------------------------------------ stage

def evaluate(cfg: EvaluateConfig, preloaded: dict[str, Backend] | None = None) -> Path:
    """Run the evaluation and write OUT/results.json and OUT/samples.jsonl (atomically)."""
    items = load_problems(cfg)  # unknown tasks, missing splits and bad data fail before any model loads
    check_models(cfg)
    if cfg.mode == "one-stage" and cfg.corrector:
        raise InputError("setting 'corrector' applies to --mode two-stage; in one-stage mode the reflector "
                         "writes the reflection and the corrected solution in one reply")
    with RunDir(cfg.out) as run:
        cache = None if cfg.no_cache else GenerationCache(cfg.cache)
        roles = None
        try:
            roles = open_roles(cfg, cache, preloaded)
            samples = run_evaluation(items, roles, cfg)
        finally:
            if roles:
                roles.close()
            if cache:
                cache.close()
        metrics = compute_metrics([outcome(s) for s in samples], resamples=cfg.bootstrap, seed=cfg.seed)
        tasks = {task.name: task for task, _ in items}
        results = {
            "schema": RESULTS_SCHEMA,
            **manifest("evaluate", cfg.model_dump(),
                       models={role: {"model": model, "id": getattr(roles, role).model_id,
                                      **getattr(roles, role).backend.describe()}
                               for role, model in role_models(cfg).items()},
                       tasks={name: task.describe() for name, task in tasks.items()},
                       split=cfg.split, mode=cfg.mode,
                       seeds={"trial1": cfg.seed + TRIAL1_SEED, "reflection": cfg.seed + REFLECT_SEED,
                              "trial2": cfg.seed + TRIAL2_SEED, "self_check": cfg.seed + SELF_CHECK_SEED},
                       sampling={"temperature": cfg.temperature, "top_p": cfg.top_p,
                                 "max_tokens": cfg.max_tokens, "reflection_max_tokens": cfg.reflection_max_tokens,
                                 "self_check_max_tokens": cfg.self_check_max_tokens}),
            "metrics": metrics,
            "outputs": ["results.json", "samples.jsonl"],
        }
        # Written only once everything succeeded: a failed run leaves a previous run's files as they were.
        run.write_config({"evaluate": cfg.model_dump()})
        write_atomic(run.file("samples.jsonl"), "".join(s.to_json() + "\n" for s in samples))
        write_json(run.file("results.json"), results)
        run.log(f"evaluate: {summary_row(metrics['overall'])}")
    print_summary(metrics)
    console.print(f"[green]wrote[/green] {run.file('results.json')} and {run.file('samples.jsonl')}")
    return run.file("results.json")


def print_summary(metrics: dict) -> None:
    from rich.table import Table

    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    interval = lambda ci: "" if not ci else f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"  # noqa: E731
    table = Table("task", "n", "t1", "t2 oracle", "Δ", "w→r", "t2 retry", "reflection value [95% CI]",
                  "t2 free", "Δ free", "r→w free", "format fail t1", "cut t1 / t2",
                  title="evaluation: accuracy (%) at trial 1 (t1) and trial 2 (t2)")
    groups = list(metrics["per_task"].items())
    if len(groups) > 1:
        groups.append(("overall", metrics["overall"]))
    for name, group in groups:
        row = summary_row(group)
        value = "-" if row["reflection_value"] is None else \
            f"{100 * row['reflection_value']:+.1f}{interval(row['reflection_value_ci'])}"
        table.add_row(name, str(row["n"]), pct(row["acc_t1"]), pct(row["acc_t2_oracle"]), pct(row["delta_oracle"]),
                      str(row["wrong_to_right_oracle"]), pct(row["acc_t2_retry"]), value,
                      pct(row["acc_t2_free"]), pct(row["delta_free"]),
                      str(row["right_to_wrong_free"] or 0) if row["acc_t2_free"] is not None else "-",
                      pct(row["extraction_failure_t1"]),
                      f"{pct(row['truncated_t1'])} / {pct(row['truncated_t2_oracle'])}")
    console.print(table)
    console.print("reflection value = Acc@t2 oracle - Acc@t2 of a retry without reflection (same problems, paired "
                  "bootstrap); credit a gain to reflection only where its interval is above zero")

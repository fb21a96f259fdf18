"""Generation stage (docs/architecture.md): trial 1 -> reflections on each failure -> trial 2 per reflection.

Each phase sends all its prompts to the backend at once (batched across problems), through the cache.
Prompts are captured before generation and stored verbatim; a correction prompt is always built from
the original failed trial 1, never from another sample's trial 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reflectevo.backends import SamplingParams, load_backend
from reflectevo.backends.cache import GenerationCache, Generator
from reflectevo.config import GenerateConfig
from reflectevo.progress import console, progress_bar
from reflectevo.prompts import correction_prompt, draw, load_pool, reflection_prompt, select
from reflectevo.records import Attempt, Episode, Problem, Reflection, episode_counts, episodes_to_jsonl
from reflectevo.runs import RunDir, write_atomic
from reflectevo.tasks import Task, get_task

# Each phase samples with its own seed so that phases never share random streams.
TRIAL1_SEED, REFLECT_SEED, TRIAL2_SEED = 0, 1, 2


@dataclass
class Models:
    """The generator answers (trials 1 and 2); the reflector writes reflections."""

    generator: Generator
    reflector: Generator


def generation_split(task: Task, split: str | None) -> str:
    """The split to generate on: the one asked for, else train. Test only when asked for, or when the
    task has nothing else (its episodes then serve analysis: curate and train refuse them)."""
    if split:
        return split
    return "train" if "train" in task.split_names else task.default_split


def load_problems(task: Task, split: str | None, limit: int | None) -> list[Problem]:
    problems = task.load(generation_split(task, split))
    return problems[:limit] if limit else problems


def attempt_trial(task: Task, problems: list[Problem], prompts: list, gen: Generator,
                  params: SamplingParams, label: str) -> list[Attempt]:
    """Generate one answer per prompt and judge it against its problem."""
    with progress_bar(label, len(prompts), "prompts") as advance:
        outputs = gen.generate(prompts, params, on_progress=advance)
    completions = [completion for (completion,) in outputs]
    # Code verdicts wait on sandbox processes, so judge them concurrently; other verifiers are quick
    # (and math-verify's timeouts need the main thread).
    workers = 2 if task.answer_type == "code" else 1
    with progress_bar(f"{label}: verify", len(prompts), "answers") as advance:
        verdicts = task.verify_many(problems, [c.text for c in completions], workers=workers,
                                    finish_reasons=[c.finish_reason for c in completions])
        advance(len(verdicts))
    return [Attempt(messages=messages, response=c.text, model=gen.model_id, sampling=params.record(),
                    seed=params.seed, finish_reason=c.finish_reason, verdict=verdict)
            for messages, c, verdict in zip(prompts, completions, verdicts)]


def run_trial1(task: Task, problems: list[Problem], gen: Generator, cfg: GenerateConfig) -> list[Episode]:
    params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                            seed=cfg.seed + TRIAL1_SEED)
    prompts = [task.prompt(p) for p in problems]
    attempts = attempt_trial(task, problems, prompts, gen, params, "trial 1")
    return [Episode.start(p, a) for p, a in zip(problems, attempts)]


def run_reflections(task: Task, episodes: list[Episode], models: Models, cfg: GenerateConfig) -> None:
    """Add reflections, each with its trial 2, to every episode whose trial 1 failed."""
    pool = load_pool(*cfg.instruction_files)
    candidates = select(pool, cfg.instructions)
    failed = [ep for ep in episodes if not ep.trial1.verdict.correct]
    if not failed:
        return
    reflect = SamplingParams(temperature=cfg.reflection_temperature, top_p=cfg.top_p,
                             max_tokens=cfg.reflection_max_tokens, n=cfg.samples, seed=cfg.seed + REFLECT_SEED)
    jobs = []  # (episode, instruction, reflection prompt)
    for ep in failed:
        for instruction in draw(candidates, cfg.num_instructions, ep.id, cfg.seed):
            t1 = ep.trial1
            jobs.append((ep, instruction, reflection_prompt(t1.messages, t1.response, t1.verdict.feedback,
                                                            instruction.text)))
    with progress_bar("reflections", len(jobs), "prompts") as advance:
        outputs = models.reflector.generate([prompt for _, _, prompt in jobs], reflect, on_progress=advance)
    for (ep, instruction, prompt), samples in zip(jobs, outputs):
        for sample_index, completion in enumerate(samples):
            ep.reflections.append(Reflection(
                index=len(ep.reflections), instruction_id=instruction.id, messages=prompt,
                text=completion.text, model=models.reflector.model_id, sampling=reflect.record(),
                seed=reflect.seed, sample_index=sample_index, finish_reason=completion.finish_reason))

    correct = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                             seed=cfg.seed + TRIAL2_SEED)
    pairs = [(ep, r) for ep in failed for r in ep.reflections]
    prompts = [correction_prompt(ep.trial1.messages, ep.trial1.response, ep.trial1.verdict.feedback,
                                 r.text, task.answer_format) for ep, r in pairs]
    attempts = attempt_trial(task, [ep.problem() for ep, _ in pairs], prompts, models.generator, correct,
                             "trial 2")
    for (_, reflection), attempt in zip(pairs, attempts):
        reflection.trial2 = attempt


def open_models(cfg: GenerateConfig) -> tuple[Models, GenerationCache | None]:
    cache = None if cfg.no_cache else GenerationCache(cfg.cache)
    engine, options = cfg.engine_name(), cfg.engine_options()
    generator = Generator(load_backend(cfg.model, engine, **options), cache)
    reflector = generator
    if cfg.reflector and cfg.reflector != cfg.model:
        reflector = Generator(load_backend(cfg.reflector, engine, **options), cache)
    return Models(generator, reflector), cache


def generate(cfg: GenerateConfig) -> Path:
    """Run the stage and write OUT/episodes.jsonl (atomically) with its config and manifest."""
    cfg.engine_name()  # a base URL with an in-process engine fails now
    task = get_task(cfg.task, data_path=cfg.data, data_split=cfg.data_split, few_shot=cfg.few_shot)
    split = generation_split(task, cfg.split)
    problems = load_problems(task, split, cfg.limit)  # bad data fails here, before a model loads
    select(load_pool(*cfg.instruction_files), cfg.instructions)  # and unknown instruction ids too
    with RunDir(cfg.out) as run:
        models, cache = open_models(cfg)  # an unknown model fails here, before anything is written
        if cfg.split is None and split != "train":
            console.print(f"[yellow]note[/yellow]: task {task.name!r} has no train split (splits: "
                          f"{', '.join(task.split_names)}); generating on {split!r}. Curate and train refuse "
                          f"test-split episodes; to make training data give a train file: --data FILE --data-split train")
        run.write_config({"generate": cfg.model_dump()})
        try:
            episodes = run_trial1(task, problems, models.generator, cfg)
            run_reflections(task, episodes, models, cfg)
        finally:
            if cache is not None:
                cache.close()
        out = run.file("episodes.jsonl")
        write_atomic(out, episodes_to_jsonl(episodes))
        summary = episode_counts(episodes)
        summary["engine_tokens"] = models.generator.generated_tokens + (
            models.reflector.generated_tokens if models.reflector is not models.generator else 0)
        run.write_manifest("generate", cfg.model_dump(), task=task.describe(), split=split,
                           models={"generator": models.generator.backend.describe(),
                                   "reflector": models.reflector.backend.describe()},
                           seeds={"trial1": cfg.seed + TRIAL1_SEED, "reflection": cfg.seed + REFLECT_SEED,
                                  "trial2": cfg.seed + TRIAL2_SEED},
                           summary=summary, outputs=["episodes.jsonl"])
        run.log(f"generate: {summary}")
    source = f"from {cfg.data}" if task.data_file(split) else "the task's own data"
    console.print(f"[green]wrote[/green] {out}: {summary['problems']} problems of {task.name} split {split!r} "
                  f"({source}), trial 1 correct "
                  f"{summary['trial1_correct']}, {summary['reflections']} reflections, "
                  f"{summary['trial2_correct']} corrected trial 2")
    return out

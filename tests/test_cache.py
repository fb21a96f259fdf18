"""The generation cache: hits, misses, and several processes writing to one database."""

import subprocess
import sys
import textwrap

from reflectevo.backends import SamplingParams
from reflectevo.backends.cache import GenerationCache, Generator, cache_key
from reflectevo.backends.base import Completion

PROMPTS = [[{"role": "user", "content": "Name a colour."}], [{"role": "user", "content": "Count to three."}],
           [{"role": "user", "content": "Name a colour."}]]


def test_hit_and_miss_with_the_real_model(default_backend, cache_path):
    cache = GenerationCache(cache_path)
    gen = Generator(default_backend, cache)
    params = SamplingParams(temperature=0.8, max_tokens=8, n=2, seed=3)
    first = gen.generate(PROMPTS, params)
    assert [len(c) for c in first] == [2, 2, 2]
    assert first[0] == first[2]  # identical prompts are generated once
    assert cache.count() == 4  # two distinct prompts x two samples
    produced = gen.generated_tokens
    assert produced > 0

    again = Generator(default_backend, GenerationCache(cache_path)).generate(PROMPTS, params)
    assert [[c.text for c in s] for s in again] == [[c.text for c in s] for s in first]
    assert all(c.meta.get("cached") for s in again for c in s)

    # Any change of sampling parameters or seed is a miss.
    other = Generator(default_backend, cache)
    other.generate(PROMPTS[:1], SamplingParams(temperature=0.8, max_tokens=8, n=2, seed=4))
    assert other.generated_tokens > 0 and cache.count() == 6


def test_key_covers_model_messages_sampling_seed_and_sample():
    base = cache_key("fp", PROMPTS[0], SamplingParams(seed=1), 0)
    assert base == cache_key("fp", PROMPTS[0], SamplingParams(seed=1, n=5), 0)  # n is not part of a sample's key
    assert len({base, cache_key("fp2", PROMPTS[0], SamplingParams(seed=1), 0),
                cache_key("fp", PROMPTS[1], SamplingParams(seed=1), 0),
                cache_key("fp", PROMPTS[0], SamplingParams(seed=2), 0),
                cache_key("fp", PROMPTS[0], SamplingParams(seed=1, max_tokens=9), 0),
                cache_key("fp", PROMPTS[0], SamplingParams(seed=1), 1)}) == 6


WRITER = textwrap.dedent("""
    import sys
    from reflectevo.backends.cache import GenerationCache
    from reflectevo.backends.base import Completion
    cache = GenerationCache(sys.argv[1])
    tag = sys.argv[2]
    for batch in range(40):
        # Overlapping keys between the processes: the first writer wins, nobody fails.
        cache.put_many([(f"key-{batch}-{i}", Completion(text=f"{tag}-{batch}-{i}", tokens=1)) for i in range(25)],
                       model=tag)
""")


def test_two_processes_write_one_cache(tmp_path):
    path = tmp_path / "shared.sqlite"
    GenerationCache(path).close()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag], stderr=subprocess.PIPE, text=True)
             for tag in ("a", "b")]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    cache = GenerationCache(path)
    assert cache.count() == 40 * 25
    row = cache.get_many(["key-7-3"])["key-7-3"]
    assert row.text in ("a-7-3", "b-7-3")


def test_put_keeps_first_writer(tmp_path):
    cache = GenerationCache(tmp_path / "c.sqlite")
    cache.put_many([("k", Completion(text="first"))], model="m")
    cache.put_many([("k", Completion(text="second"))], model="m")
    assert cache.get_many(["k"])["k"].text == "first"


class Recording:
    """The real backend, with a record of every request the engine received."""

    def __init__(self, backend):
        self.backend = backend
        self.requests: list[tuple[str, int]] = []

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def generate(self, prompts, params):
        self.requests += [(m[-1]["content"], p.seed) for m, p in zip(prompts, params)]
        return self.backend.generate(prompts, params)


def add_prompts(n):
    from reflectevo.tasks import get_task

    task = get_task("add")
    return [task.prompt(p) for p in task.load("train")[:n]]


def test_a_larger_rerun_generates_only_what_is_missing(default_backend, cache_path):
    prompts = add_prompts(200)
    engine = Recording(default_backend)
    greedy = SamplingParams(max_tokens=3)
    first = Generator(engine, GenerationCache(cache_path)).generate(prompts[:100], greedy)
    assert len(engine.requests) == 100
    engine.requests.clear()
    gen = Generator(engine, GenerationCache(cache_path))
    both = gen.generate(prompts, greedy)
    # Exactly the 100 new prompts reached the engine, and the first 100 answers are the cached ones.
    assert sorted(c for c, _ in engine.requests) == sorted(m[-1]["content"] for m in prompts[100:])
    assert both[:100] == first and gen.generated_tokens == sum(c[0].tokens for c in both[100:])

    # Samples 2 -> 4: exactly samples 2 and 3 of each prompt are generated, 0 and 1 are kept.
    sampled = lambda n: SamplingParams(temperature=0.8, max_tokens=6, n=n, seed=5)  # noqa: E731
    engine.requests.clear()
    two = Generator(engine, GenerationCache(cache_path)).generate(prompts[:10], sampled(2))
    assert len(engine.requests) == 20 and len({s for _, s in engine.requests}) == 20  # a seed per sample
    engine.requests.clear()
    four = Generator(engine, GenerationCache(cache_path)).generate(prompts[:10], sampled(4))
    assert len(engine.requests) == 20
    assert [outs[:2] for outs in four] == two


def test_text_does_not_depend_on_the_batch(default_backend, cache_path):
    """The HF engine is batch invariant: same prompt and seed, same text, whatever else shares the batch."""
    prompts = add_prompts(40)
    greedy = SamplingParams(max_tokens=12)
    alone = [default_backend.generate([m], greedy)[0][0].text for m in prompts[:8]]
    together = [c[0].text for c in default_backend.generate(prompts, greedy)]
    assert together[:8] == alone
    mixed = [c[0].text for c in default_backend.generate(prompts[::-1], greedy)][::-1]
    assert mixed == together
    sampled = SamplingParams(temperature=0.8, max_tokens=12, n=2, seed=9)
    a = default_backend.generate(prompts[:16], sampled)
    b = default_backend.generate(prompts[5:6], sampled)
    assert [c.text for c in a[5]] == [c.text for c in b[0]]

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

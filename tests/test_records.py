import json

import pytest

from reflectevo.errors import InputError
from reflectevo.records import (EPISODE_SCHEMA, Attempt, Episode, Problem, Reflection, Sampling, Verdict,
                                episodes_to_jsonl, read_episodes)


def make_episode() -> Episode:
    problem = Problem(id="gsm8k/test/0", task="gsm8k", split="test", question="1+1?", gold="2")
    prompt = [{"role": "user", "content": "1+1?"}]
    trial1 = Attempt(messages=prompt, response="The answer is: 3", model="m@abc", sampling=Sampling(max_tokens=8),
                     seed=0, verdict=Verdict(correct=False, extracted="3"))
    episode = Episode.start(problem, trial1)
    trial2 = Attempt(messages=prompt + [{"role": "assistant", "content": "The answer is: 3"}],
                     response="The answer is: 2", model="m@abc", sampling=Sampling(), seed=2,
                     verdict=Verdict(correct=True, extracted="2", feedback="correct"))
    episode.reflections.append(Reflection(index=0, instruction_id="step.calc.low", messages=prompt, text="Add again.",
                                          model="m@abc", sampling=Sampling(temperature=0.8), seed=1,
                                          sample_index=1, trial2=trial2))
    return episode


def test_episode_round_trip(tmp_path):
    episode = make_episode()
    path = tmp_path / "episodes.jsonl"
    path.write_text(episodes_to_jsonl([episode, episode]))
    loaded = read_episodes(path)
    assert loaded == [episode, episode]
    obj = json.loads(path.read_text().splitlines()[0])
    assert obj["schema"] == EPISODE_SCHEMA
    assert obj["reflections"][0]["trial2"]["verdict"]["correct"] is True
    assert obj["reflections"][0]["instruction_id"] == "step.calc.low"
    # Serialising the loaded records again gives the same bytes.
    assert episodes_to_jsonl(loaded) == path.read_text()


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "episodes.jsonl"
    path.write_text(make_episode().to_json() + "\n{not json\n")
    with pytest.raises(InputError, match=r"episodes\.jsonl:2: malformed JSON"):
        read_episodes(path)


def test_foreign_record_and_missing_field(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"question": "q"}\n')
    with pytest.raises(InputError, match=r"x\.jsonl:1: not a reflectevo episode"):
        read_episodes(path)
    obj = json.loads(make_episode().to_json())
    del obj["trial1"]["response"]
    path.write_text(json.dumps(obj) + "\n")
    with pytest.raises(InputError, match=r"x\.jsonl:1: invalid episode: trial1\.response"):
        read_episodes(path)

"""Setting V: online RL (TRL GRPO) on the trial-2 reward, on the real default model and real rollouts.

The prompts are real: `data/add_episodes.jsonl` holds episodes of the embedded SmolLM2-135M on the `add`
train split (see tests/data/README.md), curated by the real curate stage into `rl_prompts`. Rewards come
from the task's own verifier on the policy's own replies; nothing is mocked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reflectevo.backends import SamplingParams, load_backend
from reflectevo.errors import InputError
from reflectevo.tasks import get_task
from reflectevo.training import TrainConfig, train
from reflectevo.training.metrics import read_metrics
from reflectevo.training.rewards import Judge, reward_functions, split_final
from training_data import curated_dir  # noqa: F401  (session fixture)

EPISODES = Path(__file__).parent / "data" / "add_episodes.jsonl"
END = 2  # SmolLM2's <|im_end|>: TRL keeps it as the last id of a reply that ended by itself
# A couple of short rollouts per step: the default suite stays fast on a 2-core CPU.
FAST = dict(batch_size=1, num_generations=2, max_completion_length=16, logging_steps=1, save_steps=2,
            precision="fp32", learning_rate=1e-3, temperature=1.0)


@pytest.fixture(scope="session")
def rl_dir(tmp_path_factory) -> Path:
    from reflectevo.stages.curate import CurateConfig, curate

    out = tmp_path_factory.mktemp("rl") / "curated"
    return curate(CurateConfig(source=str(EPISODES), out=str(out), validation=0.0, datasets=["rl_prompts"]))


def rows_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "rl_prompts" / "train.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------------------------- rewards
def test_reward_is_the_task_verifier_on_the_corrected_answer():
    add = get_task("add")
    problem = next(p for p in add.load("train") if p.gold == "105")  # "Calculate ... = 105"
    judge = Judge({"add": add}, [END])
    correct, fmt, stated = reward_functions(judge)
    replies = ["I added the tens wrong: 10 + 90 is 100, not 90.\n\n105",  # reflection, then the answer
               "I added the tens wrong.\n\n95",                            # wrong answer
               "105",                                                      # right, but no reflection
               "The answer is 105. I added wrong.\n\n105",                 # reflection states the answer
               "I added the tens wrong: 10 + 90 is 100 and then I",       # cut off, no answer stated
               f"Question: {problem.question}\n\nReply with only the number.",  # echoes the prompt
               f"Question: {problem.question}\n\n105"]                   # echoes it, then the right answer
    ids = [[1, END], [1, END], [1, END], [1, END], [1, 1], [1, END], [1, END]]  # [1, 1]: hit the length budget
    n = len(replies)
    batch = dict(prompts=[[]] * n, completions=[[{"role": "assistant", "content": r}] for r in replies],
                 completion_ids=ids, problem=[problem.model_dump_json()] * n, task=["add"] * n)
    assert correct(**batch) == [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    # format: a reflection that is not the question, then a final paragraph that alone holds an answer
    assert fmt(**batch) == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    assert stated(**batch) == [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    # A cut reply counts only an answer stated in full before the cut, as evaluation judges it.
    cut = dict(batch, completions=[[{"role": "assistant", "content": "The answer is 105.\nI think 10"}]],
               completion_ids=[[1, 1]], problem=batch["problem"][:1], task=["add"], prompts=[[]])
    assert correct(**cut) == [1.0]
    assert split_final("a\n\nb\n\nc") == ("a\n\nb", "c") and split_final("c") == ("", "c")


def test_code_rewards_run_in_the_sandbox_concurrently():
    mbpp = get_task("mbpp")
    problem = mbpp.load("train")[0]
    good = "The loop was wrong.\n\n```python\n" + problem.gold + "\n```"  # the reference solution
    seen = []
    verify_many = mbpp.verify_many

    def spy(*args, **kwargs):  # the real verifier, recording how it was asked to run
        seen.append(kwargs.get("workers"))
        return verify_many(*args, **kwargs)

    mbpp.verify_many = spy
    judge = Judge({"mbpp": mbpp}, [END], workers=3)
    (correct, *_) = reward_functions(judge)
    bad = "```python\ndef nothing():\n    return None\n```"
    rewards = correct(prompts=[[]] * 3, completions=[[{"role": "assistant", "content": t}] for t in (good, bad, good)],
                      completion_ids=[[END]] * 3, problem=[problem.model_dump_json()] * 3, task=["mbpp"] * 3)
    assert rewards == [1.0, 0.0, 1.0]
    assert seen == [3]  # one call for the batch, on 3 threads (each verdict waits on a sandbox process)


def test_grpo_and_vllm_options_reach_grpoconfig(tmp_path):
    """What `--setting V` passes to TRL: batch_size prompts x num_generations replies per step, the shaped
    terms' weights, and the vLLM generation settings (off unless asked for; vLLM itself is not needed to
    build the config)."""
    from trl import GRPOConfig

    from reflectevo.training.grpo import grpo_args

    plain = GRPOConfig(**grpo_args(TrainConfig(data=".", setting="V", out=str(tmp_path)), tmp_path, False))
    assert (plain.generation_batch_size, plain.num_generations, plain.max_completion_length) == (16, 4, 256)
    # sampled at once, trained one group (4 replies to one prompt) per forward pass: a quarter of the memory
    assert (plain.per_device_train_batch_size, plain.gradient_accumulation_steps) == (4, 4)
    assert plain.reward_weights == [1.0, 0.0, -0.0] and plain.beta == 0.0 and not plain.use_vllm
    cfg = TrainConfig(data=".", setting="V", out=str(tmp_path), use_vllm=True, vllm_mode="server",
                      vllm_server_base_url="http://gpu-host:8000", format_reward=0.2, answer_penalty=0.5,
                      kl_beta=0.04, grpo_args={"scale_rewards": "none", "num_iterations": 2})
    args = GRPOConfig(**grpo_args(cfg, tmp_path, False))
    assert (args.use_vllm, args.vllm_mode, args.vllm_server_base_url) == (True, "server", "http://gpu-host:8000")
    assert args.reward_weights == [1.0, 0.2, -0.5] and args.beta == 0.04
    assert (args.scale_rewards, args.num_iterations) == ("none", 2)


# ------------------------------------------------------------------------------------------- bad input
@pytest.fixture
def no_model_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr("reflectevo.training.run.load_model", refuse)


def _write(folder: Path, rows: list[dict]) -> Path:
    (folder / "rl_prompts").mkdir(parents=True, exist_ok=True)
    (folder / "rl_prompts" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_bad_input_fails_in_one_line_before_a_model_loads(rl_dir, curated_dir, tmp_path, no_model_loads):
    def fails(match, data, setting="V", **settings):
        with pytest.raises(InputError, match=match):
            train(TrainConfig(data=str(data), setting=setting, out=str(tmp_path / "out"), **settings))

    (tmp_path / "empty").mkdir()
    fails(r"has no rl_prompts/ \(setting V trains on it\).*reflectevo curate", tmp_path / "empty")
    good = rows_of(rl_dir)[:2]
    unknown = [good[0], {**good[1], "task": "nope", "problem": {**good[1]["problem"], "task": "nope"}}]
    fails(r"rl_prompts/train.jsonl:2: unknown task 'nope'.*reward_task", _write(tmp_path / "unknown", unknown))
    no_gold = [{**good[0], "problem": {k: v for k, v in good[0]["problem"].items() if k != "gold"}}]
    fails(r"train.jsonl:1: invalid rl_prompts row: problem.gold: Field required", _write(tmp_path / "gold", no_gold))
    fails(r"train.jsonl:1: a row from the 'test' split", _write(tmp_path / "test", [{**good[0], "split": "test"}]))
    fails(r"sft_one_stage/train.jsonl:1: this is a dataset of prompt/completion rows .*setting V trains on "
          r"prompt/problem rows", curated_dir / "sft_one_stage")
    fails(r"rl_prompts/train.jsonl:1: this is a dataset of prompt/problem rows \(RL, setting V\), but setting I",
          rl_dir / "rl_prompts", setting="I")
    # A task that is not in the registry (e.g. a .yaml task) can judge every row through reward_task.
    fails(r"unknown task 'nope'", _write(tmp_path / "unknown2", unknown), reward_task="nope")


# --------------------------------------------------------------------------------------------- training
def assert_generates(path, engine="hf"):
    backend = load_backend(str(path), engine, batch_size=2)
    try:
        (completion,), = backend.generate([[{"role": "user", "content": "What is 2 + 3?"}]],
                                          SamplingParams(max_tokens=8))
        assert completion.tokens > 0
    finally:
        backend.close()


def test_setting_V_trains_logs_rewards_resumes_loads_and_evaluates(rl_dir, tmp_path):
    out = tmp_path / "V"
    cfg = dict(data=str(rl_dir), setting="V", out=str(out), **FAST)
    train(TrainConfig(max_steps=2, **cfg))
    assert json.loads((out / "final_metrics.json").read_text())["steps"] == 2
    # Resume (as after kill -9): continue from checkpoint-2 to step 3, logging each step once.
    train(TrainConfig(max_steps=3, resume=True, **cfg))
    logged = [m for m in read_metrics(out) if "reward" in m]
    assert [m["step"] for m in logged] == [1, 2, 3]
    for m in logged:  # the weighted total, its spread over the step's rollouts, and each term
        assert 0.0 <= m["reward"] <= 1.0 and m["reward_std"] >= 0.0
        assert m["rewards/correct/mean"] == m["reward"]  # shaped terms are off by default...
        assert "rewards/format/mean" in m and "rewards/answer_stated/mean" in m  # ...but still logged
    final = json.loads((out / "final_metrics.json").read_text())
    assert final["steps"] == 3 and "reward" in final and "correct_last_steps" in final
    assert (out / "rewards.png").stat().st_size > 0 and (out / "loss.png").stat().st_size > 0
    card = (out / "model" / "README.md").read_text()
    assert "setting V" in card and "| num_generations | 2 |" in card and "rl_prompts" in card
    assert "vllm_mode" not in card  # vLLM options only when vLLM generates
    assert_generates(out / "adapter")
    assert_generates(out / "model")  # the merged folder: what engines without PEFT load
    # evaluate --mode one-stage with the adapter: one reply holds the reflection and the corrected answer.
    from reflectevo.config import EvaluateConfig
    from reflectevo.stages.evaluate import evaluate

    path = evaluate(EvaluateConfig(tasks=["add"], out=str(tmp_path / "eval"), generator=str(out / "adapter"),
                                   mode="one-stage", split="validation", limit=2, max_tokens=8,
                                   reflection_max_tokens=8, oracle_free=False, bootstrap=0, engine="hf",
                                   cache=str(tmp_path / "cache.sqlite")))
    results = json.loads(Path(path).read_text())
    assert results["mode"] == "one-stage" and results["metrics"]["overall"]["acc_t1"]["value"] is not None


@pytest.fixture()
def add1():
    """`add1`: sums of two one-digit numbers, an easy generated task registered for this test only."""
    from reflectevo.tasks.gym import GymTask
    from reflectevo.tasks.registry import TASKS, register_task

    @register_task("add1", "sums of two one-digit numbers (a test task)")
    def _add1(data_path=None, few_shot=0, data_split=None):
        return GymTask("basic_arithmetic", None, 0, name="add1", numeric=True, operators=("+",), min_terms=2,
                       max_terms=2, min_digits=1, max_digits=1, allow_negation=False, allow_parentheses=False)

    yield
    TASKS._entries.pop("add1")


@pytest.mark.slow
def test_setting_V_verifier_reward_rises_on_an_easy_task(add1, tmp_path):
    """The verifier alone as reward (no shaped term): 16 GRPO steps raise the share of right replies.

    `data/add1_episodes.jsonl`: 12 failed trial 1s of the default model on `add1` whose one-stage replies
    were right in 1-3 of 8 samples of 64 tokens (19 of 96), so the reward has signal in a short run.
    Measured (one thread, as here; 8 replies per step, ~45 s each): reward 0.0, 0.0, 0.25, 0.0 over the
    first 4 steps (mean 0.06) and 0.38, 0.25, 0.25, 0.38 over the last 4 (mean 0.31). One thread fixes
    the order of the float reductions, so the run repeats exactly on the same software and CPU.
    """
    import torch

    from reflectevo.stages.curate import CurateConfig, curate

    data = curate(CurateConfig(source=str(Path(__file__).parent / "data" / "add1_episodes.jsonl"),
                               out=str(tmp_path / "curated"), validation=0.0, datasets=["rl_prompts"]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(TrainConfig(data=str(data), setting="V", out=str(tmp_path / "V"), max_steps=16, batch_size=2,
                          num_generations=4, max_completion_length=64, learning_rate=2e-3, logging_steps=1,
                          save_steps=100, precision="fp32", merge=False, temperature=1.0))
    finally:
        torch.set_num_threads(threads)
    rewards = [m["reward"] for m in read_metrics(tmp_path / "V") if "reward" in m]
    assert len(rewards) == 16
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 0.1, rewards

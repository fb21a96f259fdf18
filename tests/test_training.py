"""Reflection learning on the real default model: every setting trains a few steps on real curated rows,
its training loss falls, and the saved adapter / merged model loads in a backend by path and generates.

Steps are few and rows short (max_length 256) so the default suite stays fast on a 2-core CPU; a high
learning rate on a tiny fixed set makes the fall in loss a real signal within ~8 steps.
"""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from typer.testing import CliRunner

from reflectevo.backends import SamplingParams, load_backend
from reflectevo.errors import InputError
from reflectevo.training import TrainConfig, accelerate_config, train
from reflectevo.training.metrics import read_metrics
from training_data import curated_dir  # noqa: F401  (session fixture)

# fp32: at these tiny shapes it is faster than bf16 autocast on CPU (bf16 wins at 4 x 512 tokens)
FAST = dict(max_length=256, batch_size=2, logging_steps=1, save_steps=3, precision="fp32")
# setting IV: Dpref rows in the paper's layout (see training_data.py); 2048 also fits the paper's own ~1-2k-token rows
LONG = dict(max_length=2048, batch_size=1, logging_steps=1, save_steps=10, precision="auto")  # bf16 where native


def losses(folder, key="loss"):
    return [m[key] for m in read_metrics(folder) if key in m]


def assert_learned(folder):
    values = losses(folder)
    assert len(values) >= 4, values
    # first vs last logged loss, averaged over two steps against batch-to-batch noise
    assert sum(values[-2:]) / 2 < sum(values[:2]) / 2, values


def assert_generates(path):
    backend = load_backend(str(path), "hf", batch_size=2)
    try:
        prompt = [{"role": "user", "content": "What is 2 + 3? Answer briefly."}]
        (completion,), = backend.generate([prompt], SamplingParams(max_tokens=8))
        assert completion.tokens > 0
    finally:
        backend.close()


# --------------------------------------------------------------------------------------- bad input
def _rows(folder, name, rows):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def no_model_loads(monkeypatch):
    """Bad input must fail before any model loads: make loading one a test failure."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr("reflectevo.training.run.load_model", refuse)  # the one the stage calls


def test_bad_input_fails_clearly_before_loading_a_model(curated_dir, tmp_path, no_model_loads):
    def fails(match, **settings):
        values = {"data": str(curated_dir), "setting": "I", "out": str(tmp_path / "out"), **settings}
        with pytest.raises(InputError, match=match):
            train(TrainConfig(**values))

    empty = tmp_path / "empty" / "sft_one_stage"
    _rows(empty, "train.jsonl", [])
    fails(r"train.jsonl: no rows; setting I needs at least one", data=str(empty.parent))
    # A D± folder (prompt/chosen/rejected) given to one-stage SFT.
    fails(r"dpo_contrastive/train.jsonl:1: this is a dataset of prompt/chosen/rejected pairs.*setting I",
          data=str(curated_dir / "dpo_contrastive"))
    row = json.loads((curated_dir / "sft_one_stage" / "train.jsonl").read_text().splitlines()[0])
    _rows(tmp_path / "test_rows" / "sft_one_stage", "train.jsonl", [{**row, "split": "test"}])
    fails(r"train.jsonl:1: a row from the 'test' split .*--allow-test-split", data=str(tmp_path / "test_rows"))
    (tmp_path / "a_file.jsonl").write_text("{}\n")
    fails(r"a_file.jsonl is a file; train expects a curated folder", data=str(tmp_path / "a_file.jsonl"))
    del row["completion"]
    _rows(tmp_path / "nocol", "train.jsonl", [row])
    fails(r"nocol/train.jsonl:1: missing column 'completion'", data=str(tmp_path / "nocol"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train.jsonl").write_text('{"prompt": [\n')
    fails(r"bad/train.jsonl:1: malformed JSON", data=str(tmp_path / "bad"))
    fails(r"unknown model 'no-such-model'", model="no-such-model")
    fails(r"has no sft_reflect/", data=str(tmp_path / "empty"), setting="II")
    fails(r"is one dataset, but setting II trains two models", data=str(curated_dir / "sft_reflect"),
          setting="II")
    (tmp_path / "out" / "checkpoints").mkdir(parents=True)
    fails(r"already holds a training run.*--resume")


def test_cli_reports_one_line_error():
    from reflectevo.cli import app

    result = CliRunner().invoke(app, ["train", "/nonexistent/curated", "--setting", "I", "--out", "/tmp/x"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: curated folder /nonexistent/curated does not exist (make one with `reflectevo curate`)"]


# ------------------------------------------------------------------------------------------ settings
def test_setting_I_lora_learns_resumes_and_loads(curated_dir, tmp_path):
    out = tmp_path / "I"
    cfg = dict(data=str(curated_dir), setting="I", out=str(out), learning_rate=2e-3, **FAST)
    train(TrainConfig(max_steps=3, **cfg))
    assert json.loads((out / "final_metrics.json").read_text())["steps"] == 3
    # Resume: continue from checkpoint-3 to step 6, logging each step once.
    train(TrainConfig(max_steps=6, resume=True, **cfg))
    steps = [m["step"] for m in read_metrics(out) if "loss" in m]
    assert steps == list(range(1, 7))
    assert all(0.1 < m["peak_memory_gib"] < 24 for m in read_metrics(out))  # the 135M model: ~1-2 GiB
    assert_learned(out)
    state = json.loads((out / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    final = json.loads((out / "final_metrics.json").read_text())
    assert final["steps"] == 6
    assert ("eval_loss" in final) == ("eval_rows" in final)  # validation rows that fit max_length
    card = (out / "model" / "README.md").read_text()
    assert "setting I" in card and "## Final metrics" in card and "| lora_r | 8 |" in card
    assert (out / "loss.png").stat().st_size > 0
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] \
        == "smollm2-135m"
    assert_generates(out / "adapter")
    assert_generates(out / "model")


@pytest.mark.slow
def test_setting_II_trains_reflector_and_corrector(curated_dir, tmp_path):
    out = tmp_path / "II"
    # stage 2 prompts hold the reflection too: ~270-310 tokens on these rows
    train(TrainConfig(data=str(curated_dir), setting="II", out=str(out), learning_rate=2e-3, max_steps=6,
                      merge=False, **{**FAST, "max_length": 384}))
    for stage in ("stage1", "stage2"):
        assert_learned(out / stage)
        assert "the reflector" in (out / "stage1" / "README.md").read_text()
    assert_generates(out / "stage1" / "adapter")


def test_setting_III_dpo_lora_on_contrastive_pairs(curated_dir, tmp_path):
    out = tmp_path / "III"
    # beta 0.1 instead of the paper's 0.01: a visible fall of the loss within 6 steps
    train(TrainConfig(data=str(curated_dir), setting="III", out=str(out), learning_rate=1e-3, beta=0.1,
                      max_steps=6, merge=False, **FAST))
    assert_learned(out)
    margins = losses(out, "rewards/margins")
    assert len(margins) >= 4 and margins[-1] > margins[0]
    assert "rewards/margins" in json.loads((out / "final_metrics.json").read_text())
    assert not (out / "model").exists()  # merge=False: the adapter only (setting I checks merging)
    assert_generates(out / "adapter")


@pytest.mark.slow
def test_setting_IV_dpo_full_on_preference_pairs(curated_dir, tmp_path):
    out = tmp_path / "IV"
    train(TrainConfig(data=str(curated_dir), setting="IV", out=str(out), full=True, learning_rate=1e-5,
                      beta=0.1, max_steps=4, **LONG))
    assert_learned(out)
    assert not (out / "adapter").exists()
    assert_generates(out / "model")


@pytest.mark.slow
def test_setting_IV_dpo_lora_on_preference_pairs(curated_dir, tmp_path):
    out = tmp_path / "IV"
    train(TrainConfig(data=str(curated_dir), setting="IV", out=str(out), learning_rate=1e-3, beta=0.1,
                      max_steps=4, merge=False, **LONG))
    assert_learned(out)
    assert_generates(out / "adapter")


@pytest.mark.slow
def test_full_fine_tuning_sft(curated_dir, tmp_path):
    out = tmp_path / "I-full"
    train(TrainConfig(data=str(curated_dir), setting="I", out=str(out), full=True, learning_rate=1e-4,
                      max_steps=6, **FAST))
    assert_learned(out)
    assert not (out / "adapter").exists()
    assert "library_name: transformers" in (out / "README.md").read_text()
    assert_generates(out / "model")
    shutil.rmtree(out / "model")  # 0.5 GB of fp32 weights


# ------------------------------------------------------------------------------------- multi-GPU
@pytest.mark.parametrize("name, kind, precision", [("deepspeed_zero3", "DEEPSPEED", "bf16"),
                                                    ("fsdp", "FSDP", "bf16"), ("ddp_cpu", "MULTI_CPU", "no")])
def test_shipped_accelerate_configs_load(name, kind, precision):
    """accelerate's own loader reads every shipped config (the ZeRO-3 and FSDP ones need GPUs to run;
    ddp_cpu runs in tests/test_distributed.py)."""
    from accelerate.commands.config.config_args import load_config_from_file

    path = accelerate_config(name)
    assert yaml.safe_load(path.read_text())["distributed_type"] == kind
    config = load_config_from_file(str(path))
    assert config.distributed_type.value == kind and config.mixed_precision == precision
    with pytest.raises(InputError, match="shipped: ddp_cpu, deepspeed_zero3, fsdp"):
        accelerate_config("zero9")


def test_resume_skips_a_checkpoint_killed_while_saving(tmp_path):
    """A SIGKILL during the Trainer's save leaves a folder without trainer_state.json: never resume from it."""
    from reflectevo.training.run import last_complete_checkpoint

    for step in (2, 4, 6):
        (tmp_path / f"checkpoint-{step}").mkdir()
    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert not (tmp_path / "checkpoint-6").exists()
    assert last_complete_checkpoint(tmp_path / "missing") is None


def test_metrics_log_survives_a_run_killed_mid_append(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 2.0}]
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "lo\n{"step": 2, "loss": 1.0}\n')
    with pytest.raises(json.JSONDecodeError):  # damage in the middle is not a crash artefact: say so
        read_metrics(tmp_path)


def test_peak_memory_restarts_at_each_training():
    """An evidence run generates and evaluates before it trains in one process; training's peak is its own."""
    from reflectevo.runs import peak_memory, reset_peak_memory

    block = b"x" * (512 * 2**20)  # written, so resident; freed, it goes back to the system (mmap)
    high = peak_memory()
    del block
    reset_peak_memory()
    assert peak_memory() < high - 256 * 2**20


def test_training_near_the_memory_limit_says_so_before_the_kernel_kills_it(tmp_path, capsys):
    """A process killed for memory dies without an error line; the warning comes while it still can."""
    from types import SimpleNamespace

    from reflectevo.runs import memory_limit, peak_memory
    from reflectevo.training import metrics

    limit = memory_limit()
    assert limit and peak_memory() < limit  # this test process is alive, so under its limit
    assert metrics.memory_warning(peak_memory(), limit, checkpointing=False) is None
    near = metrics.memory_warning(int(0.9 * limit), limit, checkpointing=False)
    assert "killed it for memory" in near and "--gradient-checkpointing" in near
    assert "--gradient-checkpointing" not in metrics.memory_warning(limit, limit, checkpointing=True)

    log = metrics.MetricsLog(tmp_path, "test")
    state, args = SimpleNamespace(global_step=1), SimpleNamespace(gradient_checkpointing=False)
    log.on_step_end(args, state, None)
    assert "killed" not in capsys.readouterr().err  # rich's console writes to stderr
    metrics.NEAR_LIMIT = peak_memory() / limit / 2  # now this process is "near" its limit
    try:
        log.on_step_end(args, state, None)
        log.on_step_end(args, state, None)
    finally:
        metrics.NEAR_LIMIT = 0.85
    assert " ".join(capsys.readouterr().err.split()).count("killed it for memory") == 1  # once, not each step


def test_control_setting_trains_on_right_trial1_answers(tmp_path):
    """`--setting control`: the same SFT as setting I, on sft_self_train (here: GSM8K train problems with
    their reference solutions standing in for right trial-1 answers)."""
    from reflectevo.stages.curate import write_dataset
    from reflectevo.tasks import get_task

    task = get_task("gsm8k")
    rows = [{"prompt": task.prompt(p), "completion": [{"role": "assistant", "content":
             f"{p.meta['solution']}\nThe answer is: {p.gold}"}], "task": "gsm8k", "split": "train",
             "episode_id": p.id, "reflection_index": None, "instruction_id": None}
            for p in task.load("train")[:4]]
    write_dataset(tmp_path / "curated" / "sft_self_train", "sft_self_train", {"train": rows, "validation": []})
    out = tmp_path / "control"
    train(TrainConfig(data=str(tmp_path / "curated"), setting="control", out=str(out), learning_rate=2e-3,
                      max_steps=6, **FAST))
    assert_learned(out)
    card = (out / "model" / "README.md").read_text()
    assert "setting control" in card and "sft_self_train" in card
    assert_generates(out / "model")

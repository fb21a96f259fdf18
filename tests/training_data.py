"""Real curated training rows for the training tests, made by the real `reflectevo curate` stage.

- `data/gsm8k_episodes.jsonl`: 4 episodes of a real run of the embedded SmolLM2-135M on the GSM8K train
  split (`reflectevo generate --task gsm8k --limit 48 --max-tokens 64 --reflection-max-tokens 48 -k 2
  --samples 4`: 3 of its 384 reflections corrected the answer); the three episodes with a correcting
  reflection and one without, so D+ (settings I, II) and D± (III) have rows.
- Dpref (IV) needs two reflections of one failure that both corrected it, which the 135M model almost
  never produces (0 of 64 in a 16-problem run); its rows come from `data/paper/example_Dpref.jsonl`,
  four synthetic records in the layout of the ReflectEvo paper's Dpref example file, imported and
  curated the same way (short rows, a few hundred tokens).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

EPISODES = Path(__file__).parent / "data" / "gsm8k_episodes.jsonl"
DPREF = Path(__file__).parent / "data" / "paper" / "example_Dpref.jsonl"


@pytest.fixture(scope="session")
def curated_dir(tmp_path_factory) -> Path:
    from reflectevo.stages.curate import CurateConfig, curate

    root = tmp_path_factory.mktemp("training")
    out = curate(CurateConfig(source=str(EPISODES), out=str(root / "curated"), validation=0.25, dedup="none",
                              datasets=["sft_one_stage", "sft_reflect", "sft_correct", "dpo_contrastive", "rl_prompts"]))
    paper = curate(CurateConfig(source=str(DPREF),
                                out=str(root / "paper"), validation=0.0, dedup="none", task="logiqa",
                                datasets=["dpo_preference"]))
    # The fixture's four ranked pairs all survive curation (none states the answer), so IV has rows.
    assert sum(1 for _ in (paper / "dpo_preference" / "train.jsonl").open()) == 4
    shutil.copytree(paper / "dpo_preference", out / "dpo_preference")
    return out


def load_curated(folder: str | Path, fmt: str = "json"):
    """A curated dataset folder as a `datasets.DatasetDict`, leaving out empty splits.

    (`datasets.load_dataset` refuses an empty JSONL split, and validation is empty when a set comes
    from a single problem or --validation 0.)
    """
    from datasets import load_dataset

    folder = Path(folder)
    ext = "jsonl" if fmt == "json" else "parquet"
    files = {s: str(folder / f"{s}.{ext}") for s in ("train", "validation")
             if (folder / f"{s}.{ext}").is_file() and (folder / f"{s}.jsonl").stat().st_size > 0}
    if not files:
        raise FileNotFoundError(f"{folder}: no non-empty train.{ext}/validation.{ext}")
    return load_dataset(fmt, data_files=files)

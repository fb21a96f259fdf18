"""Real curated training rows for the training tests: SmolLM2-135M's own gsm8k episodes, curated for real.

`data/gsm8k_episodes.jsonl` holds episodes from a real run of the embedded model
(`reflectevo generate --task gsm8k --limit 16 --max-tokens 64 --reflection-max-tokens 48 -k 2 --samples 2`),
kept to the episodes whose reflections corrected the answer (and some that did not), so each of the five
curated datasets has rows. The fixture runs the real `reflectevo curate` stage on them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

EPISODES = Path(__file__).parent / "data" / "gsm8k_episodes.jsonl"


@pytest.fixture(scope="session")
def curated_dir(tmp_path_factory) -> Path:
    from reflectevo.stages.curate import CurateConfig, curate

    out = tmp_path_factory.mktemp("training") / "curated"
    return curate(CurateConfig(source=str(EPISODES), out=str(out), validation=0.25, dedup="none"))

"""A curation filter and a training setting from a plugin (entry-point groups reflectevo.filters and
reflectevo.settings)."""

from reflectevo.stages.curate import FILTERS
from reflectevo.training.config import Stage, add_setting


@FILTERS.register("hedging", "the reflection hedges (\"maybe\", \"perhaps\") instead of naming the mistake")
def hedging(reflection, text, ctx) -> bool:
    return any(word in text.lower().split() for word in ("maybe", "perhaps"))


add_setting("I-dpo-on-one-stage", "DPO on D+- pairs, evaluated in one reply", "one-stage",
            Stage("model", "dpo_contrastive", "dpo"))

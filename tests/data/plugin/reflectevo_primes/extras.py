"""A curation filter, a training setting and an engine from a plugin (entry-point groups reflectevo.filters,
reflectevo.settings and reflectevo.engines)."""

from reflectevo.backends import ENGINES, resolve
from reflectevo.stages.curate import FILTERS
from reflectevo.training.config import Stage, add_setting


@FILTERS.register("hedging", "the reflection hedges (\"maybe\", \"perhaps\") instead of naming the mistake")
def hedging(reflection, text, ctx) -> bool:
    return any(word in text.lower().split() for word in ("maybe", "perhaps"))


add_setting("I-dpo-on-one-stage", "DPO on D+- pairs, evaluated in one reply", "one-stage",
            Stage("model", "dpo_contrastive", "dpo"))


@ENGINES.register("hf-fp32", "transformers in float32 (a plugin engine: the hf backend with one option fixed)",
                  local=True)
def hf_fp32(model: str, **options):
    from reflectevo.backends.hf import HFBackend

    return HFBackend(resolve(model), **{**options, "dtype": "float32"})

"""reflectevo: small language models that learn to reflect on their own mistakes (ReflectEvo)."""

import os

# PyTorch's OpenMP threads spin while they wait for each other. On a busy machine (other jobs, several
# workers) that spinning steals the cores doing the work: generation measured 20x slower. Passive
# waiting costs nothing measurable on an idle machine. Set before torch is imported; users may override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# REFLECTEVO_NO_PROGRESS=1 (logs, CI) silences our bars in progress.py; transformers' and huggingface_hub's
# own tqdm bars (weight loading, GGUF conversion) read these two variables when they are imported, so
# they are set here, before either is.
if os.environ.get("REFLECTEVO_NO_PROGRESS") == "1":
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

__version__ = "0.1.0"

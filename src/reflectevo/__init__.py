"""reflectevo: small language models that learn to reflect on their own mistakes (ReflectEvo)."""

__version__ = "0.1.0"

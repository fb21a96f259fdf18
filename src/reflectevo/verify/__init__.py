"""Answer extraction and judging: choices, numbers, math, free text, code (run in a sandbox)."""

"""Experiments: code that wires the library into runs (kept apart from the library itself)."""

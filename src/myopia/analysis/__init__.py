"""Analyses of trained models: per-token held-out evaluation, bootstrap intervals, token classes, the gap."""

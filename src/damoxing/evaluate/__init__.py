"""Evaluation: metrics, do-nothing baselines and bootstrap intervals (numpy only, no torch)."""

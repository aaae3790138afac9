"""Measuring a model: metrics (pure functions), baselines, bootstrap intervals, calibration,
sample quality of generative models, paired tests between models, and the cost block."""

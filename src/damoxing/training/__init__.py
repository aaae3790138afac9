"""Training: the loop, optimizers and learning-rate schedules, batches, checkpoints, distributed setup."""

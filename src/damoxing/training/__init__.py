"""Training: the loop and its state (also the checkpoint format), the step, optimizers and learning-rate schedules, batches, checkpoints, distributed setup."""

"""Training: the loop, optimizers and learning-rate schedules."""

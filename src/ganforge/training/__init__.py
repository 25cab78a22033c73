"""Training: the trainer, checkpoints, EMA and the run directory."""

"""The training loop: AdamW, evaluation, checkpoints, resume, progress bar."""

"""What ``python -m causaldreamer.evaluate`` and ``python -m causaldreamer.compare`` share: the results
tables (tables.py), the reuse of sequences already on disk (sequences.py), the W&B table (wandb_log.py)."""

"""Sweeps and studies: scoring a trained run beyond recall (scoring.py), the per-run metrics record
(records.py), the summary table and plot of a multirun (summary.py) and the Hydra callback that writes it
(callback.py)."""

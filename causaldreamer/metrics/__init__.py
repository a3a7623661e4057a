"""Evaluation metrics (torchmetrics, DDP-syncable): image-sequence metrics (sequence.py) fed by feature
extractors (features.py); text side, bank retrieval (retrieval.py) and counterfactual coverage
(coverage.py). Definitions: docs/metrics.md."""

"""A CSV logger that can continue a ``metrics.csv`` another process started.

Lightning's writer only knows the columns it has logged itself. Under DDP with spawned processes (a
multirun job with trainer=ddp_cpu or ddp) fit and test run in different processes, so the test process
rewrites the file with only its own columns and fails on the rows fit wrote
("dict contains fields not in fieldnames"). Reading the header on disk first makes the columns a union.
Lightning's writer also deletes a ``metrics.csv`` it finds when it starts; this one keeps it, so a killed
run resumed in its own directory appends to its history instead of erasing it.
"""

from __future__ import annotations

import csv
import os

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.rank_zero import rank_zero_only


class _KeepingExperimentWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        """Lightning's deletes an existing metrics.csv here; appending to it loses nothing."""


class CSVLogger(LightningCSVLogger):
    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingExperimentWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def save(self) -> None:
        writer = self.experiment
        if writer.metrics and os.path.isfile(writer.metrics_file_path):
            with open(writer.metrics_file_path, newline="") as handle:
                on_disk = next(csv.reader(handle), [])
            writer.metrics_keys = sorted(set(writer.metrics_keys) | set(on_disk))
        super().save()

"""The training run's loggers: a CSV logger that can continue a ``metrics.csv`` another process started,
and what W&B gets beyond the metrics (the whole resolved config, the exported adapter as an artifact).

Lightning's CSV writer only knows the columns it has logged itself. Under DDP with spawned processes (a
multirun job with trainer=ddp_cpu or ddp) fit and test run in different processes, so the test process
rewrites the file with only its own columns and fails on the rows fit wrote
("dict contains fields not in fieldnames"). Reading the header on disk first makes the columns a union.
Lightning's writer also deletes a ``metrics.csv`` it finds when it starts; this one keeps it, so a killed
run resumed in its own directory appends to its history instead of erasing it.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf


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


def run_config(cfg: DictConfig) -> dict:
    """The whole resolved config, without Hydra's own node, and the option chosen in each config group
    (``choices.ablation``, ``choices.encoder``...), so that a sweep's runs can be filtered by any setting."""
    config = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "hydra"}
    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
        config["choices"] = {k: v for k, v in choices.items() if not k.startswith("hydra")}
    return config


def log_adapter_artifact(loggers: list, folder: Path, metadata: dict) -> None:
    """The exported adapter folder as a W&B artifact of type "model" in each W&B run. Offline, its manifest
    goes into the run's transaction log and its files stay in the folder ("immutable": an export is never
    modified, so no second copy is staged); ``wandb sync`` of the run uploads both."""
    import wandb

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            run = logger.experiment
            artifact = wandb.Artifact(f"adapter-{run.id}", type="model", metadata=metadata)
            artifact.add_dir(str(folder), policy="immutable")
            run.log_artifact(artifact)

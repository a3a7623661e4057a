"""Hydra callback: every multirun leaves summary.csv / summary.md / summary.png in its sweep directory.

The summary is rebuilt from the job directories on disk after each job and once more when the sweep
ends, so it needs nothing from the launcher: basic, joblib (jobs in worker processes) and submitit alike.
Rebuilding after each job also leaves a table of the finished runs when a later job fails, since Hydra
then never calls ``on_multirun_end``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from causaldreamer.sweeps.summary import SUMMARY_MD, write_summary

log = logging.getLogger(__name__)


class SweepSummary(Callback):
    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            write_summary(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            table = write_summary(sweep_dir)
            if (sweep_dir / SUMMARY_MD).is_file():
                log.info("sweep summary of %d runs: %s", len(table), sweep_dir / SUMMARY_MD)

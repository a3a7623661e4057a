"""The image side through ``trainer.predict``: draw the sequences not yet on disk, then score them all.

Under DDP (``trainer=ddp``, ``trainer=ddp_cpu``) every process builds the same scenario list and draws
and scores its share; the scores come back synced. A process other than rank 0 returns from these like
rank 0 does, and the entry points leave the writing of tables to rank 0 (``trainer.is_global_zero``).
"""

from __future__ import annotations

import json

import lightning as L
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig

from causaldreamer.evaluation.sequences import read_record
from causaldreamer.evaluation.tables import METRIC_HEADERS
from causaldreamer.generation.module import SequencePrediction
from causaldreamer.generation.scenarios import Scenario, ScenarioDataModule
from causaldreamer.generation.scoring import RESULTS, SequenceScoring
from causaldreamer.generation.writer import SequenceWriter
from causaldreamer.methods.base import SequenceMethod
from causaldreamer.metrics.features import ClipFeatures, DinoFeatures


def prediction_trainer(trainer: DictConfig | None = None, callbacks: tuple = ()) -> L.Trainer:
    """A Trainer for predict alone (no logger, checkpoints or model summary): the ``trainer`` config of
    generate and evaluate, or without one (the studies' scoring, inside a training run) one device, a GPU
    when there is one."""
    options = {
        "use_distributed_sampler": False,  # ScenarioDataModule shards the scenarios itself
        "logger": False,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "callbacks": list(callbacks),
    }
    if trainer is None:
        return L.Trainer(accelerator="auto", devices=1, **options)
    return instantiate(trainer, **options)


def draw_sequences(
    method: SequenceMethod, scenarios: list[Scenario], trainer: DictConfig | None = None
) -> list[Scenario]:
    """Every scenario whose folder is not complete, drawn by ``method`` and written; returns those."""
    datamodule = ScenarioDataModule(scenarios)
    if datamodule.scenarios:
        predictor = prediction_trainer(trainer, (SequenceWriter(),))
        predictor.predict(SequencePrediction(method), datamodule=datamodule, return_predictions=False)
    return datamodule.scenarios


def score_sequences(
    scenarios: list[Scenario], dino: DinoFeatures, clip: ClipFeatures, trainer: DictConfig | None = None
) -> tuple[pd.DataFrame, dict[str, float]]:
    """One row of the six metrics per sequence (with the effects its frames show) and their means over
    all sequences, from the states synced across processes."""
    predictor = prediction_trainer(trainer)
    datamodule = ScenarioDataModule(scenarios, skip_complete=False)
    predictor.predict(SequenceScoring(dino, clip), datamodule=datamodule, return_predictions=False)
    results = predictor.callback_metrics
    by_index = {scenario.index: scenario for scenario in scenarios}
    rows = []
    indices, scores = results[f"{RESULTS}index"].tolist(), results[f"{RESULTS}scores"].tolist()
    for index, values in zip(indices, scores, strict=True):
        folder = by_index[index].folder
        record = read_record(folder)
        row = {"scenario": index, "cause": record["cause"], "folder": folder.name}
        row |= dict(zip(METRIC_HEADERS, values, strict=True))
        rows.append(row | {"effects": json.dumps([frame["effect"] for frame in record["frames"]])})
    means = {name: float(results[f"{RESULTS}{name}"]) for name in METRIC_HEADERS}
    return pd.DataFrame(rows), means

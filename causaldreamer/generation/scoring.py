"""The six sequence metrics (DESIGN 7) over sequence folders, as a LightningModule: each process scores
its share of the folders, and the torchmetrics states are synced across processes at the end."""

from __future__ import annotations

import lightning as L
import torch
from torchmetrics import Metric

from causaldreamer.evaluation.sequences import read_sequence
from causaldreamer.evaluation.tables import METRIC_HEADERS
from causaldreamer.generation.scenarios import Scenario
from causaldreamer.metrics.features import ClipFeatures, DinoFeatures, sequence_features
from causaldreamer.metrics.sequence import PerSequenceScores, sequence_metrics

RESULTS = "sequences/"  # the prefix of the synced results in trainer.callback_metrics


class SequenceScoring(L.LightningModule):
    """Each frame against the effect its record says it shows; the frozen DINOv2 and CLIP extractors
    are held here, so Lightning puts them on its device."""

    def __init__(self, dino: DinoFeatures, clip: ClipFeatures):
        super().__init__()
        self.dino, self.clip = dino, clip
        self.metrics = sequence_metrics()
        self.per_sequence = PerSequenceScores(len(METRIC_HEADERS))

    def setup(self, stage: str) -> None:
        # Sync only among this trainer's processes: a one-device trainer inside another's process group
        # (a study scored on rank 0 of a DDP training) must not wait for ranks that never score.
        for metric in self.modules():
            if isinstance(metric, Metric):
                metric.sync_on_compute = self.trainer.world_size > 1

    def predict_step(self, scenario: Scenario | None, batch_idx: int) -> torch.Tensor | None:
        """This sequence's six scores (also kept in the metric states, which is what counts)."""
        if scenario is None:  # a process with no share of the scenarios (ScenarioDataModule)
            return None
        frames, record = read_sequence(scenario.folder)
        effects = [frame["effect"] for frame in record["frames"]]
        features = sequence_features(frames, record["cause"], effects, self.dino, self.clip)
        values = self.metrics(**{name: value.to(self.device) for name, value in features.items()})
        scores = torch.stack([values[name] for name in METRIC_HEADERS])[None]
        self.per_sequence.update(torch.tensor([scenario.index], device=self.device), scores)
        return scores

    def on_predict_epoch_end(self) -> None:
        """The synced means and per-sequence scores into ``trainer.callback_metrics``: the channel Lightning
        brings back to the calling process from every launcher, forked and spawned processes included."""
        means = self.metrics.compute()
        index, scores = self.per_sequence.compute()
        index = index.reshape(-1)  # torchmetrics squeezes a one-element result to a scalar
        scores = scores.reshape(len(index), len(METRIC_HEADERS))
        results = {f"{RESULTS}{name}": means[name] for name in METRIC_HEADERS}
        self.trainer.callback_metrics.update(results | {f"{RESULTS}index": index, f"{RESULTS}scores": scores})

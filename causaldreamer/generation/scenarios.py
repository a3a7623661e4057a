"""Scenarios to draw, one sequence folder each, and the datamodule that hands them to trainer.predict."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from causaldreamer.diffusion.sequence_files import is_complete, sequence_folder_name


@dataclass  # not frozen: Lightning rebuilds a batch's dataclass when it moves it to the device
class Scenario:
    """One sequence: its cause, the reference effects (the baselines draw them, CausalDreamer records
    them), the seed, and the folder it lands in."""

    index: int
    cause: str
    references: tuple[str, ...]
    seed: int
    folder: Path


def scenarios_in(
    output_dir: Path, causes: list[str], seed: int, references: list[list[str]] | None = None
) -> list[Scenario]:
    """Scenario i in ``output_dir/NNN-<cause>``, all from the same seed."""
    references = references or [[] for _ in causes]
    return [
        Scenario(i, cause, tuple(refs), seed, output_dir / sequence_folder_name(i, cause))
        for i, (cause, refs) in enumerate(zip(causes, references, strict=True))
    ]


def _one(batch: list[Scenario | None]) -> Scenario | None:
    return batch[0]


class ScenarioDataModule(L.LightningDataModule):
    """The scenarios one at a time, in order; with ``skip_complete`` only those whose folder is not complete
    yet, so an interrupted run resumes. The list is fixed when the datamodule is built, before
    trainer.predict starts any process: every process shards the same list, whatever the others write."""

    def __init__(self, scenarios: list[Scenario], skip_complete: bool = True):
        super().__init__()
        self.scenarios = [s for s in scenarios if not (skip_complete and is_complete(s.folder))]

    def predict_dataloader(self) -> DataLoader:
        """This process's share: scenario i goes to process i mod N (the trainer runs with
        ``use_distributed_sampler=False``). Lightning's own sampler refuses a process with nothing to do,
        and a loop without batches skips its hooks; such a process gets one empty batch (None) instead, so
        it still takes part in the sync of the metric states."""
        rank, processes = self.trainer.global_rank, self.trainer.world_size
        return DataLoader(self.scenarios[rank::processes] or [None], batch_size=1, collate_fn=_one)

"""Each drawn sequence written into its scenario's folder as soon as it is drawn."""

from __future__ import annotations

from lightning.pytorch.callbacks import BasePredictionWriter

from causaldreamer.diffusion.sequence_files import write_sequence


class SequenceWriter(BasePredictionWriter):
    """Frames, grid, GIF and record, all or nothing (``write_sequence``: a hidden folder renamed into
    place), on the process that drew them: an interrupted run leaves complete folders only."""

    def __init__(self):
        super().__init__(write_interval="batch")

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ):
        if prediction is not None:  # None: the empty batch of a process with no scenario
            write_sequence(batch.folder, prediction.frames, prediction.record)

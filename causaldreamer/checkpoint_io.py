"""Checkpoint files are never half-written.

Lightning's own save goes through a temporary file in the system temp folder and a move; when that folder
is on another filesystem the move is a copy, and a kill during the copy leaves half a checkpoint.
``AtomicCheckpointIO`` (the trainer's ``plugins``) writes beside the target and swaps the file in whole
with ``os.replace``. Loading is Lightning's; the entry point asks it for ``weights_only=True``.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from causaldreamer.io import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

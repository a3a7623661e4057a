"""What a checkpoint must carry, beyond Lightning's own state, for a resumed run to continue exactly.

Lightning saves weights, optimizer, scheduler and loop counters, but not the global random states
(dropout draws from torch's) nor the W&B run the curves belong to. ``ResumeState`` adds both, as plain
tensors and numbers, so the checkpoint still loads with ``weights_only=True``. Data order needs nothing
here: the datamodule derives it from (seed, epoch). It also flushes the loggers with every checkpoint
(the CSV logger buffers 100 steps), so a killed run's logs reach exactly as far as its checkpoint and
the resumed run continues them without a gap or a repeated row.
"""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger

from causaldreamer.checkpoints import RESUME_KEY


class ResumeState(L.Callback):
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        for logger in trainer.loggers:
            logger.save()
        wandb_run = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
        checkpoint[RESUME_KEY] = {
            "rng": capture_rng_states(),
            "wandb_run_id": wandb_run.version if wandb_run is not None else None,
        }

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        state = checkpoint.get(RESUME_KEY)
        if state is not None:
            restore_rng_states(state["rng"])


def capture_rng_states() -> dict:
    """torch (CPU and CUDA), numpy and python random states, as tensors, lists and numbers."""
    numpy_state = np.random.get_state(legacy=False)
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": numpy_state["state"]["key"].tolist(),
            "pos": numpy_state["state"]["pos"],
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    numpy_state = states["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": np.asarray(numpy_state["key"], dtype=np.uint32), "pos": numpy_state["pos"]},
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    random.setstate(states["python"])

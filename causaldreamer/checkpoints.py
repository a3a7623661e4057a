"""Reading a training checkpoint to resume from, before a run imports Lightning or writes anything.

It is loaded weights-only (no pickled code runs) and checked whole: torch.load does not verify the zip
archive's checksums, so a flipped byte would otherwise load silently. It also tells which encoder
dimension it was trained for and which W&B run it logged to (``ResumeState`` puts that there).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from causaldreamer.errors import UserError

ADAPTER_DIM_KEY = "adapter.relation.weight"  # [3, d]: its second dimension is the encoder's
RESUME_KEY = "resume_state"  # written by causaldreamer.callbacks.ResumeState


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint, loaded weights-only (no pickled code runs); a UserError names a file that is
    corrupt, truncated, or holds objects other than tensors and plain values."""
    fix = "resume from a .ckpt written by causaldreamer.train (e.g. another one in its checkpoints/ folder)"
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a truncated one has no directory
        raise UserError(f"checkpoint {path} is truncated or not a checkpoint (no zip archive); {fix}")
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise UserError(f"checkpoint {path} is corrupt ({err or type(err).__name__}); {fix}") from None
    if damaged is not None:
        raise UserError(f"checkpoint {path} is corrupt (checksum mismatch in {damaged}); {fix}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = next((line for line in lines if "GLOBAL" in line), lines[0] if lines else type(err).__name__)
        raise UserError(
            f"checkpoint {path} cannot be loaded as plain weights ({detail.rstrip('.')}): it is corrupt "
            f"or asks to run code; {fix}"
        ) from None
    if not isinstance(checkpoint, dict):
        raise UserError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a checkpoint; {fix}")
    return checkpoint


def check_adapter_dim(checkpoint: dict[str, Any], dim: int, path: str | Path) -> None:
    """A UserError unless the checkpoint holds a causal adapter for ``dim``-d encoder embeddings."""
    weight = checkpoint.get("state_dict", {}).get(ADAPTER_DIM_KEY)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise UserError(
            f"checkpoint {path} holds no causal adapter ({ADAPTER_DIM_KEY} missing); "
            "resume from a .ckpt written by causaldreamer.train"
        )
    if weight.shape[1] != dim:
        raise UserError(
            f"the checkpoint's adapter is {weight.shape[1]}-d but the configured encoder gives {dim}-d; "
            "resume with the encoder it was trained with"
        )


def wandb_run_id(checkpoint: dict[str, Any]) -> str | None:
    """The W&B run a checkpoint was logged to, so that resuming continues that run."""
    return (checkpoint.get(RESUME_KEY) or {}).get("wandb_run_id")

"""Training checkpoints: written atomically, read weights-only, checked before a resumed run writes anything.

Lightning's own save goes through a temporary file in the system temp folder and a move; when that folder
is on another filesystem the move is a copy, and a kill during the copy leaves half a checkpoint.
``AtomicCheckpointIO`` writes beside the target and swaps the file in whole with ``os.replace``.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from causaldreamer.errors import UserError
from causaldreamer.io import atomic_path

ADAPTER_DIM_KEY = "adapter.relation.weight"  # [3, d]: its second dimension is the encoder's


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint, loaded weights-only (no pickled code runs); a UserError names a file that is
    corrupt, truncated, or holds objects other than tensors and plain values."""
    fix = "resume from a .ckpt written by causaldreamer.train (e.g. another one in its checkpoints/ folder)"
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a truncated one has no directory
        raise UserError(f"checkpoint {path} is truncated or not a checkpoint (no zip archive); {fix}")
    try:  # torch.load does not check the archive's CRCs: a flipped byte would load silently
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

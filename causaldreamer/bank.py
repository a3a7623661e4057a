"""The effect bank: every unique effect text with its embedding in the adapter's encoder space.

It travels inside an exported adapter folder (``effect_bank.safetensors``) so that generation and
evaluation need the adapter folder alone, not the training data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from causaldreamer.errors import UserError
from causaldreamer.io import atomic_path

BANK_FILE = "effect_bank.safetensors"


@dataclass
class EffectBank:
    texts: list[str]
    embeddings: torch.Tensor  # [N, d], unit norm
    encoder: str  # encoder identity the embeddings come from

    def __post_init__(self):
        if len(self.texts) != self.embeddings.shape[0]:
            raise ValueError(f"{len(self.texts)} texts but {self.embeddings.shape[0]} embeddings")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / BANK_FILE
        with atomic_path(path) as tmp:
            save_file(
                {"embeddings": self.embeddings.contiguous()},
                str(tmp),
                metadata={"texts": json.dumps(self.texts), "encoder": self.encoder},
            )
        return path

    @classmethod
    def load(cls, folder: str | Path) -> EffectBank:
        path = Path(folder) / BANK_FILE
        if not path.is_file():
            raise UserError(
                f"no effect bank at {path}; pass an adapter folder exported by causaldreamer.train"
            )
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata()
            tensors = load_file(str(path))
            return cls(json.loads(metadata["texts"]), tensors["embeddings"], metadata["encoder"])
        except (SafetensorError, OSError, KeyError, ValueError, json.JSONDecodeError) as err:
            raise UserError(
                f"effect bank {path} is corrupt or truncated ({err}); export the adapter again"
            ) from None

"""An exported adapter folder: config.json + model.safetensors (the adapter) + effect_bank.safetensors.

Generation needs nothing else from training. Checksums of both weight files go into every record, so a
sequence can be traced back to the exact adapter that made it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError

from causaldreamer.adapter import CausalAdapter
from causaldreamer.bank import BANK_FILE, EffectBank
from causaldreamer.errors import UserError

ADAPTER_FILE = "model.safetensors"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class AdapterFolder:
    path: Path
    adapter: CausalAdapter
    bank: EffectBank
    adapter_sha256: str
    bank_sha256: str


def load_adapter_folder(path: str | Path | None) -> AdapterFolder:
    """The adapter in eval mode and its effect bank; a UserError names what is missing."""
    if path is None or not str(path).strip():
        raise UserError("no adapter given; pass adapter=PATH, a folder exported by causaldreamer.train")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise UserError(
            f"adapter folder {folder} not found; pass adapter=PATH, a folder exported by causaldreamer.train"
        )
    for name in ("config.json", ADAPTER_FILE):
        if not (folder / name).is_file():
            raise UserError(f"adapter folder {folder} has no {name}; export the adapter again")
    try:
        adapter = CausalAdapter.from_pretrained(folder)
    except (SafetensorError, OSError, ValueError, TypeError, RuntimeError) as err:
        reason = str(err).splitlines()[0] if str(err) else ""
        raise UserError(
            f"adapter in {folder} cannot be loaded ({type(err).__name__}: {reason}); export it again"
        ) from None
    bank = EffectBank.load(folder)
    if bank.dim != adapter.dim:
        raise UserError(
            f"effect bank in {folder} has d={bank.dim} but the adapter d={adapter.dim}; export the adapter again"
        )
    return AdapterFolder(
        path=folder.resolve(),
        adapter=adapter.eval(),
        bank=bank,
        adapter_sha256=file_sha256(folder / ADAPTER_FILE),
        bank_sha256=file_sha256(folder / BANK_FILE),
    )

"""An exported adapter: config.json + model.safetensors (the adapter) + effect_bank.safetensors + README.md,
in a local folder or a Hugging Face Hub repository.

Generation needs nothing else from training: the adapter also carries the lambda and prompt template it
was trained with, which generation uses unless a setting overrides them (``GenerationSettings.for_adapter``). Checksums of both weight files
go into every record, so a sequence can be traced back to the exact adapter that made it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub.constants import CONFIG_NAME, SAFETENSORS_SINGLE_FILE
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError

from causaldreamer.adapter import CausalAdapter, local_folder
from causaldreamer.bank import BANK_FILE, EffectBank
from causaldreamer.errors import UserError

WHERE = "pass adapter=PATH (a folder exported by causaldreamer.train) or a hub id (owner/name)"


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
        raise UserError(f"no adapter given; {WHERE}")
    folder = find_folder(path)
    for name in (CONFIG_NAME, SAFETENSORS_SINGLE_FILE, BANK_FILE):
        if not (folder / name).is_file():
            raise UserError(f"adapter folder {folder} has no {name}; export the adapter again")
    try:
        adapter = CausalAdapter.from_pretrained(folder)
    except (SafetensorError, OSError, ValueError, TypeError, RuntimeError) as err:
        reason = str(err).splitlines()[0] if str(err) else ""
        raise UserError(
            f"adapter in {folder} cannot be loaded ({type(err).__name__}: {reason}); export it again"
        ) from None
    bank = adapter.bank
    if bank.dim != adapter.dim:
        raise UserError(
            f"effect bank in {folder} has d={bank.dim} but the adapter d={adapter.dim}; export the adapter again"
        )
    return AdapterFolder(
        path=folder.resolve(),
        adapter=adapter.eval(),
        bank=bank,
        adapter_sha256=file_sha256(folder / SAFETENSORS_SINGLE_FILE),
        bank_sha256=file_sha256(folder / BANK_FILE),
    )


def find_folder(path: str | Path) -> Path:
    """A local folder, or the snapshot of a hub repository (downloaded into the HF cache, or read from it
    alone with HF_HUB_OFFLINE=1)."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    try:
        validate_repo_id(str(path))
    except HFValidationError:
        raise UserError(f"adapter folder {folder} not found; {WHERE}") from None
    try:
        return local_folder(str(path))
    except OSError as err:  # every hub error is one: offline, not found, gated, unreachable
        reason = str(err).splitlines()[0] if str(err) else ""
        raise UserError(
            f"adapter {path} is not a local folder and could not be fetched from the Hugging Face Hub "
            f"({type(err).__name__}: {reason}); {WHERE}"
        ) from None

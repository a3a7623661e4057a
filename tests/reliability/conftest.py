"""Fixtures of the reliability suite: a slice of the real CausalLite10K and adapter folders."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from causaldreamer.adapter import CausalAdapter
from causaldreamer.bank import EffectBank
from causaldreamer.data.files import COUNTERFACTUAL_FILE, PAIRS_FILE, SPLIT_FILES

SLICE_ROWS = 1000


@pytest.fixture(scope="session")
def slice_dir(tmp_path_factory, data_dir) -> Path:
    """The first 1,000 rows of the real CausalLite10K, the official splits restricted to them: the same
    files and code paths with an effect bank of ~900 effects instead of 5,131, so that a cold embedding
    cache builds in seconds. No SHA256SUMS: it is a user's own dataset, checked by its content alone."""
    folder = tmp_path_factory.mktemp("causallite-slice")
    with open(data_dir / PAIRS_FILE, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[: SLICE_ROWS + 1]
    with open(folder / PAIRS_FILE, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)
    for name in SPLIT_FILES.values():
        kept = [token for token in (data_dir / name).read_text().split() if int(token) < SLICE_ROWS]
        (folder / name).write_text("\n".join(kept) + "\n")
    shutil.copy(data_dir / COUNTERFACTUAL_FILE, folder / COUNTERFACTUAL_FILE)
    return folder


def write_adapter_folder(folder: Path, dim: int, encoder_identity: str, effects: list[str]) -> Path:
    """The layout causaldreamer.train exports: config.json, model.safetensors, effect_bank.safetensors."""
    CausalAdapter(dim=dim, encoder_name=encoder_identity).save_pretrained(folder)
    embeddings = F.normalize(
        torch.randn(len(effects), dim, generator=torch.Generator().manual_seed(0)), dim=-1
    )
    EffectBank(effects, embeddings, encoder_identity).save(folder)
    return folder


@pytest.fixture(scope="session")
def adapter_dir(tmp_path_factory, minilm) -> Path:
    """An adapter folder for the default encoder (MiniLM, d=384), with a small effect bank."""
    effects = [f"effect number {i}" for i in range(32)]
    return write_adapter_folder(tmp_path_factory.mktemp("adapter"), minilm.dim, minilm.identity, effects)


@pytest.fixture(scope="session")
def clip_adapter_dir(tmp_path_factory) -> Path:
    """An adapter folder made for a 768-d encoder (CLIP ViT-L/14), to be refused next to MiniLM."""
    effects = [f"effect number {i}" for i in range(32)]
    return write_adapter_folder(
        tmp_path_factory.mktemp("clip-adapter"), 768, "clip-vit-large-patch14-768", effects
    )

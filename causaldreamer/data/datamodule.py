"""LightningDataModule serving cause-effect pairs as cached tensors (DESIGN 2, 3, 6.1).

Every text is encoded once into the embedding cache in ``setup``; batches are gathered from tensors,
so the training loop never tokenizes or runs the encoder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from causaldreamer.adapter import LINK_TYPES
from causaldreamer.bank import EffectBank
from causaldreamer.data.embedding_cache import EmbeddingCache, TokenStates
from causaldreamer.data.files import CausalPairs, fetch_dataset, load_dataset
from causaldreamer.encoders import TextEncoder
from causaldreamer.errors import UserError
from causaldreamer.prompts import DEFAULT_TEMPLATE

log = logging.getLogger(__name__)


class PairBatches(Dataset):
    """Rows of cached tensors; ``__getitems__`` gathers a whole batch with one index per tensor."""

    def __init__(self, tensors: dict[str, torch.Tensor], free_cause_prob: float = 0.0, seed: int = 0):
        self.tensors, self.free_cause_prob, self.seed = tensors, free_cause_prob, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.tensors["effect_id"])

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices)
        batch = {
            key: value.index_select(0, index) for key, value in self.tensors.items() if key != "free_cause"
        }
        if "free_cause" in self.tensors:
            # Per-row coin flip from (seed, epoch, rows): reproducible, also after a resume.
            generator = torch.Generator().manual_seed(hash((self.seed, self.epoch, index[0].item())) % 2**62)
            use_free = torch.rand(len(index), generator=generator) < self.free_cause_prob
            batch["cause"] = torch.where(
                use_free[:, None], self.tensors["free_cause"].index_select(0, index), batch["cause"]
            )
        if "token_states" in batch:
            batch["token_states"] = batch["token_states"].float()
        return batch

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([i]).items()}


class EpochShuffle(Sampler[int]):
    """A permutation drawn from (seed, epoch): the same order whether a run was resumed or not."""

    def __init__(self, dataset: PairBatches, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = self.dataset.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(len(self.dataset), generator=generator).tolist())


def _collate(batch):
    return batch  # __getitems__ already returns the batch as tensors


class CausalPairsDataModule(L.LightningDataModule):
    def __init__(
        self,
        data_dir: str,
        cache_dir: str,
        encoder: TextEncoder,
        batch_size: int = 32,
        eval_batch_size: int = 1024,
        template: str = DEFAULT_TEMPLATE,
        free_cause_prob: float = 0.5,
        gate_tokens: bool = True,
        download: bool = True,
        limit_train: int | None = None,
        limit_eval: int | None = None,
        seed: int = 42,
    ):
        super().__init__()
        if int(batch_size) < 1:
            raise UserError(f"data.batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= float(free_cause_prob) <= 1.0:
            raise UserError(f"data.free_cause_prob must be in [0, 1], got {free_cause_prob}")
        self.data_dir, self.cache_dir, self.encoder = Path(data_dir), Path(cache_dir), encoder
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.template, self.free_cause_prob, self.gate_tokens = template, free_cause_prob, gate_tokens
        self.download, self.seed = download, seed
        self.limit_train, self.limit_eval = limit_train, limit_eval
        self.pairs: CausalPairs | None = None
        self.bank: EffectBank | None = None
        self.datasets: dict[str, PairBatches] = {}
        self.seen_effects: torch.Tensor | None = None  # [N_bank] bool, effect occurs in train

    def prepare_data(self) -> None:
        fetch_dataset(self.data_dir, download=self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.pairs = load_dataset(self.data_dir)
        rows, splits = self.pairs.rows, dict(self.pairs.splits)
        if self.limit_train:
            splits["train"] = splits["train"][: self.limit_train]
        if self.limit_eval:
            splits = {k: v[: self.limit_eval] if k != "train" else v for k, v in splits.items()}
        cache = EmbeddingCache(self.cache_dir, self.encoder)
        # The bank holds every unique effect of the whole table, in first-appearance order.
        effects = list(dict.fromkeys(rows["effect"]))
        self.bank = EffectBank(effects, cache.sentences(effects), self.encoder.identity)
        effect_id = {text: i for i, text in enumerate(effects)}
        self.seen_effects = torch.zeros(len(effects), dtype=torch.bool)
        self.seen_effects[[effect_id[e] for e in rows["effect"].iloc[self.pairs.splits["train"]]]] = True
        for split, indices in splits.items():
            part = rows.iloc[indices]
            tensors = {
                "cause": cache.sentences(part["cause"].tolist()),
                "effect": self.bank.embeddings[[effect_id[e] for e in part["effect"]]],
                "effect_id": torch.tensor([effect_id[e] for e in part["effect"]]),
                "link_type": torch.tensor([LINK_TYPES.index(t) for t in part["link_type"]]),
            }
            if split == "train":
                if self.free_cause_prob > 0:
                    tensors["free_cause"] = cache.sentences(part["free_cause"].tolist())
                if self.gate_tokens:
                    tokens: TokenStates = cache.prompt_tokens(
                        self.template, list(zip(part["cause"], part["effect"], strict=True))
                    )
                    tensors["token_states"], tensors["token_spans"] = tokens.states, tokens.span_ids
            self.datasets[split] = PairBatches(
                tensors, self.free_cause_prob if split == "train" else 0, self.seed
            )
        log.info(
            "CausalLite10K: %s rows, effect bank of %d, %d effects seen in train",
            {k: len(v) for k, v in self.datasets.items()},
            len(effects),
            int(self.seen_effects.sum()),
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets["train"]
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=EpochShuffle(dataset, self.seed),
            collate_fn=_collate,
            drop_last=len(dataset) > self.batch_size,
        )

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=self.eval_batch_size, collate_fn=_collate)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

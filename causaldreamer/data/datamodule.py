"""LightningDataModule serving cause-effect pairs as cached tensors (DESIGN 2, 3, 6.1).

Every text is encoded once into the embedding cache in ``setup``; batches are gathered from tensors,
so the training loop never tokenizes or runs the encoder. CausalLite10K is the primary source; e-CARE
(``ecare_dir``) adds a free-form validation set and, with ``ecare_batch_size`` > 0, training pairs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from causaldreamer.adapter import LINK_TYPES
from causaldreamer.bank import EffectBank
from causaldreamer.data.ecare import ECARE_FILE, fetch_ecare, load_ecare, split_by_premise
from causaldreamer.data.embedding_cache import PAD_SPAN, EmbeddingCache, pad_dim1
from causaldreamer.data.files import CausalPairs, fetch_dataset, load_dataset
from causaldreamer.encoders import TextEncoder
from causaldreamer.errors import UserError
from causaldreamer.prompts import DEFAULT_TEMPLATE

log = logging.getLogger(__name__)

SOURCES = ("causallite10k", "ecare")  # a training row's ``source`` is its index here


class PairBatches(Dataset):
    """Rows of cached tensors; ``__getitems__`` gathers a whole batch with one index per tensor.

    A row may hold a second view of its cause (``free_cause``, with ``free_token_*`` states) that
    replaces the terse one with probability ``free_cause_prob``, token states included, so the gate
    loss sees the cause the row used. ``mixed`` adds ``mixed_per_batch`` rows of another source to every
    batch, drawn at random: mixing adds rows to each step, not steps to the epoch.

    The two views are stacked once, here (rows ``len(self)`` on are the free views, token tensors padded
    to a common length), so a batch takes each row's view with one ``index_select`` per tensor instead of
    gathering both and choosing: the batches are the same, at a fraction of the per-step host work.
    """

    VIEWED = ("cause", "token_states", "token_spans")  # the tensors that differ between the two views

    def __init__(
        self,
        tensors: dict[str, torch.Tensor],
        free_cause_prob: float = 0.0,
        seed: int = 0,
        mixed: PairBatches | None = None,
        mixed_per_batch: int = 0,
    ):
        self.tensors, self.free_cause_prob, self.seed = tensors, free_cause_prob, seed
        self.mixed, self.mixed_per_batch = mixed, mixed_per_batch
        self.epoch = 0
        self.two_views = "free_cause" in tensors
        # The gather tables: each viewed tensor (both views stacked when there are two), the others as
        # they are, and each row's token count (the batch keeps its longest row's length).
        views = [{key[len("free_") :]: v for key, v in tensors.items() if key.startswith("free_")}]
        views.insert(0, {key: tensors[key] for key in self.VIEWED if key in tensors})
        self.table = {key: v for key, v in tensors.items() if not key.startswith("free_")}
        if self.two_views:
            for key in views[0]:
                parts = [view[key] for view in views]
                if key.startswith("token_"):
                    length = max(part.shape[1] for part in parts)
                    fill = PAD_SPAN if key == "token_spans" else 0
                    parts = [pad_dim1(part, length, fill) for part in parts]
                self.table[key] = torch.cat(parts)
            # The stacked tables replace both views' own (the token states are most of the memory).
            self.tensors = {
                key: v for key, v in tensors.items() if key in self.table and key not in self.VIEWED
            }
            self.tensors["cause"] = tensors["cause"]
        if "token_spans" in self.table:
            self.token_count = (self.table["token_spans"] != PAD_SPAN).sum(dim=1)

    def __len__(self) -> int:
        return len(self.tensors["effect_id"])

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices)
        # Draws from (seed, epoch, rows): reproducible, also after a resume.
        generator = torch.Generator().manual_seed(hash((self.seed, self.epoch, int(indices[0]))) % 2**62)
        rows = index
        if self.two_views:
            use_free = torch.rand(len(index), generator=generator) < self.free_cause_prob
            rows = index + len(self) * use_free  # the free view's row where drawn
        parts = [(self, index, rows)]
        if self.mixed is not None:
            other = torch.randint(len(self.mixed), (self.mixed_per_batch,), generator=generator)
            parts.append((self.mixed, other, other))
        batch = {
            key: _cat(
                [part.table[key].index_select(0, r if key in self.VIEWED else i) for part, i, r in parts]
            )
            for key in self.table
            if not key.startswith("token_")
        }
        if "token_states" in self.table:
            batch["token_states"], batch["token_spans"] = _gather_tokens(parts)
        return batch

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([i]).items()}


def _cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def _gather_tokens(parts: list[tuple[PairBatches, torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
    """Token states (float32) and span ids of the rows of each (dataset, index, rows) part, cut to the
    batch's longest row and padded (states 0, spans PAD_SPAN) where a part's table is narrower."""
    length = max(int(part.token_count.index_select(0, rows).max()) for part, _, rows in parts)
    gathered = [
        (
            part.table["token_states"][:, :length].index_select(0, rows),
            part.table["token_spans"][:, :length].index_select(0, rows),
        )
        for part, _, rows in parts
    ]
    if len(gathered) == 1:
        return gathered[0][0].float(), gathered[0][1]
    count, dim = sum(len(spans) for _, spans in gathered), gathered[0][0].shape[2]
    states = torch.zeros(count, length, dim)
    spans = torch.full((count, length), PAD_SPAN, dtype=gathered[0][1].dtype)
    first = 0
    for part_states, part_spans in gathered:
        rows, width = part_spans.shape
        states[first : first + rows, :width] = part_states
        spans[first : first + rows, :width] = part_spans
        first += rows
    return states, spans


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
        ecare_dir: str | None = None,
        ecare_val_fraction: float = 0.1,
        ecare_split_seed: int = 0,
        ecare_batch_size: int = 0,
    ):
        super().__init__()
        if int(batch_size) < 1:
            raise UserError(f"data.batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= float(free_cause_prob) <= 1.0:
            raise UserError(f"data.free_cause_prob must be in [0, 1], got {free_cause_prob}")
        if not 0.0 < float(ecare_val_fraction) < 1.0:
            raise UserError(f"data.ecare_val_fraction must be in (0, 1), got {ecare_val_fraction}")
        if int(ecare_batch_size) < 0:
            raise UserError(f"data.ecare_batch_size must be >= 0, got {ecare_batch_size}")
        if ecare_batch_size and not ecare_dir:
            raise UserError("data.ecare_batch_size > 0 trains on e-CARE, which needs data.ecare_dir; set it")
        self.data_dir, self.cache_dir, self.encoder = Path(data_dir), Path(cache_dir), encoder
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.template, self.free_cause_prob, self.gate_tokens = template, free_cause_prob, gate_tokens
        self.download, self.seed = download, seed
        self.limit_train, self.limit_eval = limit_train, limit_eval
        self.ecare_dir = Path(ecare_dir) if ecare_dir else None
        self.ecare_val_fraction, self.ecare_split_seed = float(ecare_val_fraction), int(ecare_split_seed)
        self.ecare_batch_size = int(ecare_batch_size)
        self.pairs: CausalPairs | None = None
        self.bank: EffectBank | None = None  # CausalLite10K's effects: val/test ranking and generation
        self.effects: EffectBank | None = None  # the bank's effects, then e-CARE's trained on
        self.effect_source: torch.Tensor | None = None  # [N_effects] index into SOURCES
        self.seen_effects: torch.Tensor | None = None  # [N_effects] bool, effect of a row trained on
        self.ecare_bank: torch.Tensor | None = None  # [M, d] the e-CARE validation effects
        self.datasets: dict[str, PairBatches] = {}

    def prepare_data(self) -> None:
        fetch_dataset(self.data_dir, download=self.download)
        if self.ecare_dir:
            fetch_ecare(self.ecare_dir, download=self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.pairs = load_dataset(self.data_dir)
        rows, splits = self.pairs.rows, self.pairs.splits
        parts = {name: rows.iloc[self._limited(name, indices)] for name, indices in splits.items()}
        ecare = self._ecare_parts()
        cache = EmbeddingCache(self.cache_dir, self.encoder)
        trained_on = [parts["train"]] + ([ecare["train"]] if self.ecare_batch_size else [])
        effect_id = self._index_effects(cache, trained_on)
        mixed = None
        if self.ecare_batch_size:
            mixed = PairBatches(self._pair_tensors(cache, ecare["train"], effect_id, source=1, train=True))
        train = self._pair_tensors(cache, parts.pop("train"), effect_id, source=0, train=True)
        self.datasets["train"] = PairBatches(
            train, self.free_cause_prob, self.seed, mixed, self.ecare_batch_size
        )
        for split, part in parts.items():
            tensors = self._pair_tensors(cache, part, effect_id, source=0, train=False)
            self.datasets[split] = PairBatches(tensors | {"row": torch.arange(len(part))})
        if ecare:
            self.datasets["ecare_val"] = self._free_form_validation(cache, ecare["val"])
        log.info(
            "rows %s; effect bank of %d; %d effects trained on (%d of e-CARE); %d e-CARE rows in each batch",
            {k: len(v) for k, v in self.datasets.items()},
            len(self.bank),
            int(self.seen_effects.sum()),
            int(self.seen_effects[self.effect_source == 1].sum()),
            self.ecare_batch_size,
        )

    def _index_effects(self, cache: EmbeddingCache, trained_on: list[pd.DataFrame]) -> dict[str, int]:
        """The bank (every unique CausalLite10K effect, in first-appearance order: val/test ranking and
        generation), the effect table (the bank, then e-CARE's effects trained on), each effect's source
        and whether a row trained on has it; returns each effect text's index in the table."""
        bank_texts = list(dict.fromkeys(self.pairs.rows["effect"]))
        self.bank = EffectBank(bank_texts, cache.sentences(bank_texts), self.encoder.identity)
        known = set(bank_texts)
        extra = list(dict.fromkeys(e for frame in trained_on[1:] for e in frame["effect"] if e not in known))
        embeddings = (
            torch.cat([self.bank.embeddings, cache.sentences(extra)]) if extra else self.bank.embeddings
        )
        self.effects = EffectBank(bank_texts + extra, embeddings, self.encoder.identity)
        self.effect_source = torch.tensor([0] * len(bank_texts) + [1] * len(extra))
        effect_id = {text: i for i, text in enumerate(self.effects.texts)}
        self.seen_effects = torch.zeros(len(effect_id), dtype=torch.bool)
        self.seen_effects[[effect_id[e] for frame in trained_on for e in frame["effect"]]] = True
        return effect_id

    def _limited(self, split: str, indices):
        limit = self.limit_train if split == "train" else self.limit_eval
        return indices[:limit] if limit else indices

    def _ecare_parts(self) -> dict[str, pd.DataFrame]:
        """e-CARE's rows split by premise into train and val (``ecare_val_fraction`` of the premises,
        drawn with ``ecare_split_seed``), each limited like CausalLite10K's splits; {} without e-CARE."""
        if not self.ecare_dir:
            return {}
        frame = load_ecare(self.ecare_dir / ECARE_FILE)
        split = split_by_premise(frame, self.ecare_val_fraction, self.ecare_split_seed)
        return {name: frame.iloc[self._limited(name, indices)] for name, indices in split.items()}

    def _pair_tensors(self, cache, part: pd.DataFrame, effect_id: dict, source: int, train: bool) -> dict:
        """Tensors of (cause, effect) rows; training rows add the free-form view and the token states."""
        ids = [effect_id[e] for e in part["effect"]]
        link = part["link_type"] if "link_type" in part else ["causal"] * len(part)  # e-CARE's are causal
        tensors = {
            "cause": cache.sentences(part["cause"].tolist()),
            "effect": self.effects.embeddings[ids],
            "effect_id": torch.tensor(ids),
            "link_type": torch.tensor([LINK_TYPES.index(t) for t in link]),
        }
        if not train:
            return tensors
        tensors["source"] = torch.full((len(part),), source)
        views = [("", part["cause"])]
        if "free_cause" in part and self.free_cause_prob > 0:
            tensors["free_cause"] = cache.sentences(part["free_cause"].tolist())
            views.append(("free_", part["free_cause"]))
        if self.gate_tokens:
            for prefix, causes in views:
                tokens = cache.prompt_tokens(self.template, list(zip(causes, part["effect"], strict=True)))
                tensors[f"{prefix}token_states"] = tokens.states
                tensors[f"{prefix}token_spans"] = tokens.span_ids
        return tensors

    def _free_form_validation(self, cache, part: pd.DataFrame) -> PairBatches:
        """e-CARE's val rows: the right and the wrong pair; ``effect_id`` indexes ``ecare_bank``, every
        unique effect of these rows, which retrieval ranks against."""
        texts = list(dict.fromkeys(part["effect"]))
        self.ecare_bank = cache.sentences(texts)
        index = {text: i for i, text in enumerate(texts)}
        ids = torch.tensor([index[e] for e in part["effect"]])
        return PairBatches(
            {
                "cause": cache.sentences(part["cause"].tolist()),
                "effect": self.ecare_bank[ids],
                "effect_id": ids,
                "wrong_cause": cache.sentences(part["wrong_cause"].tolist()),
                "wrong_effect": cache.sentences(part["wrong_effect"].tolist()),
                "link_type": torch.full((len(part),), LINK_TYPES.index("causal")),
                "row": torch.arange(len(part)),
            }
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

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """CausalLite10K's val split; with e-CARE, its val part as the second loader (index 1)."""
        if "ecare_val" not in self.datasets:
            return self._eval_loader("val")
        return [self._eval_loader("val"), self._eval_loader("ecare_val")]

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

"""Recall@k and MRR of the gold effect ranked against the whole effect bank (DESIGN 7, text side).

rank = 1 + the number of bank effects scored strictly higher than the gold one (cosine). Ranking against
the whole bank, not the batch, keeps numbers comparable between runs and batch sizes. Results are split
into rows whose gold effect was seen in training and rows whose gold effect never was.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


class BankRetrieval(Metric):
    full_state_update = False

    def __init__(self, ks: tuple[int, ...] = (1, 5, 10), **kwargs):
        super().__init__(**kwargs)
        self.ks = tuple(ks)
        self.add_state("ranks", default=[], dist_reduce_fx="cat")
        self.add_state("seen", default=[], dist_reduce_fx="cat")

    def update(self, query: torch.Tensor, bank: torch.Tensor, gold: torch.Tensor, seen: torch.Tensor) -> None:
        """query [B,d] and bank [N,d] unit norm; gold [B] bank index; seen [B] bool."""
        scores = query @ bank.T
        gold_scores = scores.gather(1, gold[:, None])
        self.ranks.append((scores > gold_scores).sum(dim=1) + 1)
        self.seen.append(seen.bool())

    def compute(self) -> dict[str, torch.Tensor]:
        ranks, seen = dim_zero_cat(self.ranks).float(), dim_zero_cat(self.seen)
        out = {}
        for part, mask in (("", torch.ones_like(seen)), ("seen/", seen), ("unseen/", ~seen)):
            if not mask.any():
                continue
            part_ranks = ranks[mask]
            for k in self.ks:
                out[f"{part}recall@{k}"] = (part_ranks <= k).float().mean()
            out[f"{part}mrr"] = (1.0 / part_ranks).mean()
        return out

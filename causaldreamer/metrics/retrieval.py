"""Recall@k and MRR of the gold effect ranked against a whole effect bank, and two-choice accuracy
(DESIGN 7, text side; definitions in docs/metrics.md).

rank = the number of bank effects scored at least as high as the gold one (cosine), the gold included:
pessimistic on ties, so a constant e_hat ranks last, not first. A non-finite score counts as the lowest
there is, so a NaN e_hat ranks last too and a diverged epoch can never look best. Ranking against the
whole bank, not the batch, keeps numbers comparable between runs and batch sizes. Rows carry their
dataset row index: under DDP the distributed sampler repeats rows to even out the processes, and each
row is counted once.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def finite_or_lowest(scores: torch.Tensor) -> torch.Tensor:
    """NaN and +-inf become -inf, the lowest score."""
    return scores.masked_fill(~torch.isfinite(scores), float("-inf"))


def gold_ranks(scores: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """scores [B,N], gold [B] column index: 1-based pessimistic ranks [B]."""
    scores = finite_or_lowest(scores)
    return (scores >= scores.gather(1, gold[:, None])).sum(dim=1)


def counted_once(rows: torch.Tensor) -> torch.Tensor:
    """Positions that keep the first occurrence of each row index (-1: a row without index, always kept)."""
    order = torch.argsort(rows, stable=True)
    ordered = rows[order]
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[1:] = ordered[1:] != ordered[:-1]
    keep = torch.zeros_like(first)
    keep[order] = first | (ordered < 0)
    return keep


def _row_index(rows: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.full((len(like),), -1, dtype=torch.long, device=like.device) if rows is None else rows.long()


class BankRetrieval(Metric):
    """Ranks of the gold effect; with ``by_seen``, also split into rows whose gold effect was seen in
    training (``seen/``) and rows whose gold effect never was (``unseen/``)."""

    full_state_update = False

    def __init__(self, ks: tuple[int, ...] = (1, 5, 10), by_seen: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.ks, self.by_seen = tuple(ks), by_seen
        self.add_state("ranks", default=[], dist_reduce_fx="cat")
        self.add_state("seen", default=[], dist_reduce_fx="cat")
        self.add_state("rows", default=[], dist_reduce_fx="cat")

    def update(
        self,
        query: torch.Tensor,
        bank: torch.Tensor,
        gold: torch.Tensor,
        seen: torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
    ) -> None:
        """query [B,d] and bank [N,d] unit norm; gold [B] bank index; seen [B] bool; rows [B] row index."""
        self.ranks.append(gold_ranks(query @ bank.T, gold))
        self.seen.append(torch.zeros_like(gold, dtype=torch.bool) if seen is None else seen.bool())
        self.rows.append(_row_index(rows, gold))

    def compute(self) -> dict[str, torch.Tensor]:
        keep = counted_once(dim_zero_cat(self.rows))
        ranks, seen = dim_zero_cat(self.ranks).float()[keep], dim_zero_cat(self.seen)[keep]
        parts = (("", torch.ones_like(seen)), ("seen/", seen), ("unseen/", ~seen))
        out = {}
        for part, mask in parts if self.by_seen else parts[:1]:
            if not mask.any():
                continue
            part_ranks = ranks[mask]
            for k in self.ks:
                out[f"{part}recall@{k}"] = (part_ranks <= k).float().mean()
            out[f"{part}mrr"] = (1.0 / part_ranks).mean()
        return out


class TwoChoiceAccuracy(Metric):
    """Share of questions whose right answer scores strictly higher than the wrong one (a tie or a
    non-finite right score is wrong)."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("correct", default=[], dist_reduce_fx="cat")
        self.add_state("rows", default=[], dist_reduce_fx="cat")

    def update(self, right: torch.Tensor, wrong: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """right, wrong [B]: the scores of each question's two answers; rows [B] row index."""
        self.correct.append(finite_or_lowest(right) > finite_or_lowest(wrong))
        self.rows.append(_row_index(rows, right))

    def compute(self) -> dict[str, torch.Tensor]:
        keep = counted_once(dim_zero_cat(self.rows))
        return {"accuracy": dim_zero_cat(self.correct)[keep].float().mean()}

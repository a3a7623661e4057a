"""Counterfactual coverage (DESIGN 7): do a free-form cause's retrieved effects cover its reference effects?

For each reference effect of a cause, take its best cosine (encoder space) to any retrieved effect.
Report the mean over all (cause, reference effect) pairs, and the share of pairs whose best cosine
reaches a threshold (0.7 by default). The metric works on embeddings; ``counterfactual_coverage`` runs
retrieval (causaldreamer.retrieval) for the adapter or the zero-shot baseline and feeds it, and
``coverage_gain`` says whether the adapter's difference from zero-shot is larger than its noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from causaldreamer.adapter import LINK_TYPES, CausalAdapter
from causaldreamer.bank import EffectBank
from causaldreamer.encoders import TextEncoder
from causaldreamer.errors import UserError
from causaldreamer.retrieval import DEFAULT_RETRIEVAL, DEFAULT_TOP_K, retrieve_effects

DEFAULT_THRESHOLD = 0.7


def best_cosines(references: Tensor, retrieved: Tensor) -> Tensor:
    """For each reference effect [R,d], its best cosine to any retrieved effect [K,d]: [R]."""
    return (F.normalize(references.float(), dim=-1) @ F.normalize(retrieved.float(), dim=-1).T).amax(-1)


class CounterfactualCoverage(Metric):
    """Mean best cosine and share of references at or above ``threshold``, over all (cause, reference)
    pairs; states are sums, so a DDP sync is exact."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, **kwargs):
        super().__init__(**kwargs)
        self.threshold = threshold
        self.add_state("best_sum", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("covered", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("pairs", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, references: Tensor, retrieved: Tensor) -> None:
        """One cause: reference effect embeddings [R,d] and retrieved effect embeddings [K,d]."""
        best = best_cosines(references, retrieved)
        self.best_sum += best.sum()
        self.covered += (best >= self.threshold).sum()
        self.pairs += best.numel()

    def compute(self) -> dict[str, Tensor]:
        return {"mean": self.best_sum / self.pairs, "share": self.covered / self.pairs}


def _effect_columns(scenarios: pd.DataFrame) -> list[str]:
    columns = [c for c in scenarios.columns if c.startswith("effect") and c[len("effect") :].isdigit()]
    if "cause" not in scenarios.columns or not columns:
        raise UserError(
            f"scenario table has columns {list(scenarios.columns)}; it needs 'cause' and effect1..effectN "
            "(as test_counterfactual.csv)"
        )
    return sorted(columns, key=lambda c: int(c[len("effect") :]))


def _encode(encoder: TextEncoder, texts: Sequence[str]) -> Tensor:
    """[N,d] embeddings of texts, each unique text encoded once."""
    unique = list(dict.fromkeys(texts))
    size = encoder.batch_size
    embeddings = torch.cat([encoder.encode(unique[i : i + size]) for i in range(0, len(unique), size)])
    index = {text: i for i, text in enumerate(unique)}
    return embeddings[[index[text] for text in texts]]


def _predicted_effects(adapter: CausalAdapter, causes: Tensor) -> Tensor:
    """e_hat of free-form causes (link type "causal"), computed in eval mode; the adapter's mode is kept."""
    was_training = adapter.training
    adapter.eval()
    device = next(adapter.parameters()).device
    link = torch.full((len(causes),), LINK_TYPES.index("causal"), dtype=torch.long, device=device)
    effect_pred = adapter(causes.to(device), link).effect.to(causes.dtype).cpu()
    adapter.train(was_training)
    return effect_pred


@torch.no_grad()
def counterfactual_coverage(
    adapter: CausalAdapter | None,
    encoder: TextEncoder,
    bank: EffectBank,
    scenarios: pd.DataFrame,
    top_k: int = DEFAULT_TOP_K,
    mode: str = DEFAULT_RETRIEVAL,
    threshold: float = DEFAULT_THRESHOLD,
) -> dict:
    """Coverage of each scenario's reference effects by the top_k effects retrieved for its cause.

    adapter None is the zero-shot baseline e_hat = c. Free-form causes take link type "causal". Both
    modes retrieve top_k distinct effects, the ones generation spreads over the frames. Returns mean and share over all
    (cause, reference) pairs, and per_cause: one row per scenario with its number of references, mean,
    share and retrieved texts.
    """
    columns = _effect_columns(scenarios)
    if bank.dim != encoder.dim or (adapter is not None and adapter.dim != encoder.dim):
        raise UserError(
            f"encoder dim {encoder.dim}, bank dim {bank.dim}"
            + ("" if adapter is None else f", adapter dim {adapter.dim}")
            + "; the bank and adapter must come from the same encoder as this run"
        )
    if not 0 < top_k <= len(bank):
        raise UserError(f"top_k={top_k} but the effect bank holds {len(bank)} effects; use 1..{len(bank)}")
    causes = _encode(encoder, scenarios["cause"].tolist())
    effect_pred = causes if adapter is None else _predicted_effects(adapter, causes)
    references = [
        [t for t in (getattr(row, c) for c in columns) if isinstance(t, str)]
        for row in scenarios.itertuples()
    ]
    reference_embeddings = _encode(encoder, [t for texts in references for t in texts]).split(
        [len(texts) for texts in references]
    )
    result = coverage_of_predictions(
        causes, effect_pred, reference_embeddings, bank.embeddings.to(causes.dtype), top_k, mode, threshold
    )
    rows = [
        {
            "cause": cause,
            "references": row["references"],
            "mean": row["mean"],
            "share": row["share"],
            "retrieved": [bank.texts[j] for j in row["picked"]],
        }
        for cause, row in zip(scenarios["cause"], result["per_cause"], strict=True)
    ]
    return {"mean": result["mean"], "share": result["share"], "per_cause": pd.DataFrame(rows)}


@torch.no_grad()
def coverage_of_predictions(
    causes: Tensor,
    effect_pred: Tensor,
    references: Sequence[Tensor],
    bank: Tensor,
    top_k: int = DEFAULT_TOP_K,
    mode: str = DEFAULT_RETRIEVAL,
    threshold: float = DEFAULT_THRESHOLD,
) -> dict:
    """Coverage from embeddings: causes and predicted effects [N,d], each cause's references [R_i,d], the
    bank [M,d]. Any predictor of e_hat can be scored this way. Returns mean and share over all pairs, and
    per_cause: each cause's picked bank indices, number of references, mean and share."""
    # Every process that calls this scores all the causes itself: nothing to sync (after a DDP predict the
    # process group is still up, and a sync would wait for processes that never compute coverage).
    metric, per_cause = CounterfactualCoverage(threshold, sync_on_compute=False), []
    for cause, predicted, reference in zip(causes, effect_pred, references, strict=True):
        picked = retrieve_effects(cause, predicted, bank, top_k, mode)[0]
        values = metric(reference, bank[picked])  # this cause's values; the totals accumulate
        per_cause.append(
            {
                "picked": picked,
                "references": len(reference),
                "mean": values["mean"].item(),
                "share": values["share"].item(),
            }
        )
    result = metric.compute()
    return {"mean": result["mean"].item(), "share": result["share"].item(), "per_cause": per_cause}


@torch.no_grad()
def coverage_against_zero_shot(
    adapter: CausalAdapter,
    encoder: TextEncoder,
    bank: EffectBank,
    scenarios: pd.DataFrame,
    modes: Sequence[str],
    top_k: int = DEFAULT_TOP_K,
    threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, dict]:
    """``counterfactual_coverage`` of the adapter in each retrieval mode (keyed by mode), each with its
    ``coverage_gain`` over zero-shot merged in, and of zero-shot itself (key "zero_shot"; with e_hat = c
    both modes retrieve the same effects, so it is computed once)."""
    zero_shot = counterfactual_coverage(None, encoder, bank, scenarios, top_k, "topk", threshold)
    results = {}
    for mode in modes:
        result = counterfactual_coverage(adapter, encoder, bank, scenarios, top_k, mode, threshold)
        results[mode] = result | coverage_gain(result["per_cause"], zero_shot["per_cause"])
    return results | {"zero_shot": zero_shot}


def coverage_gain(adapter: pd.DataFrame, zero_shot: pd.DataFrame) -> dict[str, float]:
    """Adapter minus zero-shot coverage on the same scenarios (two ``per_cause`` tables), paired by cause.

    gain: the difference of the two pair-level means (each cause weighs by its number of references).
    gain_se: its standard error with causes as the sampled units (a cause's references are not
    independent draws): sqrt(N/(N-1) * sum_i n_i^2 (d_i - gain)^2) / sum_i n_i, with d_i the difference
    of cause i's means and n_i its references; with equal n_i it is std(d) / sqrt(N).
    wins / losses: causes whose own mean rose / fell.
    """
    if list(adapter["cause"]) != list(zero_shot["cause"]):
        raise ValueError("coverage_gain pairs causes: both tables must hold the same scenarios in order")
    diff = torch.tensor((adapter["mean"] - zero_shot["mean"]).to_numpy(), dtype=torch.float64)
    weight = torch.tensor(adapter["references"].to_numpy(), dtype=torch.float64)
    gain = (weight * diff).sum() / weight.sum()
    n = len(diff)
    spread = (weight**2 * (diff - gain) ** 2).sum() * n / (n - 1) if n > 1 else torch.tensor(float("nan"))
    return {
        "gain": gain.item(),
        "gain_se": (spread.sqrt() / weight.sum()).item(),
        "wins": int((diff > 0).sum()),
        "losses": int((diff < 0).sum()),
    }

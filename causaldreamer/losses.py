"""Training losses on cached embeddings (DESIGN 6.1).

Written for the step's cost as well as its value (docs/training.md, "Speed"): no boolean indexing or
host reads where a weight or a mask does the same; the bank softmax's matmuls in their fastest layout
(``bank_logits``); the gate loss's single query attends through
``intervention.intervention_attention``. tests/test_train.py checks the losses and gradients of a whole
step against a plain transcription of DESIGN 6.1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from causaldreamer.adapter import AdapterOutput
from causaldreamer.data.embedding_cache import PAD_SPAN
from causaldreamer.intervention import SPAN_NONE, intervention_attention


def delta_loss(out: AdapterOutput, cause: torch.Tensor, effect: torch.Tensor) -> torch.Tensor:
    """L_delta = MSE(D, e - c)."""
    return F.mse_loss(out.delta, effect - cause)


def same_effect(effect_id: torch.Tensor) -> torch.Tensor:
    """[B, B] bool: rows i and j share an effect text (each other's positives, never negatives)."""
    return effect_id[:, None] == effect_id[None, :]


def triplet_loss(
    effect_pred: torch.Tensor,
    effect: torch.Tensor,
    effect_id: torch.Tensor,
    margin: float,
    same: torch.Tensor | None = None,
) -> torch.Tensor:
    """relu(margin - <e_hat, e> + <e_hat, e_neg>), e_neg the hardest in-batch effect with other text.

    The mean over the rows that have such an effect (0 when none has), as a weighted sum: no boolean
    indexing, so no host read. ``same``: ``same_effect(effect_id)``, if the caller has it.
    """
    same = same_effect(effect_id) if same is None else same
    sims = effect_pred @ effect.T
    hardest = sims.masked_fill(same, float("-inf")).amax(dim=1)  # -inf on a row without a negative
    valid = (~same).any(dim=1).to(sims.dtype)
    loss = F.relu(margin - sims.diagonal() + hardest)  # relu(-inf) = 0 on those rows, gradient 0
    return (loss * (valid / valid.sum().clamp(min=1))).sum()


def multi_positive_info_nce(
    query: torch.Tensor, keys: torch.Tensor, positives: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """-log(sum over positives / sum over all) of softmax(scale * <q, k>); positives [B, N] bool.

    Rows that share an effect text are all positives, so a duplicate is never pushed away as a negative.
    """
    logits = logit_scale * (query @ keys.T)
    return (
        torch.logsumexp(logits, dim=1) - torch.logsumexp(logits.masked_fill(~positives, -1e4), dim=1)
    ).mean()


class _BankLogits(torch.autograd.Function):
    """query @ bank.T computed as (bank @ query.T).T, the faster of the two on this CPU (about 150 against
    120 GFLOP/s at [32, 384] x [384, 4369], one thread); backward grad @ bank. The bank is a constant:
    no gradient for it."""

    @staticmethod
    def forward(ctx, query: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(bank)
        return (bank @ query.T).T

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (bank,) = ctx.saved_tensors
        return grad @ bank, None


def bank_logits(query: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """query [B, d] @ bank [N, d].T, the logits [B, N] of the bank softmax before its scale."""
    if bank.requires_grad:
        return query @ bank.T
    return _BankLogits.apply(query, bank)


def retrieval_loss(
    effect_pred: torch.Tensor,
    effect: torch.Tensor,
    effect_id: torch.Tensor,
    logit_scale: torch.Tensor,
    bank: torch.Tensor | None = None,
    same: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE of e_hat against the in-batch effects, or, with ``bank``, softmax over that bank.

    With a bank, ``effect_id`` indexes its rows. The trainer passes the effects seen in training only,
    so no validation or test effect shapes the loss. The scale multiplies e_hat [B, d] rather than the
    logits [B, N]: the same logits, N/d times fewer multiplications forward and backward.
    """
    if bank is None:
        positives = same_effect(effect_id) if same is None else same
        return multi_positive_info_nce(effect_pred, effect, positives, logit_scale)
    return F.cross_entropy(bank_logits(logit_scale * effect_pred, bank), effect_id)


def per_source_bank_loss(
    effect_pred: torch.Tensor,
    rows: torch.Tensor,
    source: torch.Tensor,
    logit_scale: torch.Tensor,
    bank: torch.Tensor,
    bounds: list[int],
) -> torch.Tensor:
    """The bank softmax with each row ranked against its own source's effects only: source s owns
    ``bank[bounds[s]:bounds[s + 1]]``, ``rows`` index the whole bank. The mean over all rows, equal to
    masking the other sources' logits, at the cost of each source's own bank: no logit of another
    source's effect is computed.

    Rows grouped by source (as the datamodule's mixed batches are: CausalLite10K's, then e-CARE's) are
    sliced; otherwise they are put in that order first. One host read per call: each source's row count.
    """
    sources = len(bounds) - 1
    # Each source's row count and whether the rows come grouped by source, in one host read.
    stats = torch.cat([torch.bincount(source, minlength=sources), (source.diff() < 0).sum().reshape(1)])
    *counts, disorder = stats.tolist()
    if disorder:
        order = torch.argsort(source, stable=True)
        effect_pred, rows = effect_pred[order], rows[order]
    query = logit_scale * effect_pred
    total, first = effect_pred.new_zeros(()), 0
    for index, count in enumerate(counts):
        if count:
            start, end = bounds[index], bounds[index + 1]
            logits = bank_logits(query[first : first + count], bank[start:end])
            total = total + F.cross_entropy(logits, rows[first : first + count] - start, reduction="sum")
            first += count
    return total / len(rows)


def gate_readout(
    out: AdapterOutput, token_states: torch.Tensor, token_spans: torch.Tensor, lam: float
) -> torch.Tensor:
    """The text-side intervention: e_hat attends over the composed prompt's token states.

    The query is e_hat, keys and values are E's token states, heads split d into H parts, and the
    attention is the very function the UNet's intervention uses (progression weight 1), in its
    single-row form. Returns z [B, d].
    """
    batch, length, dim = token_states.shape
    heads = out.q_gate.shape[1]
    # [B,H,1,Dh] with plain strides, and the keys [B,H,L,Dh] contiguous: both matmuls then take BLAS's
    # batched path (a transposed view costs a copy per head and row, most of the loss's time).
    query = out.effect.view(batch, heads, 1, dim // heads)
    keys = token_states.view(batch, length, heads, dim // heads).transpose(1, 2).contiguous()
    padding = token_spans == PAD_SPAN
    spans = token_spans.masked_fill(padding, SPAN_NONE)
    pad_mask = keys.new_zeros(()).masked_fill(padding[:, None, None, :], float("-inf"))
    z = intervention_attention(
        query, keys, keys, spans, out.q_gate, out.k_gate, out.bias, lam, attn_mask=pad_mask
    )
    return z.view(batch, dim)


def gate_loss(
    out: AdapterOutput,
    token_states: torch.Tensor,
    token_spans: torch.Tensor,
    effect: torch.Tensor,
    effect_id: torch.Tensor,
    lam: float,
    logit_scale: torch.Tensor,
    same: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_gate = InfoNCE(z, e) over the batch: the gates and bias learn through the UNet's intervention."""
    z = F.normalize(gate_readout(out, token_states, token_spans, lam), dim=-1)
    positives = same_effect(effect_id) if same is None else same
    return multi_positive_info_nce(z, effect, positives, logit_scale)

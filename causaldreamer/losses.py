"""Training losses on cached embeddings (DESIGN 6.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from causaldreamer.adapter import AdapterOutput
from causaldreamer.data.embedding_cache import PAD_SPAN
from causaldreamer.intervention import SPAN_NONE, intervention_attention


def delta_loss(out: AdapterOutput, cause: torch.Tensor, effect: torch.Tensor) -> torch.Tensor:
    """L_delta = MSE(D, e - c)."""
    return F.mse_loss(out.delta, effect - cause)


def triplet_loss(
    effect_pred: torch.Tensor, effect: torch.Tensor, effect_id: torch.Tensor, margin: float
) -> torch.Tensor:
    """relu(margin - <e_hat, e> + <e_hat, e_neg>), e_neg the hardest in-batch effect with other text."""
    sims = effect_pred @ effect.T
    other = effect_id[:, None] != effect_id[None, :]
    hardest = sims.masked_fill(~other, float("-inf")).amax(dim=1)
    valid = other.any(dim=1)
    loss = F.relu(margin - sims.diagonal() + hardest)
    return loss[valid].mean() if valid.any() else sims.new_zeros(())


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


def retrieval_loss(
    effect_pred: torch.Tensor,
    effect: torch.Tensor,
    effect_id: torch.Tensor,
    logit_scale: torch.Tensor,
    bank: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE of e_hat against the in-batch effects, or, with ``bank``, softmax over that bank.

    With a bank, ``effect_id`` indexes its rows. The trainer passes the effects seen in training only,
    so no validation or test effect shapes the loss.
    """
    if bank is None:
        return multi_positive_info_nce(
            effect_pred, effect, effect_id[:, None] == effect_id[None, :], logit_scale
        )
    return F.cross_entropy(logit_scale * (effect_pred @ bank.T), effect_id)


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
    masking the other sources' logits, at the cost of each source's own bank."""
    total = effect_pred.new_zeros(())
    for index, (start, end) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        own = source == index
        if own.any():
            logits = logit_scale * (effect_pred[own] @ bank[start:end].T)
            total = total + F.cross_entropy(logits, rows[own] - start, reduction="sum")
    return total / len(rows)


def gate_readout(
    out: AdapterOutput, token_states: torch.Tensor, token_spans: torch.Tensor, lam: float
) -> torch.Tensor:
    """The text-side intervention: e_hat attends over the composed prompt's token states.

    The query is e_hat, keys and values are E's token states, heads split d into H parts, and the
    attention is the very function the UNet runs (progression weight 1). Returns z [B, d].
    """
    batch, length, dim = token_states.shape
    heads = out.q_gate.shape[1]
    query = out.effect.view(batch, 1, heads, dim // heads).transpose(1, 2)
    keys = token_states.view(batch, length, heads, dim // heads).transpose(1, 2)
    padding = token_spans == PAD_SPAN
    spans = token_spans.masked_fill(padding, SPAN_NONE)
    pad_mask = torch.zeros(batch, 1, 1, length, dtype=token_states.dtype, device=token_states.device)
    pad_mask = pad_mask.masked_fill(padding[:, None, None, :], float("-inf"))
    z = intervention_attention(
        query, keys, keys, spans, out.q_gate, out.k_gate, out.bias, lam, attn_mask=pad_mask
    )
    return z.transpose(1, 2).reshape(batch, dim)


def gate_loss(
    out: AdapterOutput,
    token_states: torch.Tensor,
    token_spans: torch.Tensor,
    effect: torch.Tensor,
    effect_id: torch.Tensor,
    lam: float,
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """L_gate = InfoNCE(z, e) over the batch: the gates and bias learn through the UNet's code path."""
    z = F.normalize(gate_readout(out, token_states, token_spans, lam), dim=-1)
    return multi_positive_info_nce(z, effect, effect_id[:, None] == effect_id[None, :], logit_scale)

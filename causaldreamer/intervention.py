"""Causal intervention attention (DESIGN 5): the one function shared by training and the UNet.

    logits[b,h,i,j] = q_gate[b,h] * k_gate[b,h,s(j)] * <Q_i, K_j> / sqrt(Dh) + exp(lam) * a_b * bias[b,h,s(j)]

Gates and bias do not depend on the query position i, so the gates fold into the rows of K and the bias
into a float mask of shape [B,H,1,Nk]: one fused ``scaled_dot_product_attention`` call, no [Nq x Nk]
tensor built here. For one query row (training's text side, DESIGN 6.1) the same per-key scale and bias
are applied to that row's logits instead of the keys, which is cheaper there and equal.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SPAN_NONE, SPAN_CAUSE, SPAN_EFFECT = 0, 1, 2
NUM_SPANS = 2  # cause, effect


def intervention_key_scale_and_bias(
    span_ids: torch.Tensor,
    q_gate: torch.Tensor,
    k_gate: torch.Tensor,
    bias: torch.Tensor,
    lam: float,
    progress: torch.Tensor | float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-key scale [B,H,Nk] and additive logit bias [B,H,Nk] of the intervention.

    span_ids [B,Nk] (or [Nk]) in {0 none, 1 cause, 2 effect}; q_gate [B,H]; k_gate and bias [B,H,2];
    progress [B] or a float: the frame's progression weight a (DESIGN 6.3).
    """
    batch, heads = q_gate.shape
    span_ids = span_ids.expand(batch, -1) if span_ids.dim() == 1 else span_ids
    # Span 0 ("none") gets gate 1 and bias 0: prepend them so a gather by span id does the lookup.
    k_gate = torch.cat([k_gate.new_ones(batch, heads, 1), k_gate], dim=-1)
    bias = torch.cat([bias.new_zeros(batch, heads, 1), bias], dim=-1)
    index = span_ids[:, None, :].expand(batch, heads, -1)
    key_scale = q_gate[..., None] * torch.gather(k_gate, 2, index)
    progress = torch.as_tensor(progress, dtype=bias.dtype, device=bias.device).reshape(-1, 1, 1)
    logit_bias = math.exp(lam) * progress * torch.gather(bias, 2, index)
    return key_scale, logit_bias


def intervention_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    span_ids: torch.Tensor,
    q_gate: torch.Tensor,
    k_gate: torch.Tensor,
    bias: torch.Tensor,
    lam: float,
    progress: torch.Tensor | float = 1.0,
    attn_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal intervention attention through one ``scaled_dot_product_attention`` call.

    query [B,H,Nq,Dh], key/value [B,H,Nk,Dh]; attn_mask, optional, is an extra additive float mask
    broadcastable to [B,H,Nq,Nk] (e.g. -inf on padding keys). Returns [B,H,Nq,Dh]. One query row (the
    gate loss's) takes the equal single-row form; the UNet's processors call ``scaled_key_attention``.
    """
    key_scale, logit_bias = intervention_key_scale_and_bias(span_ids, q_gate, k_gate, bias, lam, progress)
    attend = _single_row_attention if query.shape[-2] == 1 else scaled_key_attention
    return attend(query, key, value, key_scale, logit_bias, attn_mask)


def scaled_key_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The one SDPA call of the intervention, from its per-key scale and logit bias [B,H,Nk].

    Split from ``intervention_attention`` so the UNet's processors can compute the scale and bias once per
    sequence and reuse them at every layer and step.
    """
    mask = logit_bias[:, :, None, :].to(query.dtype)
    if attn_mask is not None:
        mask = mask + attn_mask
    return F.scaled_dot_product_attention(
        query, key * key_scale[..., None].to(key.dtype), value, attn_mask=mask
    )


def _single_row_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The same attention for one query row (Nq = 1, training's text side): the scale and bias applied
    to the row of logits [B,H,1,Nk] rather than to the keys [B,H,Nk,Dh]. That row is Dh times smaller,
    and SDPA's CPU math path (taken whenever the mask needs a gradient, as the bias does) costs about
    5x more in training. Equal within float rounding (tests/test_losses_and_metrics.py)."""
    scores = torch.matmul(query, key.transpose(-1, -2))  # [B,H,1,Nk]
    logits = torch.addcmul(
        logit_bias[:, :, None, :], scores, key_scale[:, :, None, :], value=query.shape[-1] ** -0.5
    )
    if attn_mask is not None:
        logits = logits + attn_mask
    return torch.matmul(logits.softmax(dim=-1), value)

"""Attention processors that put the causal intervention (DESIGN 5, 6.4) into a diffusers UNet.

Cross-attention (``attn2``) layers get ``CausalInterventionAttnProcessor``: the conditional rows of the
batch attend through the intervention function (its key scale and logit bias computed once per
sequence, then one SDPA call per layer), the unconditional half of classifier-free guidance
through the same call with gates 1 and bias 0, which is exactly diffusers' ``AttnProcessor2_0``.
Self-attention (``attn1``) layers stay stock unless shared frame-0 attention is asked for.
All per-sequence inputs live in one ``SequenceAttentionState`` that every processor of the UNet shares,
so they are set once per sequence and reused at every layer and denoising step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from causaldreamer.errors import UserError
from causaldreamer.intervention import (
    NUM_SPANS,
    SPAN_NONE,
    intervention_key_scale_and_bias,
    scaled_key_attention,
)


@dataclass
class CrossAttentionIntervention:
    """Intervention inputs, one row per frame: span ids [T,Nk], q_gate [T,H], k_gate/bias [T,H,2],
    progression weights [T], and the strength lambda."""

    span_ids: torch.Tensor
    q_gate: torch.Tensor
    k_gate: torch.Tensor
    bias: torch.Tensor
    progress: torch.Tensor
    lam: float

    @property
    def num_frames(self) -> int:
        return self.span_ids.shape[0]

    @classmethod
    def neutral(
        cls, batch_size: int, num_keys: int, num_heads: int, device: torch.device
    ) -> CrossAttentionIntervention:
        """Gates 1, bias 0, no spans: attention exactly as without intervention."""
        return cls(
            span_ids=torch.full((batch_size, num_keys), SPAN_NONE, dtype=torch.long, device=device),
            q_gate=torch.ones(batch_size, num_heads, device=device),
            k_gate=torch.ones(batch_size, num_heads, NUM_SPANS, device=device),
            bias=torch.zeros(batch_size, num_heads, NUM_SPANS, device=device),
            progress=torch.zeros(batch_size, device=device),
            lam=0.0,
        )

    def with_unconditional_half(self) -> CrossAttentionIntervention:
        """Rows for a classifier-free-guidance batch [uncond; cond]: the unconditional half is neutral."""
        num_heads = self.q_gate.shape[1]
        uncond = self.neutral(self.num_frames, self.span_ids.shape[1], num_heads, self.span_ids.device)
        return CrossAttentionIntervention(
            span_ids=torch.cat([uncond.span_ids, self.span_ids]),
            q_gate=torch.cat([uncond.q_gate, self.q_gate]),
            k_gate=torch.cat([uncond.k_gate, self.k_gate]),
            bias=torch.cat([uncond.bias, self.bias]),
            progress=torch.cat([uncond.progress, self.progress]),
            lam=self.lam,
        )


class SequenceAttentionState:
    """What the processors of one UNet read during a sequence: its frame count and intervention."""

    def __init__(self):
        self.num_frames = 1
        self._intervention: CrossAttentionIntervention | None = None
        self._key_scales: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def set_sequence(self, num_frames: int, intervention: CrossAttentionIntervention | None) -> None:
        if intervention is not None and intervention.num_frames != num_frames:
            raise ValueError(f"intervention has {intervention.num_frames} rows for {num_frames} frames")
        self.num_frames, self._intervention = num_frames, intervention
        self._key_scales.clear()

    def clear(self) -> None:
        """Back to stock attention."""
        self.set_sequence(1, None)

    def key_scale_and_bias(
        self, batch_size: int, num_keys: int, num_heads: int, device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The intervention's per-key scale and logit bias [B,H,Nk] for a UNet batch of T rows (no
        guidance) or 2T rows [uncond; cond]; computed once per sequence, since every layer at every step
        asks for the same."""
        cache_key = (batch_size, num_keys, num_heads)
        if cache_key not in self._key_scales:
            rows = self._build_rows(batch_size, num_keys, num_heads, device)
            self._key_scales[cache_key] = intervention_key_scale_and_bias(
                rows.span_ids, rows.q_gate, rows.k_gate, rows.bias, rows.lam, rows.progress
            )
        return self._key_scales[cache_key]

    def _build_rows(self, batch_size, num_keys, num_heads, device) -> CrossAttentionIntervention:
        state = self._intervention
        if state is None:
            return CrossAttentionIntervention.neutral(batch_size, num_keys, num_heads, device)
        if state.span_ids.shape[1] != num_keys or state.q_gate.shape[1] != num_heads:
            raise ValueError(
                f"intervention set for {state.span_ids.shape[1]} text tokens and {state.q_gate.shape[1]} heads, "
                f"but this cross-attention layer has {num_keys} and {num_heads}"
            )
        if batch_size == state.num_frames:
            return state
        if batch_size == 2 * state.num_frames:
            return state.with_unconditional_half()
        raise ValueError(
            f"intervention set for {state.num_frames} frames, but the UNet batch has {batch_size} rows "
            "(expected T, or 2T under classifier-free guidance)"
        )


class _FusedAttnProcessor:
    """``AttnProcessor2_0``'s projections and output path, step for step; subclasses change only the
    attention itself (``attend``), so with neutral inputs they compute exactly what it computes."""

    def __init__(self, state: SequenceAttentionState):
        self.state = state

    def attend(self, query, key, value, attention_mask) -> torch.Tensor:
        raise NotImplementedError

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        hidden_states = self.attend(query, key, value, attention_mask)

        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class CausalInterventionAttnProcessor(_FusedAttnProcessor):
    """Cross-attention through the intervention (``intervention.scaled_key_attention``): one fused SDPA call
    for the whole batch, with the scale and bias the shared state computed once for the sequence."""

    def attend(self, query, key, value, attention_mask) -> torch.Tensor:
        batch_size, num_heads, num_keys = key.shape[0], key.shape[1], key.shape[2]
        key_scale, logit_bias = self.state.key_scale_and_bias(batch_size, num_keys, num_heads, key.device)
        return scaled_key_attention(query, key, value, key_scale, logit_bias, attn_mask=attention_mask)


class SharedFrameAttnProcessor(_FusedAttnProcessor):
    """Self-attention where every frame also attends to frame 0's keys and values (identity sharing).

    The batch holds G groups of T frames each ([uncond; cond] under guidance); each group shares its own
    frame 0. Frame 0 sees its own keys twice, which leaves its softmax output unchanged.
    """

    def attend(self, query, key, value, attention_mask) -> torch.Tensor:
        if attention_mask is not None:
            raise ValueError("shared frame-0 self-attention does not take an attention mask")
        num_frames = self.state.num_frames
        batch_size = key.shape[0]
        if batch_size % num_frames:
            raise ValueError(f"UNet batch of {batch_size} rows is not a multiple of {num_frames} frames")
        groups = batch_size // num_frames

        def with_first_frame(x: torch.Tensor) -> torch.Tensor:
            first = x.unflatten(0, (groups, num_frames))[:, :1].expand(-1, num_frames, -1, -1, -1)
            return torch.cat([x, first.flatten(0, 1)], dim=2)

        return F.scaled_dot_product_attention(query, with_first_frame(key), with_first_frame(value))


def install_causal_processors(
    unet, num_heads: int, share_first_frame: bool = False
) -> SequenceAttentionState:
    """Give every cross-attention layer of ``unet`` an intervention processor (and, optionally, every
    self-attention layer the shared frame-0 one); other processors stay as they are, except that a
    shared frame-0 one left by an earlier install goes back to stock. Returns the state the new
    processors share."""
    state = SequenceAttentionState()
    processors = {}
    for name, processor in unet.attn_processors.items():
        if name.endswith("attn2.processor"):
            heads = unet.get_submodule(name.removesuffix(".processor")).heads
            if heads != num_heads:
                raise UserError(
                    f"the adapter has {num_heads} attention heads but the UNet's cross-attention layer {name} "
                    f"has {heads}; use an adapter trained with num_heads={heads}"
                )
            processors[name] = CausalInterventionAttnProcessor(state)
        elif share_first_frame and name.endswith("attn1.processor"):
            processors[name] = SharedFrameAttnProcessor(state)
        elif isinstance(processor, SharedFrameAttnProcessor):
            processors[name] = AttnProcessor2_0()
        else:
            processors[name] = processor
    if not any(isinstance(p, CausalInterventionAttnProcessor) for p in processors.values()):
        raise UserError("the UNet has no cross-attention (attn2) layers to intervene on")
    unet.set_attn_processor(processors)
    return state

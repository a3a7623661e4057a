"""Attention processors that put the causal intervention (DESIGN 5, 6.4) into a diffusers UNet.

The per-sequence inputs travel with each pipeline call, as diffusers' ``cross_attention_kwargs``
(``{"sequence": SequenceAttention(...)}``), so the installed processors hold no state: generators that
share one pipeline cannot see each other's intervention, and a call without the argument is stock
attention. Cross-attention (``attn2``) layers get ``CausalInterventionAttnProcessor``: the conditional
rows attend through the intervention function (its key scale and logit bias computed once per call, then
one SDPA call per layer), the unconditional half of classifier-free guidance with gates 1 and bias 0,
which is exactly diffusers' ``AttnProcessor2_0``. Self-attention (``attn1``) layers get
``SharedFrameAttnProcessor``, stock unless the call asks for shared frame-0 attention; it is installed
so that every layer accepts the argument (diffusers warns about processors that do not).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

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

    def frame(self, f: int) -> CrossAttentionIntervention:
        """Frame f's row alone, for a pipeline call that renders one frame."""
        one = slice(f, f + 1)
        return replace(
            self,
            span_ids=self.span_ids[one],
            q_gate=self.q_gate[one],
            k_gate=self.k_gate[one],
            bias=self.bias[one],
            progress=self.progress[one],
        )

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


@dataclass
class SequenceAttention:
    """What the processors read during one pipeline call: its frame count, its intervention (None: stock
    cross-attention) and whether self-attention shares frame 0. Made per call, never shared between
    calls; it keeps the key scale and bias it computes, since every layer at every step asks for the
    same."""

    num_frames: int
    intervention: CrossAttentionIntervention | None = None
    share_first_frame: bool = False
    _key_scales: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.intervention is not None and self.intervention.num_frames != self.num_frames:
            raise ValueError(
                f"intervention has {self.intervention.num_frames} rows for {self.num_frames} frames"
            )

    def key_scale_and_bias(
        self, batch_size: int, num_keys: int, num_heads: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The intervention's per-key scale and logit bias [B,H,Nk] for a UNet batch of T rows (no
        guidance) or 2T rows [uncond; cond]."""
        cache_key = (batch_size, num_keys, num_heads)
        if cache_key not in self._key_scales:
            rows = self._rows(batch_size, num_keys, num_heads)
            self._key_scales[cache_key] = intervention_key_scale_and_bias(
                rows.span_ids, rows.q_gate, rows.k_gate, rows.bias, rows.lam, rows.progress
            )
        return self._key_scales[cache_key]

    def _rows(self, batch_size, num_keys, num_heads) -> CrossAttentionIntervention:
        rows = self.intervention
        if rows.span_ids.shape[1] != num_keys or rows.q_gate.shape[1] != num_heads:
            raise ValueError(
                f"intervention set for {rows.span_ids.shape[1]} text tokens and {rows.q_gate.shape[1]} heads, "
                f"but this cross-attention layer has {num_keys} and {num_heads}"
            )
        if batch_size == self.num_frames:
            return rows
        if batch_size == 2 * self.num_frames:
            return rows.with_unconditional_half()
        raise ValueError(
            f"intervention set for {self.num_frames} frames, but the UNet batch has {batch_size} rows "
            "(expected T, or 2T under classifier-free guidance)"
        )


class _FusedAttnProcessor:
    """``AttnProcessor2_0``'s projections and output path, step for step; subclasses change only the
    attention itself (``attend``), so without a ``sequence`` they compute exactly what it computes."""

    def attend(self, query, key, value, attention_mask, sequence: SequenceAttention) -> torch.Tensor:
        raise NotImplementedError

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        sequence: SequenceAttention | None = None,
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

        if sequence is None:
            hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        else:
            hidden_states = self.attend(query, key, value, attention_mask, sequence)

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
    for the whole batch, with the scale and bias the call's ``SequenceAttention`` computed once."""

    def attend(self, query, key, value, attention_mask, sequence: SequenceAttention) -> torch.Tensor:
        if sequence.intervention is None:
            return F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        batch_size, num_heads, num_keys = key.shape[0], key.shape[1], key.shape[2]
        key_scale, logit_bias = sequence.key_scale_and_bias(batch_size, num_keys, num_heads)
        return scaled_key_attention(query, key, value, key_scale, logit_bias, attn_mask=attention_mask)


class SharedFrameAttnProcessor(_FusedAttnProcessor):
    """Self-attention; when the call asks for it, every frame also attends to frame 0's keys and values
    (identity sharing).

    The batch holds G groups of T frames each ([uncond; cond] under guidance); each group shares its own
    frame 0. Frame 0 sees its own keys twice, which leaves its softmax output unchanged.
    """

    def attend(self, query, key, value, attention_mask, sequence: SequenceAttention) -> torch.Tensor:
        if not sequence.share_first_frame:
            return F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        if attention_mask is not None:
            raise ValueError("shared frame-0 self-attention does not take an attention mask")
        num_frames = sequence.num_frames
        batch_size = key.shape[0]
        if batch_size % num_frames:
            raise ValueError(f"UNet batch of {batch_size} rows is not a multiple of {num_frames} frames")
        groups = batch_size // num_frames

        def with_first_frame(x: torch.Tensor) -> torch.Tensor:
            first = x.unflatten(0, (groups, num_frames))[:, :1].expand(-1, num_frames, -1, -1, -1)
            return torch.cat([x, first.flatten(0, 1)], dim=2)

        return F.scaled_dot_product_attention(query, with_first_frame(key), with_first_frame(value))


def install_causal_processors(unet, num_heads: int) -> None:
    """Give every cross-attention layer of ``unet`` the intervention processor and every self-attention
    layer the shared-frame one (other processors stay as they are). The processors hold nothing, so
    installing twice changes nothing and one install serves every generator on the pipeline."""
    processors = {}
    for name, processor in unet.attn_processors.items():
        if name.endswith("attn2.processor"):
            heads = unet.get_submodule(name.removesuffix(".processor")).heads
            if heads != num_heads:
                raise UserError(
                    f"the adapter has {num_heads} attention heads but the UNet's cross-attention layer {name} "
                    f"has {heads}; use an adapter trained with num_heads={heads}"
                )
            processors[name] = CausalInterventionAttnProcessor()
        elif name.endswith("attn1.processor"):
            processors[name] = SharedFrameAttnProcessor()
        else:
            processors[name] = processor
    if not any(isinstance(p, CausalInterventionAttnProcessor) for p in processors.values()):
        raise UserError("the UNet has no cross-attention (attn2) layers to intervene on")
    unet.set_attn_processor(processors)

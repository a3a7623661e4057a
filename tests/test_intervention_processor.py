"""The UNet attention processors against diffusers' own AttnProcessor2_0 and an explicit-softmax reference."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch.overrides import TorchFunctionMode

from causaldreamer.diffusion.processor import (
    CausalInterventionAttnProcessor,
    CrossAttentionIntervention,
    SequenceAttention,
    SharedFrameAttnProcessor,
    install_causal_processors,
)
from causaldreamer.errors import UserError
from causaldreamer.intervention import SPAN_CAUSE, SPAN_EFFECT
from causaldreamer.methods.tiny import tiny_unet

HEADS, DIM_HEAD, QUERY_DIM, TEXT_DIM = 8, 4, 32, 16
FRAMES, NUM_QUERIES, NUM_KEYS = 3, 10, 12
ATOL = 1e-6


class CountSDPA(TorchFunctionMode):
    """Counts fused attention calls (real calls, passed through)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            self.calls += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)


@pytest.fixture
def cross_attention(generator) -> Attention:
    torch.manual_seed(0)
    return Attention(query_dim=QUERY_DIM, cross_attention_dim=TEXT_DIM, heads=HEADS, dim_head=DIM_HEAD).eval()


def frame_inputs(generator, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    hidden = torch.randn(batch, NUM_QUERIES, QUERY_DIM, generator=generator)
    text = torch.randn(batch, NUM_KEYS, TEXT_DIM, generator=generator)
    return hidden, text


def random_intervention(generator, frames: int = FRAMES, lam: float = 0.7) -> CrossAttentionIntervention:
    span_ids = torch.zeros(frames, NUM_KEYS, dtype=torch.long)
    span_ids[:, 1:5] = SPAN_CAUSE
    span_ids[:, 7:10] = SPAN_EFFECT
    return CrossAttentionIntervention(
        span_ids=span_ids,
        q_gate=1 + torch.rand(frames, HEADS, generator=generator) * 0.9,
        k_gate=0.2 + torch.rand(frames, HEADS, 2, generator=generator) * 1.6,
        bias=torch.randn(frames, HEADS, 2, generator=generator),
        progress=torch.arange(1, frames + 1) / frames,
        lam=lam,
    )


def neutral_intervention(frames: int = FRAMES) -> CrossAttentionIntervention:
    """Gates 1 and bias 0, but real spans: the intervention must then change nothing."""
    intervention = random_intervention(torch.Generator().manual_seed(1), frames)
    intervention.q_gate = torch.ones_like(intervention.q_gate)
    intervention.k_gate = torch.ones_like(intervention.k_gate)
    intervention.bias = torch.zeros_like(intervention.bias)
    return intervention


def run(attn: Attention, processor, hidden, text=None, sequence: SequenceAttention | None = None):
    attn.set_processor(processor)
    kwargs = {} if sequence is None else {"sequence": sequence}
    with torch.no_grad():
        return attn(hidden, encoder_hidden_states=text, **kwargs)


def run_causal(attn: Attention, intervention: CrossAttentionIntervention | None, hidden, text):
    sequence = SequenceAttention(FRAMES, intervention)
    return run(attn, CausalInterventionAttnProcessor(), hidden, text, sequence)


def naive_cross_attention(attn: Attention, hidden, text, rows: CrossAttentionIntervention) -> torch.Tensor:
    """DESIGN 5 written out: explicit [Nq x Nk] logits with gates and bias, softmax, then the output proj."""
    batch = hidden.shape[0]
    split = lambda x: x.view(batch, -1, HEADS, DIM_HEAD).transpose(1, 2)  # noqa: E731
    q, k, v = split(attn.to_q(hidden)), split(attn.to_k(text)), split(attn.to_v(text))
    key_gate = torch.ones(batch, HEADS, NUM_KEYS)
    key_bias = torch.zeros(batch, HEADS, NUM_KEYS)
    for span, column in ((SPAN_CAUSE, 0), (SPAN_EFFECT, 1)):
        in_span = (rows.span_ids == span)[:, None, :]
        key_gate = torch.where(in_span, rows.k_gate[:, :, column, None], key_gate)
        key_bias = torch.where(in_span, rows.bias[:, :, column, None], key_bias)
    logits = q @ k.transpose(-1, -2) / math.sqrt(DIM_HEAD)
    logits = rows.q_gate[:, :, None, None] * key_gate[:, :, None, :] * logits
    logits = logits + math.exp(rows.lam) * rows.progress[:, None, None, None] * key_bias[:, :, None, :]
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(batch, -1, HEADS * DIM_HEAD)
    return attn.to_out[1](attn.to_out[0](out))


@pytest.mark.parametrize("batch", [FRAMES, 2 * FRAMES], ids=["no-guidance", "guidance"])
def test_neutral_gates_equal_attn_processor_2_0(cross_attention, generator, batch):
    hidden, text = frame_inputs(generator, batch)
    stock = run(cross_attention, AttnProcessor2_0(), hidden, text)
    for intervention in (neutral_intervention(), None):
        ours = run_causal(cross_attention, intervention, hidden, text)
        torch.testing.assert_close(ours, stock, atol=ATOL, rtol=0)
    without_sequence = run(cross_attention, CausalInterventionAttnProcessor(), hidden, text)
    assert torch.equal(without_sequence, stock)


def test_matches_explicit_softmax_and_leaves_unconditional_half_alone(cross_attention, generator):
    hidden, text = frame_inputs(generator, 2 * FRAMES)
    intervention = random_intervention(generator)
    ours = run_causal(cross_attention, intervention, hidden, text)
    stock = run(cross_attention, AttnProcessor2_0(), hidden, text)
    with torch.no_grad():
        expected = naive_cross_attention(cross_attention, hidden[FRAMES:], text[FRAMES:], intervention)
    torch.testing.assert_close(ours[FRAMES:], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours[:FRAMES], stock[:FRAMES], atol=ATOL, rtol=0)
    assert (ours[FRAMES:] - stock[FRAMES:]).abs().max() > 1e-2


@pytest.mark.parametrize("changed", ["q_gate", "k_gate", "bias"])
def test_each_of_gates_and_bias_changes_the_output(cross_attention, generator, changed):
    hidden, text = frame_inputs(generator, FRAMES)
    intervention = neutral_intervention()
    stock = run_causal(cross_attention, intervention, hidden, text)
    value = getattr(intervention, changed)
    setattr(intervention, changed, value + 0.5)
    moved = run_causal(cross_attention, intervention, hidden, text)
    assert (moved - stock).abs().max() > 1e-3


def test_bias_scales_with_lambda_and_progress(cross_attention, generator):
    hidden, text = frame_inputs(generator, FRAMES)
    intervention = random_intervention(generator, lam=0.0)
    weak = run_causal(cross_attention, intervention, hidden, text)
    intervention.lam = 2.0
    strong = run_causal(cross_attention, intervention, hidden, text)
    assert (weak - strong).abs().max() > 1e-3
    intervention.progress = torch.zeros(FRAMES)
    intervention.q_gate = torch.ones_like(intervention.q_gate)
    intervention.k_gate = torch.ones_like(intervention.k_gate)
    unbiased = run_causal(cross_attention, intervention, hidden, text)
    torch.testing.assert_close(
        unbiased, run(cross_attention, AttnProcessor2_0(), hidden, text), atol=ATOL, rtol=0
    )


def test_one_fused_attention_call_per_layer(cross_attention, generator):
    hidden, text = frame_inputs(generator, 2 * FRAMES)
    sequence = SequenceAttention(FRAMES, random_intervention(generator))
    cross_attention.set_processor(CausalInterventionAttnProcessor())
    with CountSDPA() as counter, torch.no_grad():
        cross_attention(hidden, encoder_hidden_states=text, sequence=sequence)
    assert counter.calls == 1


def test_batch_that_is_not_t_or_2t_is_refused(cross_attention, generator):
    hidden, text = frame_inputs(generator, FRAMES + 1)
    with pytest.raises(ValueError, match="expected T, or 2T"):
        run_causal(cross_attention, random_intervention(generator), hidden, text)


def test_shared_first_frame_self_attention(generator):
    torch.manual_seed(0)
    attn = Attention(query_dim=QUERY_DIM, heads=HEADS, dim_head=DIM_HEAD).eval()
    hidden = torch.randn(2 * FRAMES, NUM_QUERIES, QUERY_DIM, generator=generator)
    stock = run(attn, AttnProcessor2_0(), hidden)
    unshared = run(attn, SharedFrameAttnProcessor(), hidden, sequence=SequenceAttention(FRAMES))
    assert torch.equal(unshared, stock)  # sharing is per call and off unless asked for
    sequence = SequenceAttention(FRAMES, share_first_frame=True)
    shared = run(attn, SharedFrameAttnProcessor(), hidden, sequence=sequence)
    first_frames = [0, FRAMES]  # frame 0 of the unconditional and of the conditional group
    torch.testing.assert_close(shared[first_frames], stock[first_frames], atol=ATOL, rtol=0)
    later = [f for f in range(2 * FRAMES) if f not in first_frames]
    assert (shared[later] - stock[later]).abs().min(dim=-1).values.max() > 1e-4
    # frame f of a group attends its own tokens followed by its group's frame 0
    frame, first = 4, FRAMES
    joint = torch.cat([hidden[frame], hidden[first]])[None]
    with torch.no_grad():
        attn.set_processor(AttnProcessor2_0())
        expected = attn(hidden[frame][None], encoder_hidden_states=joint)
    torch.testing.assert_close(shared[frame][None], expected, atol=ATOL, rtol=0)


@pytest.fixture(scope="module")
def unet():
    return tiny_unet(seed=0).eval()


def unet_inputs(unet, batch: int, num_keys: int = NUM_KEYS):
    generator = torch.Generator().manual_seed(3)
    size = unet.config.sample_size
    sample = torch.randn(batch, 4, size, size, generator=generator)
    text = torch.randn(batch, num_keys, unet.config.cross_attention_dim, generator=generator)
    return sample, torch.tensor(500), text


class WarningsOf(logging.Handler):
    """Collects what diffusers logs (its library logger does not propagate to the root one)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __enter__(self):
        logging.getLogger("diffusers").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("diffusers").removeHandler(self)


def test_installs_stateless_processors_that_read_the_call(unet):
    stock_processors = unet.attn_processors
    sample, timestep, text = unet_inputs(unet, 2 * FRAMES)

    def forward(sequence: SequenceAttention | None = None) -> torch.Tensor:
        kwargs = None if sequence is None else {"sequence": sequence}
        with torch.no_grad():
            return unet(sample, timestep, encoder_hidden_states=text, cross_attention_kwargs=kwargs).sample

    stock = forward()
    install_causal_processors(unet, num_heads=HEADS)
    try:
        installed = unet.attn_processors
        cross = [name for name in installed if name.endswith("attn2.processor")]
        assert cross and all(isinstance(installed[n], CausalInterventionAttnProcessor) for n in cross)
        assert all(isinstance(installed[n], SharedFrameAttnProcessor) for n in installed if n not in cross)
        assert torch.equal(forward(), stock)  # a call without the argument is stock attention

        with WarningsOf() as warnings:
            neutral = forward(SequenceAttention(FRAMES, neutral_intervention()))
            rows = random_intervention(torch.Generator().manual_seed(5), lam=1.5)
            intervened = forward(SequenceAttention(FRAMES, rows))
        assert warnings.messages == []  # every layer's processor takes the argument
        torch.testing.assert_close(neutral, stock, atol=ATOL, rtol=0)
        torch.testing.assert_close(intervened[:FRAMES], stock[:FRAMES], atol=ATOL, rtol=0)
        assert (intervened[FRAMES:] - stock[FRAMES:]).abs().max() > 1e-3
        assert torch.equal(forward(), stock)  # and nothing of the intervention stayed behind
    finally:
        unet.set_attn_processor(stock_processors)


def test_shared_first_frame_is_chosen_per_call(unet):
    stock_processors = unet.attn_processors
    sample, timestep, text = unet_inputs(unet, 2 * FRAMES)
    install_causal_processors(unet, num_heads=HEADS)
    try:
        with torch.no_grad():
            own, shared = (
                unet(
                    sample,
                    timestep,
                    encoder_hidden_states=text,
                    cross_attention_kwargs={"sequence": SequenceAttention(FRAMES, share_first_frame=share)},
                ).sample
                for share in (False, True)
            )
    finally:
        unet.set_attn_processor(stock_processors)
    first_frames = [0, FRAMES]
    torch.testing.assert_close(shared[first_frames], own[first_frames], atol=1e-5, rtol=0)
    later = [f for f in range(2 * FRAMES) if f not in first_frames]
    assert (shared[later] - own[later]).abs().max() > 1e-3


def test_head_count_mismatch_is_a_clear_error(unet):
    with pytest.raises(UserError, match="8"):
        install_causal_processors(unet, num_heads=4)

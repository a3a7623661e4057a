"""The one intervention function (DESIGN 5) against a naive explicit-softmax version."""

import math

import pytest
import torch

from causaldreamer.intervention import intervention_attention


def naive_intervention(q, k, v, span_ids, q_gate, k_gate, bias, lam, progress, attn_mask=None):
    """logits[b,h,i,j] = q_gate[b,h] k_gate[b,h,s(j)] <Q_i,K_j>/sqrt(Dh) + exp(lam) a_b bias[b,h,s(j)], by loops."""
    batch, heads, n_q, dim = q.shape
    n_k = k.shape[2]
    logits = torch.empty(batch, heads, n_q, n_k)
    for b in range(batch):
        for h in range(heads):
            for j in range(n_k):
                span = int(span_ids[b, j])
                gate = q_gate[b, h] * (k_gate[b, h, span - 1] if span else 1.0)
                shift = math.exp(lam) * progress[b] * (bias[b, h, span - 1] if span else 0.0)
                logits[b, h, :, j] = gate * (q[b, h] @ k[b, h, j]) / math.sqrt(dim) + shift
    if attn_mask is not None:
        logits = logits + attn_mask
    return torch.softmax(logits, dim=-1) @ v


def random_inputs(seed=0, batch=3, heads=4, n_q=5, n_k=7, dim=8):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, n, dim, generator=g) for n in (n_q, n_k, n_k))
    span_ids = torch.randint(0, 3, (batch, n_k), generator=g)
    q_gate = 1 + torch.tanh(torch.randn(batch, heads, generator=g))
    k_gate = 1 + torch.tanh(torch.randn(batch, heads, 2, generator=g))
    bias = torch.randn(batch, heads, 2, generator=g)
    progress = torch.rand(batch, generator=g)
    return q, k, v, span_ids, q_gate, k_gate, bias, progress


@pytest.mark.parametrize("lam", [0.0, 0.7, 1.0])
def test_fused_equals_naive_softmax(lam):
    q, k, v, spans, q_gate, k_gate, bias, progress = random_inputs()
    fused = intervention_attention(q, k, v, spans, q_gate, k_gate, bias, lam, progress)
    expected = naive_intervention(q, k, v, spans, q_gate, k_gate, bias, lam, progress)
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=1e-5)


def test_extra_mask_and_shared_span_ids():
    q, k, v, spans, q_gate, k_gate, bias, progress = random_inputs(seed=1)
    mask = torch.zeros(3, 1, 1, 7)
    mask[:, :, :, -2:] = float("-inf")  # padding keys
    shared_spans = spans[0]  # one span layout for the whole batch, as in the UNet
    fused = intervention_attention(q, k, v, shared_spans, q_gate, k_gate, bias, 0.7, progress, attn_mask=mask)
    expected = naive_intervention(
        q, k, v, shared_spans.expand(3, -1), q_gate, k_gate, bias, 0.7, progress, mask
    )
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=1e-5)


def test_neutral_gates_equal_plain_attention():
    q, k, v, spans, *_ = random_inputs(seed=2)
    out = intervention_attention(
        q, k, v, spans, torch.ones(3, 4), torch.ones(3, 4, 2), torch.zeros(3, 4, 2), 0.7
    )
    torch.testing.assert_close(
        out, torch.nn.functional.scaled_dot_product_attention(q, k, v), atol=1e-6, rtol=0
    )


def test_gradients_reach_gates_and_bias():
    q, k, v, spans, q_gate, k_gate, bias, progress = random_inputs(seed=3)
    spans[:, :2] = torch.tensor([1, 2])  # every row has both spans
    params = [t.clone().requires_grad_(True) for t in (q_gate, k_gate, bias)]
    intervention_attention(q, k, v, spans, *params, 0.7, progress).square().sum().backward()
    for name, param in zip(("q_gate", "k_gate", "bias"), params, strict=True):
        assert param.grad is not None and param.grad.abs().sum() > 0, name
        assert torch.isfinite(param.grad).all(), name

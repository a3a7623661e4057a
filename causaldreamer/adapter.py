"""The causal adapter (DESIGN 4): cause embedding + relation -> predicted effect, attention gates and bias.

Saved and loaded as safetensors + config.json through huggingface_hub's PyTorchModelHubMixin, so an
exported adapter is one ``CausalAdapter.from_pretrained(path_or_hub_id)`` away.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from causaldreamer.intervention import NUM_SPANS

LINK_TYPES = ("causal", "inhibits", "enables")


@dataclass
class AdapterOutput:
    context: torch.Tensor  # h [B,d]
    delta: torch.Tensor  # D [B,d], the predicted shift e - c
    effect: torch.Tensor  # e_hat [B,d], unit norm
    q_gate: torch.Tensor  # [B,H] in (0,2)
    k_gate: torch.Tensor  # [B,H,2] in (0,2), spans (cause, effect)
    bias: torch.Tensor  # [B,H,2]


class CausalAdapter(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="causaldreamer",
    tags=["causaldreamer", "causal-adapter"],
):
    """About 1.35M parameters at d=384. Gates start at exactly 1 and bias at 0 (zero-initialised heads),
    so an untrained adapter leaves attention unchanged.

    The ``use_*`` switches are the ablations: off means the component is replaced by its neutral value
    (relation embedding 0, gates 1, bias 0), not merely left untrained.
    """

    def __init__(
        self,
        dim: int = 384,
        hidden_dim: int = 1024,
        num_heads: int = 8,
        dropout: float = 0.1,
        encoder_name: str = "all-MiniLM-L6-v2",
        use_relation: bool = True,
        use_gates: bool = True,
        use_bias: bool = True,
    ):
        super().__init__()
        self.dim, self.num_heads, self.encoder_name = dim, num_heads, encoder_name
        self.use_relation, self.use_gates, self.use_bias = use_relation, use_gates, use_bias
        self.relation = nn.Embedding(len(LINK_TYPES), dim)
        self.context = nn.Sequential(
            nn.LayerNorm(2 * dim),
            nn.Linear(2 * dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, dim),
        )
        self.delta_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))
        self.q_gate = nn.Linear(dim, num_heads)
        self.k_gate = nn.Linear(dim, num_heads * NUM_SPANS)
        self.bias = nn.Linear(dim, num_heads * NUM_SPANS)
        for head in (self.q_gate, self.k_gate, self.bias):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, cause: torch.Tensor, link_type: torch.Tensor) -> AdapterOutput:
        """cause [B,d] (encoder embedding, unit norm), link_type [B] long index into LINK_TYPES."""
        relation = self.relation(link_type)
        if not self.use_relation:
            relation = torch.zeros_like(relation)
        h = self.context(torch.cat([cause, relation], dim=-1))
        delta = self.delta_head(h)
        effect = F.normalize(cause + delta, dim=-1)
        batch, heads = cause.shape[0], self.num_heads
        if self.use_gates:
            q_gate = 1 + torch.tanh(self.q_gate(h))
            k_gate = 1 + torch.tanh(self.k_gate(h)).view(batch, heads, NUM_SPANS)
        else:
            q_gate = h.new_ones(batch, heads)
            k_gate = h.new_ones(batch, heads, NUM_SPANS)
        bias = self.bias(h).view(batch, heads, NUM_SPANS)
        if not self.use_bias:
            bias = torch.zeros_like(bias)
        return AdapterOutput(h, delta, effect, q_gate, k_gate, bias)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

"""The causal adapter (DESIGN 4): cause embedding + relation -> predicted effect, attention gates and bias.

Saved and loaded through huggingface_hub's PyTorchModelHubMixin as one complete unit, everything
generation needs: ``model.safetensors``, ``config.json`` (the architecture, the encoder identity, and the
lambda and prompt template it was trained with), ``effect_bank.safetensors`` and a model card
(``README.md``) with the run's metrics. ``CausalAdapter.from_pretrained(path_or_hub_id)`` loads it back.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard, PyTorchModelHubMixin, snapshot_download
from huggingface_hub.constants import CONFIG_NAME, SAFETENSORS_SINGLE_FILE
from safetensors.torch import load_model
from torch import nn

from causaldreamer.bank import BANK_FILE, EffectBank
from causaldreamer.intervention import NUM_SPANS
from causaldreamer.prompts import DEFAULT_TEMPLATE

log = logging.getLogger(__name__)

LINK_TYPES = ("causal", "inhibits", "enables")
DEFAULT_LAMBDA = 0.7  # DESIGN 6.1; what an adapter folder exported before it recorded its own stands for
CARD_FILE = "README.md"
# What a hub snapshot of an adapter fetches: the unit, never a pickle that happens to lie beside it.
ADAPTER_FILES = (CONFIG_NAME, SAFETENSORS_SINGLE_FILE, BANK_FILE, CARD_FILE)

MODEL_CARD = """---
{{ card_data }}
---

# CausalDreamer causal adapter

Steers Stable Diffusion 1.5's cross-attention so that the frames of one cause show how its effects
unfold. Frozen text encoder: `{{ encoder }}` (d={{ dim }}); {{ parameters }} parameters.

| generation default (trained with) | value |
|---|---|
| lambda (intervention strength) | {{ lam }} |
| prompt template | `{{ template }}` |
| effect bank | {{ bank_size }} effects |

## Training data

CausalLite10K (MIT license): namrata-patel/causal-dreamer at commit
be535e82130b3138bf620cadbc5e7c4623d996b1, folder `data/`.

## Metrics of the training run

{% if metrics %}| metric | value |
|---|---|
{% for name, value in metrics %}| {{ name }} | {{ value }} |
{% endfor %}{% else %}None recorded.
{% endif %}
## Use

```bash
python -m causaldreamer.generate cause="a dog running in a park" adapter=PATH_OR_HUB_ID
```
"""


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
    license="mit",
    model_card_template=MODEL_CARD,
):
    """About 1.35M parameters at d=384. Gates start at exactly 1 and bias at 0 (zero-initialised heads),
    so an untrained adapter leaves attention unchanged.

    The ``use_*`` switches are the ablations: off means the component is replaced by its neutral value
    (relation embedding 0, gates 1, bias 0), not merely left untrained.

    ``lam``, ``template``, ``bank`` and ``metrics`` are not architecture: the trainer's export sets them
    (the run's lambda and template, its effect bank and metrics), so that they travel with the weights.
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
        self.lam, self.template = DEFAULT_LAMBDA, DEFAULT_TEMPLATE
        self.bank: EffectBank | None = None
        self.metrics: dict[str, float] = {}

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

    def _save_pretrained(self, save_directory: Path) -> None:
        """Weights, config.json and the effect bank; the mixin adds the model card (``push_to_hub`` saves
        through here too). config.json is written here because the mixin's holds only the constructor's
        arguments, not the generation defaults."""
        super()._save_pretrained(save_directory)
        config = {
            **self._hub_mixin_config,
            "lam": self.lam,
            "template": self.template,
            "metrics": self.metrics,
        }
        (save_directory / CONFIG_NAME).write_text(json.dumps(config, sort_keys=True, indent=2))
        if self.bank is not None:
            self.bank.save(save_directory)

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        config: dict | None = None,
        map_location: str = "cpu",
        **model_kwargs,
    ) -> CausalAdapter:
        """Every tensor must match (a missing or extra one is an error, not a silently random head); the
        bank and the generation defaults come with the weights."""
        folder = local_folder(
            model_id,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )
        model = cls(**model_kwargs)
        load_model(model, str(folder / SAFETENSORS_SINGLE_FILE), strict=True, device=map_location)
        model.lam, model.template = generation_defaults(config or {}, folder)
        model.metrics = dict((config or {}).get("metrics") or {})
        if (folder / BANK_FILE).is_file():
            model.bank = EffectBank.load(folder)
        return model.eval()

    def generate_model_card(self, *args, **kwargs) -> ModelCard:
        """The mixin's card, filled in with what a user of the adapter needs to know about it."""
        metrics = [
            (name, f"{value:.4f}") for name, value in sorted(self.metrics.items()) if math.isfinite(value)
        ]
        fields = {
            "encoder": self.encoder_name,
            "dim": self.dim,
            "parameters": f"{self.num_parameters:,}",
            "lam": self.lam,
            "template": self.template,
            "bank_size": "no" if self.bank is None else f"{len(self.bank):,}",
            "metrics": metrics,
        }
        return super().generate_model_card(*args, **fields, **kwargs)


def local_folder(name_or_path: str | Path, **hub_options) -> Path:
    """A local folder as it is; otherwise a hub id, fetched by ``snapshot_download`` into the HF cache
    (with ``HF_HUB_OFFLINE=1`` or ``local_files_only=True`` read from the cache alone)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    return Path(
        snapshot_download(repo_id=str(name_or_path), allow_patterns=list(ADAPTER_FILES), **hub_options)
    )


def generation_defaults(config: dict, folder: Path) -> tuple[float, str]:
    """The lambda and template the adapter was trained with; an older export that did not record them
    stands for DESIGN's defaults, said in the log."""
    lam, template = config.get("lam"), config.get("template")
    missing = [key for key, value in (("lam", lam), ("template", template)) if value is None]
    lam = DEFAULT_LAMBDA if lam is None else lam
    template = DEFAULT_TEMPLATE if template is None else template
    if missing:
        log.warning(
            "%s records no %s (exported by an older causaldreamer): using lam=%s, template=%r",
            folder / CONFIG_NAME,
            " or ".join(missing),
            lam,
            template,
        )
    return lam, template

"""CausalDreamer: identity-preserving temporal image generation through causal intervention attention.

The public API, imported on first use (``import causaldreamer`` alone loads neither torch nor diffusers,
so the command-line entry points can check their input first):

    from causaldreamer import CausalAdapter, CausalSequenceGenerator, GenerationSettings, load_adapter_folder
"""

from __future__ import annotations

import importlib
import logging

__version__ = "0.1.0"

# transformers' image processors announce that torchvision is absent at every import; here it is absent
# by design (no CPU build) and the PIL backends they fall back to compute the same features.
logging.getLogger("transformers.utils.import_utils").addFilter(
    lambda record: "requires torchvision" not in record.getMessage()
)

_EXPORTS = {
    "CausalAdapter": "causaldreamer.adapter",
    "LINK_TYPES": "causaldreamer.adapter",
    "EffectBank": "causaldreamer.bank",
    "MiniLMEncoder": "causaldreamer.encoders",
    "CLIPTextEncoder": "causaldreamer.encoders",
    "intervention_attention": "causaldreamer.intervention",
    "retrieve_sequence": "causaldreamer.retrieval",
    "CausalAdapterModule": "causaldreamer.module",
    "CausalPairsDataModule": "causaldreamer.data.datamodule",
    "CausalSequenceGenerator": "causaldreamer.diffusion.pipeline",
    "GenerationSettings": "causaldreamer.diffusion.settings",
    "load_adapter_folder": "causaldreamer.diffusion.adapter_folder",
    "BankRetrieval": "causaldreamer.metrics.retrieval",
    "counterfactual_coverage": "causaldreamer.metrics.coverage",
    "UserError": "causaldreamer.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'causaldreamer' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

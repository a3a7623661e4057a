"""``causaldreamer``: the method itself (DESIGN 6.2-6.5) behind the baselines' interface.

The baselines draw the reference effects they are given; CausalDreamer retrieves and orders its own
effects from its adapter's bank, so the ``effects`` argument is not shown. Each sequence's record says
which effect every frame shows, and the metrics pair each frame with that effect.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image

from causaldreamer.data.embedding_cache import CachedSentences
from causaldreamer.diffusion.adapter_folder import AdapterFolder, load_adapter_folder
from causaldreamer.diffusion.pipeline import CausalSequenceGenerator
from causaldreamer.diffusion.sequence_files import GeneratedSequence
from causaldreamer.diffusion.settings import DEFAULTS, GenerationSettings, check_settings
from causaldreamer.encoders import TextEncoder
from causaldreamer.errors import UserError
from causaldreamer.methods.base import SequenceMethod, pipeline_modules
from causaldreamer.metrics.coverage import DEFAULT_THRESHOLD, coverage_against_zero_shot


class CausalDreamerMethod(SequenceMethod):
    """A ``CausalSequenceGenerator`` (pipeline, adapter folder, encoder) as a ``SequenceMethod``."""

    def __init__(self, generator: CausalSequenceGenerator):
        super().__init__(
            "causaldreamer",
            {
                "pipeline": generator.pipe.name_or_path,
                "encoder": generator.encoder_identity,
                "adapter": str(generator.folder.path),
            },
        )
        self.generator = generator

    def generate(self, cause: str, effects: list[str], seed: int) -> list[Image.Image]:
        return self.generate_sequence(cause, effects, seed).frames

    def frozen_modules(self) -> dict:
        """The adapter and the pipeline's CLIP text encoder, UNet and VAE (and its safety checker, if on)."""
        return {"adapter": self.generator.adapter, **pipeline_modules(self.generator.pipe)}

    def generate_sequence(self, cause: str, effects: list[str], seed: int) -> GeneratedSequence:
        """num_frames frames of the effects the adapter retrieves; ``effects`` (the reference, none in
        ``causaldreamer.generate``) only go into the record, beside them."""
        sequence = self.generator.generate(cause, seed)
        references = {"reference_effects": list(effects)} if effects else {}
        return GeneratedSequence(sequence.frames, {**super().record(), **sequence.record, **references})

    def record(self) -> dict:
        """The method and what every sequence of its generator shares (``shared_record``)."""
        return super().record() | self.generator.shared_record()

    def counterfactual_coverage(self, scenarios: pd.DataFrame, cache_dir: str | Path) -> dict[str, float]:
        """Text side (DESIGN 7) on ``scenarios``: the adapter's top_k effects in both retrieval modes,
        beside zero-shot retrieval (e_hat = c, where both modes pick the same effects), and each mode's paired
        gain over zero-shot with its standard error. The texts are encoded through the embedding cache in
        ``cache_dir``, once for all three."""
        g = self.generator
        results = coverage_against_zero_shot(
            g.folder.adapter,
            CachedSentences(g.encoder, cache_dir),
            g.bank,
            scenarios,
            ("topk", "path"),
            g.settings.top_k,
            DEFAULT_THRESHOLD,
        )
        result = {"coverage_threshold": DEFAULT_THRESHOLD}
        for name, coverage in results.items():
            stats = ("mean", "share") if name == "zero_shot" else ("mean", "share", "gain", "gain_se")
            result |= {f"coverage_{name}_{stat}": coverage[stat] for stat in stats}
        return result


def build_causaldreamer(
    adapter: str | None,
    pipeline: DictConfig,
    encoder: DictConfig,
    settings: DictConfig | GenerationSettings = DEFAULTS,
) -> CausalDreamerMethod:
    """The method from configs (the ``diffusion`` and ``encoder`` groups, the ``generation`` group as
    ``settings``): the adapter folder and the settings are checked first, only then are the pipeline and
    the encoder built."""
    settings = instantiate(settings) if isinstance(settings, DictConfig) else settings
    folder = load_adapter_folder(adapter)
    check_settings(settings, len(folder.bank))
    return causaldreamer_method(folder, settings, pipeline, encoder)


def causaldreamer_method(
    folder: AdapterFolder,
    settings: GenerationSettings,
    pipeline: DictConfig,
    encoder: DictConfig | TextEncoder,
) -> CausalDreamerMethod:
    """The method of settings ``check_settings`` passed: the one place a generator is built from configs
    (generate, evaluate and the studies' scoring, which pass the encoder they trained with)."""
    encoder = encoder if isinstance(encoder, TextEncoder) else instantiate(encoder)
    generator = CausalSequenceGenerator(diffusion_pipeline(pipeline, settings), folder, encoder, settings)
    return CausalDreamerMethod(generator)


def diffusion_pipeline(pipeline: DictConfig, settings: GenerationSettings):
    """The ``diffusion`` group's pipeline with the safety checker as ``settings`` say, no progress bars."""
    if "safety_checker" in pipeline:
        pipe = instantiate(pipeline, safety_checker=settings.safety_checker)
    elif settings.safety_checker:
        raise UserError(
            f"generation.safety_checker=true, but {pipeline.get('_target_')} builds no safety checker "
            "(random weights); drop the setting or use diffusion=sd15"
        )
    else:
        pipe = instantiate(pipeline)
    pipe.set_progress_bar_config(disable=True)
    return pipe

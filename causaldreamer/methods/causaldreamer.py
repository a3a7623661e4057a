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
from causaldreamer.diffusion.adapter_folder import load_adapter_folder
from causaldreamer.diffusion.pipeline import CausalSequenceGenerator
from causaldreamer.diffusion.settings import check_settings
from causaldreamer.methods.base import MethodSequence, SequenceMethod
from causaldreamer.metrics.coverage import DEFAULT_THRESHOLD, coverage_against_zero_shot


class CausalDreamerMethod(SequenceMethod):
    """A ``CausalSequenceGenerator`` (pipeline, adapter folder, encoder) as a ``SequenceMethod``;
    ``settings_record`` is ``AdapterFolder.settings_record`` of the settings it was built with."""

    def __init__(self, generator: CausalSequenceGenerator, settings_record: dict):
        super().__init__(
            "causaldreamer",
            {
                "pipeline": generator.pipe.name_or_path,
                "encoder": generator.encoder_identity,
                "adapter": str(generator.folder.path),
            },
        )
        self.generator = generator
        self.settings_record = settings_record  # where lambda and the template came from

    def generate(self, cause: str, effects: list[str], seed: int) -> list[Image.Image]:
        return self.generate_sequence(cause, effects, seed).frames

    def generate_sequence(self, cause: str, effects: list[str], seed: int) -> MethodSequence:
        """num_frames frames of the effects the adapter retrieves; ``effects`` (the reference) only
        goes into the record, beside them, as does where lambda and the template came from (provenance,
        not a setting: a sequence made at the same values is reused whichever way they were chosen)."""
        sequence = self.generator.generate(cause, seed)
        record = {
            **self.record(),
            **sequence.record,
            **self.settings_record,
            "reference_effects": list(effects),
        }
        return MethodSequence(sequence.frames, record)

    def record(self) -> dict:
        """The settings every sequence of this method shares (the generator's record holds them too)."""
        g = self.generator
        return super().record() | {
            "num_frames": g.num_frames,
            "top_k": g.top_k,
            "lambda": g.lam,
            "retrieval": g.retrieval,
            "link_type": g.link_type,
            "template": g.template,
            "guidance_scale": g.guidance_scale,
            "num_inference_steps": g.num_inference_steps,
            "height": g.height,
            "width": g.width,
            "share_first_frame": g.share_first_frame,
            "progression": g.progression,
            "shared_seed": g.shared_seed,
            "adapter_sha256": g.folder.adapter_sha256,
            "effect_bank_sha256": g.folder.bank_sha256,
        }

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
            g.top_k,
            DEFAULT_THRESHOLD,
        )
        result = {"coverage_threshold": DEFAULT_THRESHOLD}
        for name, coverage in results.items():
            stats = ("mean", "share") if name == "zero_shot" else ("mean", "share", "gain", "gain_se")
            result |= {f"coverage_{name}_{stat}": coverage[stat] for stat in stats}
        return result


def build_causaldreamer(
    adapter: str,
    pipeline: DictConfig,
    encoder: DictConfig,
    safety_checker: bool = False,
    num_frames: int = 8,
    top_k: int = 8,
    lam: float | None = None,
    retrieval: str = "topk",
    link_type: str = "causal",
    template: str | None = None,
    share_first_frame: bool = False,
    progression: bool = True,
    shared_seed: bool = True,
    guidance_scale: float = 7.5,
    num_inference_steps: int = 50,
    height: int | None = None,
    width: int | None = None,
) -> CausalDreamerMethod:
    """The adapter folder and the settings are checked first; only then are the diffusion pipeline and
    the encoder (Hydra configs: the ``diffusion`` and ``encoder`` groups) built. ``lam`` and ``template``
    None: the adapter's own."""
    folder = load_adapter_folder(adapter)
    settings = {
        "num_frames": num_frames,
        "top_k": top_k,
        "retrieval": retrieval,
        "link_type": link_type,
        "guidance_scale": guidance_scale,
        "num_inference_steps": num_inference_steps,
        **folder.generation_settings(lam, template),
    }
    check_settings(bank_size=len(folder.bank), **settings)
    # A blacked-out frame would corrupt the metrics, so, like the baselines, no NSFW checker by default.
    options = {"safety_checker": safety_checker} if "safety_checker" in pipeline else {}
    generator = CausalSequenceGenerator(
        instantiate(pipeline, **options),
        folder,
        instantiate(encoder),
        share_first_frame=share_first_frame,
        progression=progression,
        shared_seed=shared_seed,
        height=height,
        width=width,
        **settings,
    )
    generator.pipe.set_progress_bar_config(disable=True)
    return CausalDreamerMethod(generator, folder.settings_record(lam, template))

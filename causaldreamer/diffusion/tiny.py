"""A Stable Diffusion pipeline with tiny random weights, built from configs (the parts of
``causaldreamer.methods.tiny``, shared with the baselines): the SD 1.5 code path on CPU in seconds, for
tests and smoke runs. Its images are noise."""

from __future__ import annotations

import logging

from diffusers import StableDiffusionPipeline

from causaldreamer.methods.tiny import (
    tiny_clip_text_encoder,
    tiny_clip_tokenizer,
    tiny_ddim_scheduler,
    tiny_unet,
    tiny_vae,
)

log = logging.getLogger(__name__)

TINY_MODEL_ID = "causaldreamer-tiny-random"


def build_tiny_pipeline(seed: int = 0, max_length: int = 128) -> StableDiffusionPipeline:
    """Random weights from ``seed``. Its tokenizer has only a few merges, so words take several tokens
    each: ``max_length`` gives a prompt more room than CLIP's 77."""
    log.warning("diffusion=tiny: random weights, the images are noise (for tests and smoke runs only)")
    tokenizer = tiny_clip_tokenizer(model_max_length=max_length)
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(seed=seed),
        text_encoder=tiny_clip_text_encoder(tokenizer, seed=seed).eval(),
        tokenizer=tokenizer,
        unet=tiny_unet(seed=seed).eval(),
        scheduler=tiny_ddim_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.register_to_config(_name_or_path=TINY_MODEL_ID)
    return pipe

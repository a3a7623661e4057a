"""``sd15``, ``sd15_shared_seed`` and ``sdxl``: every frame an independent text-to-image sample."""

from __future__ import annotations

import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from PIL import Image

from causaldreamer.methods.diffusion_baseline import (
    NO_SAFETY_CHECKER,
    SD15_MODEL,
    DiffusionBaseline,
    check_settings,
    generators,
    model_ids_for,
    sampling_steps,
)
from causaldreamer.methods.loading import load_pretrained, ready, runtime
from causaldreamer.methods.tiny import tiny_sd15_components, tiny_sdxl_components
from causaldreamer.prompts import DEFAULT_TEMPLATE

SDXL_MODEL = "stabilityai/stable-diffusion-xl-base-1.0"


class TextToImageBaseline(DiffusionBaseline):
    """Frame f draws its own prompt; nothing ties the frames together but, optionally, the seed.

    With ``shared_seed`` every frame starts from the same latent (seed), the cheapest way to keep some
    identity; otherwise frame f starts from its own (seed + f). All T frames run as one batch.
    """

    def __init__(
        self, pipe: StableDiffusionPipeline | StableDiffusionXLPipeline, shared_seed: bool, **kwargs
    ):
        super().__init__(**kwargs)
        self.pipe, self.shared_seed = pipe, shared_seed

    def generate(self, cause: str, effects: list[str], seed: int) -> list[Image.Image]:
        seeds = [seed if self.shared_seed else seed + f for f in range(len(effects))]
        prompts = [self.prompt(cause, effect) for effect in effects]
        return self.pipe(prompt=prompts, generator=generators(seeds), **self.sampling).images

    def record(self) -> dict:
        return super().record() | {"shared_seed": self.shared_seed}


def sd15_pipeline(model: str, setting: str, tiny: bool, dtype: torch.dtype) -> StableDiffusionPipeline:
    """SD 1.5 text-to-image without the NSFW checker, from ``model`` (hub id or local folder; ``setting``
    names the config key in errors), or tiny random weights."""
    if tiny:
        return StableDiffusionPipeline(**tiny_sd15_components(), feature_extractor=None, **NO_SAFETY_CHECKER)
    return load_pretrained(
        StableDiffusionPipeline, model, setting, "SD 1.5 pipeline", dtype=dtype, **NO_SAFETY_CHECKER
    )


def build_sd15(
    model: str = SD15_MODEL,
    shared_seed: bool = False,
    tiny: bool = False,
    template: str = DEFAULT_TEMPLATE,
    num_inference_steps: int | None = None,
    guidance_scale: float = 7.5,
    scheduler: str = "ddim",
    height: int | None = None,
    width: int | None = None,
    device: str | None = None,
) -> TextToImageBaseline:
    """SD 1.5 from ``model`` (hub id or local folder), or tiny random weights with ``tiny``."""
    check_settings(template, scheduler)
    device_, dtype = runtime(device, tiny)
    return TextToImageBaseline(
        pipe=ready(sd15_pipeline(model, "method.model", tiny, dtype), scheduler, device_),
        shared_seed=shared_seed,
        name="sd15_shared_seed" if shared_seed else "sd15",
        model_ids=model_ids_for(tiny, pipeline=model),
        template=template,
        num_inference_steps=sampling_steps(num_inference_steps, tiny),
        guidance_scale=guidance_scale,
        height=height,
        width=width,
    )


def build_sdxl(
    model: str = SDXL_MODEL,
    tiny: bool = False,
    template: str = DEFAULT_TEMPLATE,
    num_inference_steps: int | None = None,
    guidance_scale: float = 7.5,
    scheduler: str = "ddim",
    height: int | None = None,
    width: int | None = None,
    device: str | None = None,
) -> TextToImageBaseline:
    """SDXL base, own seed per frame, without the invisible watermark (it would perturb the metrics)."""
    check_settings(template, scheduler)
    device_, dtype = runtime(device, tiny)
    if tiny:
        pipe = StableDiffusionXLPipeline(**tiny_sdxl_components(), add_watermarker=False)
    else:
        pipe = load_pretrained(
            StableDiffusionXLPipeline,
            model,
            "method.model",
            "SDXL pipeline",
            dtype=dtype,
            add_watermarker=False,
        )
    return TextToImageBaseline(
        pipe=ready(pipe, scheduler, device_),
        shared_seed=False,
        name="sdxl",
        model_ids=model_ids_for(tiny, pipeline=model),
        template=template,
        num_inference_steps=sampling_steps(num_inference_steps, tiny),
        guidance_scale=guidance_scale,
        height=height,
        width=width,
    )

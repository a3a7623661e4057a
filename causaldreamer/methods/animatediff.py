"""``animatediff``: one T-frame clip from SD 1.5 with AnimateDiff's motion modules.

A video model takes a single text for the whole clip, so the order of events can only be said in
words: the template is filled with the cause and all effects in order ("{cause}. Therefore, e1, then
e2, then ..."). CLIP reads 77 tokens; with 8 long effects the last ones are cut off, which is part of
what this baseline shows.
"""

from __future__ import annotations

from diffusers import AnimateDiffPipeline, MotionAdapter
from PIL import Image

from causaldreamer.methods.diffusion_baseline import (
    SD15_MODEL,
    DiffusionBaseline,
    check_settings,
    generators,
    model_ids_for,
    sampling_steps,
)
from causaldreamer.methods.loading import load_pretrained, ready, runtime
from causaldreamer.methods.tiny import tiny_motion_adapter, tiny_sd15_components
from causaldreamer.prompts import DEFAULT_TEMPLATE

MOTION_ADAPTER_MODEL = "guoyww/animatediff-motion-adapter-v1-5-2"

# AnimateDiff's motion modules were trained with linear betas, no sample clipping, linspace timesteps.
ANIMATEDIFF_DDIM = {
    "beta_schedule": "linear",
    "clip_sample": False,
    "timestep_spacing": "linspace",
    "steps_offset": 1,
}


class AnimateDiffBaseline(DiffusionBaseline):
    """All frames share one prompt and one starting noise (seed); the motion modules link them."""

    def __init__(self, pipe: AnimateDiffPipeline, **kwargs):
        super().__init__(**kwargs)
        self.pipe = pipe

    def clip_prompt(self, cause: str, effects: list[str]) -> str:
        return self.prompt(cause, ", then ".join(effects))

    def generate(self, cause: str, effects: list[str], seed: int) -> list[Image.Image]:
        clip = self.pipe(
            prompt=self.clip_prompt(cause, effects),
            num_frames=len(effects),
            generator=generators([seed]),
            **self.sampling,
        )
        return list(clip.frames[0])


def build_animatediff(
    model: str = SD15_MODEL,
    motion_adapter: str = MOTION_ADAPTER_MODEL,
    tiny: bool = False,
    template: str = DEFAULT_TEMPLATE,
    num_inference_steps: int | None = None,
    guidance_scale: float = 7.5,
    scheduler: str = "ddim",
    height: int | None = None,
    width: int | None = None,
    device: str | None = None,
) -> AnimateDiffBaseline:
    """SD 1.5 from ``model`` plus the motion adapter from ``motion_adapter``, or tiny random weights."""
    check_settings(template, scheduler)
    device_, dtype = runtime(device, tiny)
    if tiny:
        parts = tiny_sd15_components()
        pipe = AnimateDiffPipeline(**parts, motion_adapter=tiny_motion_adapter(parts["unet"]))
    else:
        adapter = load_pretrained(
            MotionAdapter,
            motion_adapter,
            "method.motion_adapter",
            "AnimateDiff motion adapter",
            dtype=dtype,
        )
        pipe = load_pretrained(
            AnimateDiffPipeline,
            model,
            "method.model",
            "SD 1.5 pipeline",
            motion_adapter=adapter,
            dtype=dtype,
        )
    return AnimateDiffBaseline(
        pipe=ready(pipe, scheduler, device_, **ANIMATEDIFF_DDIM),
        name="animatediff",
        model_ids=model_ids_for(tiny, pipeline=model, motion_adapter=motion_adapter),
        template=template,
        num_inference_steps=sampling_steps(num_inference_steps, tiny),
        guidance_scale=guidance_scale,
        height=height,
        width=width,
    )

"""``instruct_pix2pix``: frame 0 is plain SD 1.5, frame f edits frame f-1 with its effect as instruction.

Changes accumulate along the sequence, and so do the edit artefacts. InstructPix2Pix's UNet takes the
input image's latents as 4 extra channels, so it cannot draw the first frame from noise itself.
"""

from __future__ import annotations

from diffusers import StableDiffusionInstructPix2PixPipeline, StableDiffusionPipeline
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
from causaldreamer.methods.text_to_image import sd15_pipeline
from causaldreamer.methods.tiny import tiny_sd15_components
from causaldreamer.prompts import DEFAULT_TEMPLATE

INSTRUCT_PIX2PIX_MODEL = "timbrooks/instruct-pix2pix"


class InstructPix2PixBaseline(DiffusionBaseline):
    """An SD 1.5 first frame, then a chain of edits, each seeded with its frame's seed + f."""

    def __init__(
        self,
        edit_pipe: StableDiffusionInstructPix2PixPipeline,
        first_frame_pipe: StableDiffusionPipeline,
        image_guidance_scale: float,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.edit_pipe, self.first_frame_pipe = edit_pipe, first_frame_pipe
        self.image_guidance_scale = image_guidance_scale

    def generate(self, cause: str, effects: list[str], seed: int) -> list[Image.Image]:
        first_prompt = self.prompt(cause, effects[0])
        frames = [
            self.first_frame_pipe(prompt=first_prompt, generator=generators([seed]), **self.sampling).images[
                0
            ]
        ]
        for f, effect in enumerate(effects[1:], start=1):
            edited = self.edit_pipe(
                prompt=effect,
                image=frames[-1],
                generator=generators([seed + f]),
                num_inference_steps=self.num_inference_steps,
                guidance_scale=self.guidance_scale,
                image_guidance_scale=self.image_guidance_scale,
                output_type="pil",
            )
            frames.append(edited.images[0])
        return frames

    def record(self) -> dict:
        return super().record() | {"image_guidance_scale": self.image_guidance_scale}


def build_instruct_pix2pix(
    model: str = INSTRUCT_PIX2PIX_MODEL,
    first_frame_model: str = SD15_MODEL,
    tiny: bool = False,
    template: str = DEFAULT_TEMPLATE,
    num_inference_steps: int | None = None,
    guidance_scale: float = 7.5,
    image_guidance_scale: float = 1.5,
    scheduler: str = "ddim",
    height: int | None = None,
    width: int | None = None,
    device: str | None = None,
) -> InstructPix2PixBaseline:
    """InstructPix2Pix from ``model`` and the first frame's SD 1.5 from ``first_frame_model``, or tiny."""
    check_settings(template, scheduler)
    device_, dtype = runtime(device, tiny)
    first = sd15_pipeline(first_frame_model, "method.first_frame_model", tiny, dtype)
    if tiny:
        edit = StableDiffusionInstructPix2PixPipeline(
            **tiny_sd15_components(unet_in_channels=8), feature_extractor=None, **NO_SAFETY_CHECKER
        )
    else:
        edit = load_pretrained(
            StableDiffusionInstructPix2PixPipeline,
            model,
            "method.model",
            "InstructPix2Pix pipeline",
            dtype=dtype,
            **NO_SAFETY_CHECKER,
        )
    return InstructPix2PixBaseline(
        edit_pipe=ready(edit, scheduler, device_),
        first_frame_pipe=ready(first, scheduler, device_),
        image_guidance_scale=image_guidance_scale,
        name="instruct_pix2pix",
        model_ids=model_ids_for(tiny, pipeline=model, first_frame=first_frame_model),
        template=template,
        num_inference_steps=sampling_steps(num_inference_steps, tiny),
        guidance_scale=guidance_scale,
        height=height,
        width=width,
    )

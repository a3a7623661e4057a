"""``controlnet``: frame 0 is plain SD 1.5, its canny edges condition every later frame.

The edges pin the layout of the whole sequence (high identity) and leave the effects little room to
change the scene, which is the trade-off this baseline stands for.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch
from diffusers import ControlNetModel, StableDiffusionControlNetPipeline, StableDiffusionPipeline
from PIL import Image

from causaldreamer.errors import UserError
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
from causaldreamer.methods.tiny import tiny_controlnet, tiny_sd15_components
from causaldreamer.prompts import DEFAULT_TEMPLATE

CONTROLNET_CANNY_MODEL = "lllyasviel/sd-controlnet-canny"


def canny_edges(image: Image.Image, low_threshold: float, high_threshold: float) -> Image.Image:
    """White-on-black canny edges (kornia's) as an RGB image, the control input ControlNet-canny expects."""
    import kornia  # the `baselines` extra; build_controlnet checks it is installed

    pixels = kornia.utils.image_to_tensor(np.array(image.convert("RGB")), keepdim=False).float() / 255
    _, edges = kornia.filters.canny(pixels, low_threshold, high_threshold)
    return Image.fromarray((edges[0, 0] * 255).round().to(torch.uint8).numpy()).convert("RGB")


class ControlNetBaseline(DiffusionBaseline):
    """Frame 0 from the ControlNet pipeline's own SD 1.5 parts; frames 1.. drawn under its edges."""

    def __init__(
        self, pipe: StableDiffusionControlNetPipeline, low_threshold: float, high_threshold: float, **kwargs
    ):
        super().__init__(**kwargs)
        self.pipe = pipe
        self.first_frame_pipe = StableDiffusionPipeline(
            **{role: part for role, part in pipe.components.items() if role != "controlnet"},
            requires_safety_checker=False,
        )
        self.first_frame_pipe.set_progress_bar_config(disable=True)
        self.low_threshold, self.high_threshold = low_threshold, high_threshold

    def control_image(self, frame: Image.Image) -> Image.Image:
        return canny_edges(frame, self.low_threshold, self.high_threshold)

    def generate(self, cause: str, effects: list[str], seed: int) -> list[Image.Image]:
        prompts = [self.prompt(cause, effect) for effect in effects]
        first = self.first_frame_pipe(
            prompt=prompts[0], generator=generators([seed]), **self.sampling
        ).images[0]
        if len(effects) == 1:
            return [first]
        later = self.pipe(
            prompt=prompts[1:],
            image=self.control_image(first),
            generator=generators([seed + f for f in range(1, len(effects))]),
            **self.sampling,
        ).images
        return [first, *later]

    def record(self) -> dict:
        return super().record() | {"canny_thresholds": [self.low_threshold, self.high_threshold]}


def build_controlnet(
    model: str = SD15_MODEL,
    controlnet: str = CONTROLNET_CANNY_MODEL,
    tiny: bool = False,
    template: str = DEFAULT_TEMPLATE,
    num_inference_steps: int | None = None,
    guidance_scale: float = 7.5,
    scheduler: str = "ddim",
    low_threshold: float = 0.1,
    high_threshold: float = 0.2,
    height: int | None = None,
    width: int | None = None,
    device: str | None = None,
) -> ControlNetBaseline:
    """SD 1.5 plus a canny ControlNet; the thresholds are kornia's, on gradients of [0, 1] images."""
    if importlib.util.find_spec("kornia") is None:
        raise UserError("method=controlnet needs kornia: pip install 'causaldreamer[baselines]'")
    check_settings(template, scheduler)
    device_, dtype = runtime(device, tiny)
    if tiny:
        parts = tiny_sd15_components()
        pipe = StableDiffusionControlNetPipeline(
            **parts, controlnet=tiny_controlnet(parts["unet"]), feature_extractor=None, **NO_SAFETY_CHECKER
        )
    else:
        control = load_pretrained(ControlNetModel, controlnet, "method.controlnet", "ControlNet", dtype=dtype)
        pipe = load_pretrained(
            StableDiffusionControlNetPipeline,
            model,
            "method.model",
            "SD 1.5 pipeline",
            controlnet=control,
            dtype=dtype,
            **NO_SAFETY_CHECKER,
        )
    return ControlNetBaseline(
        pipe=ready(pipe, scheduler, device_),
        low_threshold=low_threshold,
        high_threshold=high_threshold,
        name="controlnet",
        model_ids=model_ids_for(tiny, pipeline=model, controlnet=controlnet),
        template=template,
        num_inference_steps=sampling_steps(num_inference_steps, tiny),
        guidance_scale=guidance_scale,
        height=height,
        width=width,
    )

"""Stable Diffusion 1.5 from a hub id or a local folder, with the DDIM scheduler (DESIGN 6.4)."""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline

from causaldreamer.diffusion.settings import GenerationSettings
from causaldreamer.errors import UserError


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_stable_diffusion(
    name_or_path: str = "stable-diffusion-v1-5/stable-diffusion-v1-5",
    device: str = "auto",
    fp16: bool | None = None,
    safety_checker: bool = GenerationSettings.safety_checker,
) -> StableDiffusionPipeline:
    """fp16 on CUDA unless ``fp16`` says otherwise (fp32 on CPU, where half precision is slow); the NSFW
    checker only with ``safety_checker`` (the generation setting, off by default: it blacks out frames)."""
    device = resolve_device(device)
    half = device.type == "cuda" if fp16 is None else fp16
    extra = {} if safety_checker else {"safety_checker": None, "requires_safety_checker": False}
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            name_or_path, dtype=torch.float16 if half else torch.float32, **extra
        )
    except (OSError, ValueError) as err:
        raise UserError(
            f"could not load Stable Diffusion from {name_or_path!r} ({type(err).__name__}); set "
            "diffusion.pipeline.name_or_path to a local copy of stable-diffusion-v1-5 (or a hub id you can "
            "reach), or use diffusion=tiny for a random-weight smoke run"
        ) from None
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    return pipe.to(device)

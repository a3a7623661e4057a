"""What the diffusers baselines of DESIGN 8 share: the frame prompt, the sampling settings, the seeding.

Every baseline fills the paper's prompt template with the cause and a reference effect, samples with
DDIM (the sampler CausalDreamer uses) unless told to keep the checkpoint's scheduler, and seeds frame f
with ``seed + f`` on a CPU generator, so a seed gives the same starting noise on any device. Frame 0 of
the sequential baselines (ControlNet, InstructPix2Pix) is plain SD 1.5 from that seed and prompt: the
same image the ``sd15`` baseline draws first, so they differ only in how the later frames follow it.
"""

from __future__ import annotations

import torch
from diffusers import DiffusionPipeline

from causaldreamer.errors import UserError
from causaldreamer.methods.base import SequenceMethod, pipeline_modules
from causaldreamer.methods.loading import SCHEDULERS, TINY_MODEL_ID
from causaldreamer.prompts import compose

SD15_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"

# Sampling steps when the config leaves them null: SD's usual 50, and with tiny random weights (which draw
# noise at any step count) the 2 of diffusion=tiny, so a dry run takes seconds.
DEFAULT_STEPS, TINY_STEPS = 50, 2

# Pipelines built here never carry the NSFW checker: a blacked-out frame would corrupt the metrics.
NO_SAFETY_CHECKER = {"safety_checker": None, "requires_safety_checker": False}


def check_settings(template: str, scheduler: str) -> None:
    """Fail on a bad template or scheduler name before any weights load, not after minutes of it."""
    compose(template, "", "")
    if scheduler not in SCHEDULERS:
        raise UserError(f"unknown scheduler {scheduler!r}; set method.scheduler to one of {SCHEDULERS}")


def sampling_steps(num_inference_steps: int | None, tiny: bool) -> int:
    if num_inference_steps is not None:
        return num_inference_steps
    return TINY_STEPS if tiny else DEFAULT_STEPS


def generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per image: the starting noise depends on the seed only, not on the device."""
    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]


def model_ids_for(tiny: bool, **ids: str) -> dict[str, str]:
    """The weights a baseline was built from, by role, for its records."""
    return {role: TINY_MODEL_ID if tiny else name_or_path for role, name_or_path in ids.items()}


class DiffusionBaseline(SequenceMethod):
    """A baseline drawn with diffusers pipelines: prompt template and sampling settings."""

    def __init__(
        self,
        name: str,
        model_ids: dict[str, str],
        template: str,
        num_inference_steps: int,
        guidance_scale: float,
        height: int | None = None,
        width: int | None = None,
    ):
        super().__init__(name, model_ids)
        self.template = template
        self.num_inference_steps, self.guidance_scale = num_inference_steps, guidance_scale
        self.height, self.width = height, width

    def prompt(self, cause: str, effect: str) -> str:
        return compose(self.template, cause, effect)[0]

    @property
    def sampling(self) -> dict:
        """Keyword arguments of every text-to-image call (size None: the model's native resolution)."""
        return {
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "height": self.height,
            "width": self.width,
            "output_type": "pil",
        }

    def frozen_modules(self) -> dict:
        """The parts of every pipeline this baseline holds (one, or two for the sequential baselines)."""
        return pipeline_modules(*(v for v in vars(self).values() if isinstance(v, DiffusionPipeline)))

    def record(self) -> dict:
        return super().record() | {
            "template": self.template,
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "safety_checker": False,  # never carried: see NO_SAFETY_CHECKER
        }

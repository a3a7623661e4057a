"""Loading diffusers models for the baselines: device and precision, clear errors, the scheduler choice."""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DiffusionPipeline

from causaldreamer.errors import UserError

TINY_MODEL_ID = "tiny-random"
SCHEDULERS = ("ddim", "default")


def runtime(device: str | None, tiny: bool) -> tuple[torch.device, torch.dtype]:
    """CUDA in fp16 when there is one (CPU otherwise, in fp32); tiny random models always stay fp32."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    half = device.type == "cuda" and not tiny
    return device, torch.float16 if half else torch.float32


def load_pretrained(loader, name_or_path: str, setting: str, what: str, **kwargs):
    """``loader.from_pretrained`` where a missing model becomes one line naming the setting to fix."""
    try:
        return loader.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as err:
        raise UserError(
            f"could not load the {what} from {name_or_path!r} ({type(err).__name__}); set {setting} to a "
            "local folder with its weights, or a hub id you can reach"
        ) from None


def ready(
    pipe: DiffusionPipeline, scheduler: str, device: torch.device, **ddim_overrides
) -> DiffusionPipeline:
    """Swap in DDIM (the sampler CausalDreamer uses) unless ``scheduler`` keeps the checkpoint's own,
    move the pipeline to its device (loaded weights already have their precision), no progress bars.

    The VAE decodes one frame at a time: T frames at SDXL's 1024 px, decoded in fp32, would not fit
    in memory together, and the UNet's batch of T frames costs far more than decoding them in turn.
    """
    if scheduler == "ddim":
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, **ddim_overrides)
    pipe.vae.enable_slicing()
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)

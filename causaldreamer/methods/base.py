"""The one interface every sequence generator answers to (DESIGN 8), so evaluation treats them alike."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from PIL import Image

from causaldreamer.diffusion.sequence_files import GeneratedSequence

if TYPE_CHECKING:
    from torch import nn


class SequenceMethod(ABC):
    """Turns a cause and T effect texts into T frames; ``name`` and ``model_ids`` go into every record."""

    def __init__(self, name: str, model_ids: dict[str, str]):
        self.name = name
        self.model_ids = dict(model_ids)

    @abstractmethod
    def generate(self, cause: str, effects: list[str], seed: int) -> list[Image.Image]:
        """One frame per effect, in order; the same inputs and seed give the same frames."""

    @abstractmethod
    def frozen_modules(self) -> dict[str, nn.Module]:
        """Every torch module the method draws with, each once, by name: the prediction module holds
        them, so Lightning moves them to its device (``causaldreamer.generation.module``)."""

    def record(self) -> dict:
        """What a result file needs to say which method and which weights made the frames."""
        return {"method": self.name, "model_ids": dict(self.model_ids)}

    def generate_sequence(self, cause: str, effects: list[str], seed: int) -> GeneratedSequence:
        """``generate`` with the sequence's record; here frame f shows reference effect f. A method that
        picks its own effects (CausalDreamer) overrides this to record them."""
        frames = self.generate(cause, effects, seed)
        shown = [{"frame": f, "effect": effect} for f, effect in enumerate(effects)]
        record = {**self.record(), "cause": cause, "seed": seed, "reference_effects": list(effects)}
        return GeneratedSequence(frames, {**record, "frames": shown})


def pipeline_modules(*pipelines) -> dict[str, nn.Module]:
    """The torch modules of diffusers pipelines by role (``unet``, ``vae``, ...), each module once: a
    pipeline that shares another's parts (ControlNet's first-frame pipeline) adds nothing."""
    from torch import nn

    modules, seen = {}, set()
    for index, pipe in enumerate(pipelines):
        for role, part in pipe.components.items():
            if isinstance(part, nn.Module) and id(part) not in seen:
                seen.add(id(part))
                modules[role if role not in modules else f"{role}_{index}"] = part
    return modules

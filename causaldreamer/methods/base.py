"""The one interface every sequence generator answers to (DESIGN 8), so evaluation treats them alike."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from PIL import Image


@dataclass
class MethodSequence:
    """One sequence's frames and record; ``record["frames"][f]["effect"]`` is the effect frame f shows,
    the text the CLIP, CCS and CPS metrics pair it with."""

    frames: list[Image.Image]
    record: dict


class SequenceMethod(ABC):
    """Turns a cause and T effect texts into T frames; ``name`` and ``model_ids`` go into every record."""

    def __init__(self, name: str, model_ids: dict[str, str]):
        self.name = name
        self.model_ids = dict(model_ids)

    @abstractmethod
    def generate(self, cause: str, effects: list[str], seed: int) -> list[Image.Image]:
        """One frame per effect, in order; the same inputs and seed give the same frames."""

    def record(self) -> dict:
        """What a result file needs to say which method and which weights made the frames."""
        return {"method": self.name, "model_ids": dict(self.model_ids)}

    def generate_sequence(self, cause: str, effects: list[str], seed: int) -> MethodSequence:
        """``generate`` with the sequence's record; here frame f shows reference effect f. A method that
        picks its own effects (CausalDreamer) overrides this to record them."""
        frames = self.generate(cause, effects, seed)
        shown = [{"frame": f, "effect": effect} for f, effect in enumerate(effects)]
        record = {**self.record(), "cause": cause, "seed": seed, "reference_effects": list(effects)}
        return MethodSequence(frames, {**record, "frames": shown})

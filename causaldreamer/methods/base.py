"""The one interface every sequence generator answers to (DESIGN 8), so evaluation treats them alike."""

from __future__ import annotations

from abc import ABC, abstractmethod

from PIL import Image


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

"""A sequence method as a LightningModule: ``predict_step`` draws one scenario's sequence."""

from __future__ import annotations

import lightning as L
from torch import nn

from causaldreamer.diffusion.sequence_files import GeneratedSequence
from causaldreamer.generation.scenarios import Scenario
from causaldreamer.methods.base import SequenceMethod


class SequencePrediction(L.LightningModule):
    """Holds the method's frozen modules (CausalDreamer: the adapter and SD's CLIP text encoder, UNet and
    VAE; a baseline: its pipelines' parts) in eval mode without gradients, so Lightning puts them on its
    device, and under DDP each process draws its share of the scenarios."""

    def __init__(self, method: SequenceMethod):
        super().__init__()
        self.method = method
        self.frozen = nn.ModuleDict(method.frozen_modules())
        self.frozen.eval().requires_grad_(False)

    def predict_step(self, scenario: Scenario | None, batch_idx: int) -> GeneratedSequence | None:
        if scenario is None:  # a process with no share of the scenarios (ScenarioDataModule)
            return None
        return self.method.generate_sequence(scenario.cause, list(scenario.references), scenario.seed)

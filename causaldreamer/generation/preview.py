"""While training, the image side in the dashboards: a fixed handful of causes rendered with the adapter
as it is, every N validations, their captioned grids logged to W&B.

Active only when a diffusion model is configured (``diffusion=sd15``, or ``diffusion=tiny`` for tests)
and a W&B logger is; off on a CPU unless ``on_cpu`` (SD 1.5 there takes minutes per sequence). Only rank
0 renders. The frames come from the same generator generate uses, with the run's lambda and template.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig

from causaldreamer.diffusion.settings import GenerationSettings, check_settings

log = logging.getLogger(__name__)

PREVIEW_KEY = "preview/sequences"


class SequencePreview(L.Callback):
    """``pipeline``: the ``diffusion`` group's pipeline config (None: no diffusion model, inactive);
    ``settings``: the ``generation`` group (None: its defaults)."""

    def __init__(
        self,
        pipeline: DictConfig | None = None,
        settings: DictConfig | None = None,
        causes: list[str] | None = None,
        every_n_validations: int = 2,
        seed: int = 42,
        on_cpu: bool = False,
    ):
        from hydra.utils import instantiate

        self.pipeline_config = pipeline
        self.settings = instantiate(settings) if settings is not None else GenerationSettings()
        check_settings(self.settings)
        self.causes = list(causes or [])
        self.every_n_validations, self.seed, self.on_cpu = every_n_validations, seed, on_cpu
        self.validations, self.pipe = 0, None

    def loggers(self, trainer: L.Trainer) -> list[WandbLogger]:
        return [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]

    def active(self, trainer: L.Trainer) -> bool:
        on_device = self.on_cpu or not isinstance(trainer.accelerator, CPUAccelerator)
        wanted = self.pipeline_config is not None and bool(self.causes) and on_device
        return wanted and trainer.is_global_zero and bool(self.loggers(trainer))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.active(trainer):
            return
        self.validations += 1
        if self.validations % self.every_n_validations:
            return
        grids, captions = self.render(trainer, pl_module)
        for logger in self.loggers(trainer):
            logger.log_image(PREVIEW_KEY, grids, step=trainer.global_step, caption=captions)
        log.info("logged %d preview grid(s) at step %d", len(grids), trainer.global_step)

    def render(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[list, list[str]]:
        """One grid per cause, captioned with the cause and the epoch; the adapter's mode is kept."""
        from causaldreamer.diffusion.adapter_folder import AdapterFolder
        from causaldreamer.diffusion.pipeline import CausalSequenceGenerator
        from causaldreamer.diffusion.sequence_files import image_grid
        from causaldreamer.methods.causaldreamer import diffusion_pipeline

        datamodule, adapter = trainer.datamodule, pl_module.adapter
        if self.pipe is None:
            self.pipe = diffusion_pipeline(self.pipeline_config, self.settings).to(pl_module.device)
        settings = dataclasses.replace(
            self.settings,
            lam=pl_module.hparams.lam if self.settings.lam is None else self.settings.lam,
            template=datamodule.template if self.settings.template is None else self.settings.template,
        )
        folder = AdapterFolder(
            Path(trainer.default_root_dir), adapter, datamodule.bank, "training", "training"
        )
        was_training = adapter.training
        try:
            generator = CausalSequenceGenerator(self.pipe, folder, datamodule.encoder, settings)
            sequences = [generator.generate(cause, self.seed) for cause in self.causes]
        finally:
            adapter.train(was_training)
        grids = [image_grid(s.frames, [frame["effect"] for frame in s.record["frames"]]) for s in sequences]
        captions = [f"{cause} (epoch {trainer.current_epoch})" for cause in self.causes]
        return grids, captions

    def state_dict(self) -> dict:
        return {"validations": self.validations}  # a resumed run keeps rendering on the same schedule

    def load_state_dict(self, state_dict: dict) -> None:
        self.validations = state_dict["validations"]

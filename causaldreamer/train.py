"""``python -m causaldreamer.train [overrides]``: train the causal adapter, test it, export it.

Hydra composes ``conf/train.yaml``; everything is built with ``hydra.utils.instantiate``. The run ends
with checkpoints, an exported adapter (safetensors + config + effect bank) and retrieval metrics.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
import wandb
from hydra.utils import instantiate
from omegaconf import DictConfig

from causaldreamer.config import register_resolvers, validate_train_config, write_run_record
from causaldreamer.errors import exit_on_user_error
from causaldreamer.io import atomic_dir

log = logging.getLogger(__name__)
register_resolvers()


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, test the best checkpoint and export the adapter; returns the logged metrics."""
    validate_train_config(cfg)
    output_dir = Path(cfg.paths.output_dir)
    write_run_record(cfg, output_dir)
    L.seed_everything(cfg.seed, workers=True)

    encoder = instantiate(cfg.encoder)
    datamodule = instantiate(cfg.data, encoder=encoder, gate_tokens=cfg.model.loss_weights.gate > 0)
    adapter = instantiate(cfg.model.adapter, dim=encoder.dim, encoder_name=encoder.identity)
    log.info(
        "causal adapter: %s parameters (d=%d, H=%d)",
        f"{adapter.num_parameters:,}",
        adapter.dim,
        adapter.num_heads,
    )
    model = instantiate(cfg.model, adapter=adapter)
    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values()]
    loggers = [instantiate(c) for c in cfg.get("logger", {}).values()]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    for logger in loggers:
        logger.log_hyperparams({"adapter_parameters": adapter.num_parameters})

    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if cfg.test and not trainer.fast_dev_run:
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        if cfg.export_dir and trainer.is_global_zero and not trainer.fast_dev_run:
            export_adapter(model, datamodule, Path(cfg.export_dir))
    finally:
        wandb.finish()  # each multirun job gets its own W&B run
    for name in sorted(k for k in metrics if "recall" in k or "mrr" in k):
        log.info("%s = %.4f", name, metrics[name])
    return metrics


def export_adapter(model, datamodule, folder: Path) -> None:
    """The adapter (safetensors + config) and the effect bank it retrieves from, in one folder."""
    with atomic_dir(folder) as tmp:
        model.adapter.save_pretrained(tmp)
        datamodule.bank.save(tmp)
    log.info("exported adapter to %s", folder)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric", "val/recall@5"))


if __name__ == "__main__":
    main()

"""``python -m causaldreamer.train [overrides]``: train the causal adapter, test it, export it.

Hydra composes ``conf/train.yaml``; everything is built with ``hydra.utils.instantiate``. The run ends
with checkpoints, an exported adapter (safetensors + config + effect bank) and retrieval metrics.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from causaldreamer.checkpoints import check_adapter_dim, read_checkpoint, wandb_run_id
from causaldreamer.cli import hydra_app
from causaldreamer.config import (
    check_resume_path,
    register_resolvers,
    validate_train_config,
    write_run_record,
)
from causaldreamer.data.ecare import fetch_ecare, load_ecare
from causaldreamer.data.files import fetch_dataset, load_dataset
from causaldreamer.io import atomic_dir
from causaldreamer.sweeps.records import write_run_metrics

log = logging.getLogger(__name__)
register_resolvers()


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, test the best checkpoint and export the adapter; returns the logged metrics."""
    # Every input is checked before anything is written, so bad input leaves no run record, checkpoint or
    # cache entry behind (only what Hydra writes before any code of ours runs: .hydra/ and the log); and
    # the checks that need no model run before Lightning is imported, so they fail in a second or two.
    validate_train_config(cfg)
    resume_from = read_checkpoint(cfg.ckpt_path) if cfg.ckpt_path else None
    load_dataset(fetch_dataset(cfg.data.data_dir, download=cfg.data.download))
    if cfg.data.get("ecare_dir"):
        load_ecare(fetch_ecare(cfg.data.ecare_dir, download=cfg.data.download))

    import lightning as L
    import wandb

    from causaldreamer.loggers import run_config
    from causaldreamer.sweeps.scoring import run_scorer

    scorer = run_scorer(cfg)  # its settings fail here, not after training
    L.seed_everything(cfg.seed, workers=True)
    encoder = instantiate(cfg.encoder)
    if resume_from is not None:
        check_adapter_dim(resume_from, encoder.dim, cfg.ckpt_path)
    datamodule = instantiate(cfg.data, encoder=encoder, gate_tokens=cfg.model.loss_weights.gate > 0)
    output_dir = Path(cfg.paths.output_dir)
    write_run_record(cfg, output_dir)

    adapter = instantiate(cfg.model.adapter, dim=encoder.dim, encoder_name=encoder.identity)
    log.info(
        "causal adapter: %s parameters (d=%d, H=%d)",
        f"{adapter.num_parameters:,}",
        adapter.dim,
        adapter.num_heads,
    )
    model = instantiate(cfg.model, adapter=adapter)
    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values()]
    loggers = instantiate_loggers(cfg, wandb_run_id(resume_from) if resume_from is not None else None)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    for logger in loggers:
        logger.log_hyperparams(run_config(cfg) | {"adapter_parameters": adapter.num_parameters})

    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if cfg.test and not trainer.fast_dev_run:
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        if cfg.export_dir and trainer.is_global_zero and not trainer.fast_dev_run:
            datamodule.setup("test")  # a no-op, unless DDP spawned processes set up their own copies
            export_adapter(model, datamodule, Path(cfg.export_dir), metrics, trainer.loggers)
            if scorer:
                metrics.update(scorer.score(Path(cfg.export_dir), encoder, trainer))
    finally:
        wandb.finish()  # each multirun job gets its own W&B run
    for name in sorted(k for k in metrics if any(m in k for m in ("recall", "mrr", "accuracy", "selection"))):
        log.info("%s = %.4f", name, metrics[name])
    if trainer.is_global_zero:
        write_run_metrics(output_dir, metrics)  # what a sweep summary reads
    return metrics


def instantiate_loggers(cfg: DictConfig, wandb_run: str | None) -> list:
    """The configured loggers; a resumed run logs on into the W&B run its checkpoint came from."""
    loggers = []
    for conf in cfg.get("logger", {}).values():
        if wandb_run and str(conf.get("_target_", "")).endswith("WandbLogger"):
            loggers.append(instantiate(conf, id=wandb_run, resume="allow"))
        else:
            loggers.append(instantiate(conf))
    return loggers


def export_adapter(model, datamodule, folder: Path, metrics: dict[str, float], loggers: list) -> None:
    """The complete adapter unit in one folder (weights, config with this run's lambda and template, the
    effect bank it retrieves from, a model card with the run's metrics), then a W&B artifact of it."""
    from causaldreamer.loggers import log_adapter_artifact  # imports Lightning, which start-up avoids

    adapter = model.adapter
    adapter.lam, adapter.template = model.hparams.lam, datamodule.template
    adapter.bank, adapter.metrics = datamodule.bank, dict(metrics)
    with atomic_dir(folder) as tmp:
        adapter.save_pretrained(tmp)
    log.info("exported adapter to %s", folder)
    metadata = {"lam": adapter.lam, "template": adapter.template, "encoder": adapter.encoder_name}
    log_adapter_artifact(loggers, folder, metadata | {"metrics": adapter.metrics})


@hydra_app("train", check=check_resume_path)
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get(cfg.optimized_metric)


if __name__ == "__main__":
    main()

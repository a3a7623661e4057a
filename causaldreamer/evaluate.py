"""``python -m causaldreamer.evaluate method=NAME [adapter=PATH] [limit=N]``: a method over the benchmark.

Hydra composes ``conf/evaluate.yaml``. For each scenario of ``test_counterfactual.csv`` (the first
``limit``) the method draws one sequence into its own folder of ``output_dir``; complete folders of an
earlier run are reused, so an interrupted evaluation resumes. Every sequence is then scored with the six
metrics of DESIGN 7, each frame against the effect it shows. Written: ``sequences.csv`` (one row per
sequence), ``summary.csv`` and ``summary.md`` (the paper's table; for CausalDreamer also counterfactual
coverage), ``metrics.json`` (for sweep summaries), a W&B run. All settings and models are checked and
loaded before anything is written. Drawing and scoring run through ``trainer.predict``
(``causaldreamer.generation``): ``trainer=ddp trainer.devices=N`` shards the scenarios over N processes,
whose metric states are synced; rank 0 writes the tables.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from causaldreamer.cli import hydra_app
from causaldreamer.config import register_resolvers, write_run_record
from causaldreamer.data.files import load_counterfactual
from causaldreamer.diffusion.sequence_files import is_complete
from causaldreamer.errors import UserError
from causaldreamer.evaluation.sequences import check_reusable
from causaldreamer.evaluation.tables import (
    METRIC_HEADERS,
    SUMMARY_FILE,
    method_label,
    results_markdown,
    write_csv,
    write_markdown,
)
from causaldreamer.evaluation.wandb_log import log_evaluation
from causaldreamer.metrics.features import ClipFeatures, DinoFeatures
from causaldreamer.sweeps.records import write_run_metrics

log = logging.getLogger(__name__)
register_resolvers()


def read_scenarios(cfg: DictConfig) -> pd.DataFrame:
    """The benchmark's rows (cause, effect1..effect8), the first ``limit``."""
    limit = cfg.limit
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise UserError(f"limit={limit!r}: must be null (all scenarios) or an integer >= 1")
    path = Path(cfg.scenarios_file)
    if not path.is_file():
        raise UserError(f"scenarios_file={path} not found; point it at test_counterfactual.csv")
    scenarios = load_counterfactual(path)
    return scenarios if limit is None else scenarios.head(limit)


def reference_effects(scenario: pd.Series) -> list[str]:
    columns = sorted((c for c in scenario.index if c.startswith("effect")), key=lambda c: int(c[6:]))
    return [scenario[c] for c in columns]


def feature_extractors(settings: DictConfig) -> tuple[DinoFeatures, ClipFeatures]:
    """DINOv2 and CLIP from ``metrics.dino_model`` / ``metrics.clip_model``, or random weights (tiny)."""
    if settings.tiny:
        dino, clip = DinoFeatures.tiny(), ClipFeatures.tiny()
    else:
        dino = DinoFeatures.from_pretrained(settings.dino_model, settings.batch_size)
        clip = ClipFeatures.from_pretrained(settings.clip_model, settings.batch_size)
    device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return dino.to(device), clip.to(device)


def sweep_metrics(summary: dict) -> dict[str, float]:
    """The summary under the names sweep summaries read (``gen/...``, ``coverage/...``); plain coverage
    is the one of the retrieval mode the frames used."""
    metrics = {f"gen/{name}": summary[name] for name in METRIC_HEADERS}
    for run in ("topk", "path", "zero_shot"):
        for stat in ("mean", "share", "gain", "gain_se"):
            if f"coverage_{run}_{stat}" in summary:
                metrics[f"coverage/{run}/{stat}"] = summary[f"coverage_{run}_{stat}"]
    retrieval = summary.get("retrieval")
    if retrieval is not None and f"coverage_{retrieval}_mean" in summary:
        for stat in ("mean", "share", "gain", "gain_se"):
            metrics[f"coverage/{stat}"] = summary[f"coverage_{retrieval}_{stat}"]
    return metrics


def reused_sequences(method, scenarios) -> int:
    """How many scenarios already hold a complete sequence of this method, settings, cause and seed; a
    folder of another stops the run."""
    done = [scenario for scenario in scenarios if is_complete(scenario.folder)]
    for scenario in done:
        check_reusable(scenario.folder, {**method.record(), "cause": scenario.cause, "seed": scenario.seed})
    folder = scenarios[0].folder.parent
    log.info("%d of %d sequences already complete in %s: reused", len(done), len(scenarios), folder)
    return len(done)


def summary_row(
    method, label: str | None, scenarios: pd.DataFrame, means: dict[str, float], cache_dir: str
) -> dict:
    """The run's line of the results table: the metric means, and CausalDreamer's coverage beside them."""
    from causaldreamer.methods.causaldreamer import CausalDreamerMethod  # imports diffusers: not at start-up

    row = {"method": method.name, "label": label or method_label(method.name), "scenarios": len(scenarios)}
    row |= means
    if isinstance(method, CausalDreamerMethod):  # retrieval: the mode its frames' effects came from
        row |= {
            "retrieval": method.generator.settings.retrieval,
            **method.counterfactual_coverage(scenarios, cache_dir),
        }
    return row | {"models": json.dumps(method.model_ids)}


def evaluate(cfg: DictConfig) -> pd.DataFrame | None:
    """Check and load everything, draw the missing sequences, score all of them; returns the summary row
    (None in a DDP process other than rank 0, which leaves the writing to rank 0)."""
    scenarios = read_scenarios(cfg)
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise UserError(f"seed={cfg.seed!r}: must be an integer")
    if cfg.generation.safety_checker and cfg.method.get("settings") is None:
        raise UserError("generation.safety_checker=true is CausalDreamer's; the baselines never carry it")
    dino, clip = feature_extractors(cfg.metrics)
    method = instantiate(cfg.method)
    # Imported only now: Lightning takes seconds to import, and bad settings fail before that.
    from lightning.pytorch.utilities import rank_zero_only

    from causaldreamer.generation.run import draw_sequences, score_sequences
    from causaldreamer.generation.scenarios import scenarios_in

    output_dir = Path(cfg.output_dir)
    references = [reference_effects(row) for _, row in scenarios.iterrows()]
    planned = scenarios_in(output_dir, scenarios["cause"].tolist(), cfg.seed, references)
    reused_sequences(method, planned)
    if rank_zero_only.rank == 0:  # set from the environment in every DDP process before it starts
        write_run_record(cfg, output_dir)
    drawn = draw_sequences(method, planned, cfg.trainer)
    sequences, means = score_sequences(planned, dino, clip, cfg.trainer)
    if rank_zero_only.rank != 0:
        return None
    log.info("generated %d sequence(s) into %s", len(drawn), output_dir)

    summary = summary_row(method, cfg.label, scenarios, means, cfg.paths.cache_dir)
    table = pd.DataFrame([summary])
    write_csv(sequences, output_dir / "sequences.csv")
    write_csv(table, output_dir / SUMMARY_FILE)
    markdown = results_markdown(table)
    write_markdown(markdown, output_dir / "summary.md")
    write_run_metrics(output_dir, sweep_metrics(summary))
    print(markdown, flush=True)
    wandb_settings = (cfg.get("logger") or {}).get("wandb")
    config = OmegaConf.to_container(cfg, resolve=True)
    folders = [scenario.folder for scenario in planned]
    log_evaluation(wandb_settings, config, output_dir, sequences, folders, summary)
    return table


@hydra_app("evaluate", check=read_scenarios)
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()

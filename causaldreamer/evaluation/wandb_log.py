"""An evaluation as one W&B run: a table with each sequence's grid beside its metrics, the summary.

No Lightning here (nothing trains), so the run is opened with ``wandb.init`` from the settings of the
``logger`` group's ``wandb`` entry: offline unless WANDB_MODE says otherwise, grouped by experiment,
job type "evaluate", its files in the evaluation's output directory beside the sequences it shows. A
logger group without that entry (``logger=csv``) logs nothing to W&B.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from causaldreamer.evaluation.tables import METRIC_HEADERS

GRID_FILE = "grid.png"  # the frames side by side, as write_sequence names it


def log_evaluation(
    settings: DictConfig | None,
    config: dict,
    output_dir: Path,
    sequences: pd.DataFrame,
    folders: list[Path],
    summary: dict,
) -> None:
    """``sequences``: one row per folder (scenario, cause, the metrics); ``summary``: the run's row."""
    if settings is None:
        return
    import wandb  # imported only when W&B is on: it takes a second or two

    run = wandb.init(
        project=settings.project,
        group=settings.group,
        job_type=settings.job_type,
        tags=list(settings.tags or []),
        dir=str(output_dir),
        mode=settings.mode,
        name=summary["label"],
        config=config,
    )
    try:
        table = wandb.Table(columns=["scenario", "cause", "grid", *METRIC_HEADERS])
        for row, folder in zip(sequences.itertuples(index=False), folders, strict=True):
            grid = wandb.Image(str(folder / GRID_FILE), caption=row.cause)
            table.add_data(row.scenario, row.cause, grid, *(getattr(row, m) for m in METRIC_HEADERS))
        run.log({"sequences": table})
        run.summary.update({k: v for k, v in summary.items() if isinstance(v, int | float)})
    finally:
        wandb.finish()

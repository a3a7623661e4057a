"""``python -m causaldreamer.compare summaries=[RUN_A,RUN_B,...]``: evaluations side by side.

Each evaluation (``causaldreamer.evaluate``) writes one summary row; this stacks the rows of several, in
the order given, into ``comparison.csv`` and ``comparison.md`` (the paper's table, then counterfactual
coverage where a row has it) and prints the markdown.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from causaldreamer.cli import hydra_app
from causaldreamer.config import register_resolvers
from causaldreamer.errors import UserError
from causaldreamer.evaluation.tables import read_summary, results_markdown, write_csv, write_markdown

log = logging.getLogger(__name__)
register_resolvers()


def compare(cfg: DictConfig) -> pd.DataFrame:
    """Read every summary first (any bad one stops the run before a file is written), then write."""
    paths = [cfg.summaries] if isinstance(cfg.summaries, str) else list(cfg.summaries or [])
    if not paths:
        raise UserError("no summaries given; pass summaries=[RUN_DIR_OR_SUMMARY_CSV,...]")
    table = pd.concat([read_summary(path) for path in paths], ignore_index=True)
    output_dir = Path(cfg.output_dir)
    markdown = results_markdown(table)
    write_csv(table, output_dir / "comparison.csv")
    write_markdown(markdown, output_dir / "comparison.md")
    print(markdown, flush=True)
    log.info("compared %d summaries in %s", len(paths), output_dir)
    return table


@hydra_app("compare")
def main(cfg: DictConfig) -> None:
    compare(cfg)


if __name__ == "__main__":
    main()

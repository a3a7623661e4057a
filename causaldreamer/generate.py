"""``python -m causaldreamer.generate cause=... adapter=PATH [overrides]``: causes -> image sequences.

Hydra composes ``conf/generate.yaml``. One cause (``cause=``) or a file of them (``causes_file=``, with
``limit``); every sequence lands in its own subfolder of ``output_dir``, written atomically. Sequences
already complete there are skipped, so an interrupted run resumes where it stopped. All settings (the
``generation`` group) are checked before any model loads or any file is written. The sequences are drawn
through ``trainer.predict`` (``causaldreamer.generation``), so ``trainer=ddp trainer.devices=N`` shards
the causes over N processes.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from causaldreamer.cli import hydra_app
from causaldreamer.config import register_resolvers, write_run_record
from causaldreamer.diffusion.adapter_folder import load_adapter_folder
from causaldreamer.diffusion.sequence_files import is_complete, sequence_folder_name
from causaldreamer.diffusion.settings import check_cause, check_settings
from causaldreamer.errors import UserError

log = logging.getLogger(__name__)
register_resolvers()


def read_causes(cfg: DictConfig) -> list[str]:
    """``cause``, or the causes of ``causes_file`` (a CSV column, or one per line), the first ``limit``."""
    if (cfg.cause is None) == (cfg.causes_file is None):
        raise UserError("give exactly one of cause='a sentence' or causes_file=PATH")
    if cfg.cause is not None:
        return [check_cause(cfg.cause)]
    path = Path(cfg.causes_file)
    if not path.is_file():
        raise UserError(
            f"causes_file {path} not found; pass a .csv with a {cfg.cause_column!r} column or a .txt"
        )
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if cfg.cause_column not in (reader.fieldnames or []):
                raise UserError(
                    f"{path} has no column {cfg.cause_column!r}; set cause_column to one of {reader.fieldnames}"
                )
            causes = [row[cfg.cause_column] for row in reader]
    else:
        causes = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if cfg.limit is not None:
        if not isinstance(cfg.limit, int) or cfg.limit < 1:
            raise UserError(f"limit={cfg.limit!r}: must be an integer >= 1")
        causes = causes[: cfg.limit]
    if not causes:
        raise UserError(f"{path} holds no causes")
    return [check_cause(cause) for cause in causes]


def generate(cfg: DictConfig) -> list[Path]:
    """Validate everything, load the models once, then write one folder per cause; returns the folders."""
    causes = read_causes(cfg)
    if not isinstance(cfg.seed, int):
        raise UserError(f"seed={cfg.seed!r}: must be an integer")
    settings = instantiate(cfg.generation)
    adapter_folder = load_adapter_folder(cfg.adapter)
    check_settings(settings, len(adapter_folder.bank))

    output_dir = Path(cfg.output_dir)
    folders = [output_dir / sequence_folder_name(i, cause) for i, cause in enumerate(causes)]
    todo = [folder for folder in folders if not is_complete(folder)]
    if len(todo) < len(causes):
        log.info(
            "%d of %d sequences already complete in %s: skipped",
            len(causes) - len(todo),
            len(causes),
            output_dir,
        )
    if not todo:
        return folders

    # Imported only now: diffusers and Lightning take seconds to import, and bad settings fail before that.
    from lightning.pytorch.utilities import rank_zero_only

    from causaldreamer.generation.run import draw_sequences
    from causaldreamer.generation.scenarios import scenarios_in
    from causaldreamer.methods.causaldreamer import causaldreamer_method

    method = causaldreamer_method(adapter_folder, settings, cfg.diffusion.pipeline, cfg.encoder)
    if rank_zero_only.rank == 0:  # set from the environment in every DDP process before it starts
        write_run_record(cfg, output_dir)
    draw_sequences(method, scenarios_in(output_dir, causes, cfg.seed), cfg.trainer)
    if rank_zero_only.rank == 0:
        log.info("wrote %d sequence(s) to %s", len(todo), output_dir)
    return folders


@hydra_app("generate", check=read_causes)
def main(cfg: DictConfig) -> None:
    generate(cfg)


if __name__ == "__main__":
    main()

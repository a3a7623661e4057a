"""Config plumbing shared by the entry points: resolvers, value checks, the run record."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from causaldreamer import locations, schema
from causaldreamer.errors import UserError
from causaldreamer.io import atomic_path


def register_resolvers() -> None:
    """``${run_suffix:}``: random per process, so two runs started in the same second never collide.
    ``${ddp_start_method:METHOD}``: see ``ddp_start_method``. ``${dataset_dir:NAME}`` and
    ``${embedding_cache_dir:}``: the default locations of ``causaldreamer.locations``.
    ``${prompt_template:}``: the prompt template, written once (``causaldreamer.prompts``)."""
    if not OmegaConf.has_resolver("run_suffix"):
        suffix = secrets.token_hex(3)
        OmegaConf.register_new_resolver("run_suffix", lambda: suffix)
    if not OmegaConf.has_resolver("ddp_start_method"):
        OmegaConf.register_new_resolver("ddp_start_method", ddp_start_method)
    if not OmegaConf.has_resolver("dataset_dir"):
        OmegaConf.register_new_resolver("dataset_dir", locations.dataset_dir)
        OmegaConf.register_new_resolver("embedding_cache_dir", locations.embedding_cache_dir)
    if not OmegaConf.has_resolver("prompt_template"):
        OmegaConf.register_new_resolver("prompt_template", _default_template)


def _default_template() -> str:
    from causaldreamer.prompts import DEFAULT_TEMPLATE  # imports torch: only when a config asks for it

    return DEFAULT_TEMPLATE


def ddp_start_method(in_multirun: str = "spawn") -> str:
    """How Lightning starts DDP processes. "popen" (Lightning's default) re-runs the command line once per
    extra process, which inside a Hydra multirun job would start the whole sweep again in each of them;
    such a job starts its processes with ``in_multirun`` instead ("spawn", or "fork" where CUDA is not
    used). Under SLURM, Lightning starts none: SLURM already did."""
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    return in_multirun if multirun else "popen"


def validate_train_config(cfg: DictConfig) -> None:
    """The schema's value checks and the resume checkpoint, for ``train`` called from Python (the CLI's
    front door runs the schema's checks itself, then ``check_resume_path``)."""
    schema.check_values(cfg, [])
    check_resume_path(cfg)


def check_resume_path(cfg: DictConfig) -> None:
    if cfg.ckpt_path and not Path(cfg.ckpt_path).is_file():
        raise UserError(f"ckpt_path={cfg.ckpt_path} does not exist; pass the path of a .ckpt file to resume")


def git_revision() -> str:
    """The project's git SHA (with '-dirty' for uncommitted changes), or 'unknown' outside a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def write_run_record(cfg: DictConfig, output_dir: Path) -> None:
    """The resolved config and the git SHA, in the run directory, before anything else happens."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(output_dir / "run.yaml") as tmp:
            record = {"git_sha": git_revision(), "config": OmegaConf.to_container(cfg, resolve=True)}
            tmp.write_text(OmegaConf.to_yaml(record))
    except OSError as err:
        raise UserError(
            f"cannot write to the output directory {output_dir} ({err.strerror}); choose a writable one"
        ) from None

"""Shared fixtures: the real CausalLite10K from ../shared, one embedding cache per session, Hydra compose."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from causaldreamer import locations
from causaldreamer.cli import CONFIG_DIR
from causaldreamer.config import register_resolvers

REPO = Path(__file__).resolve().parents[1]
CONF = CONFIG_DIR
SHARED_DATA = REPO.parent / "shared" / "data" / "causallite10k"

register_resolvers()

# Tests run smoke-sized models whose kernels take microseconds: a second thread only adds
# synchronisation, and on a busy 2-core machine its spin-waits made runs several times slower.
# Subprocesses (the CLI tests) inherit the setting through the environment.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("CAUSALDREAMER_DATA_DIR", SHARED_DATA))
    if not (path / "CausalLite10K.csv").is_file():
        pytest.fail(
            f"CausalLite10K not found at {path}: put ../shared beside the checkout or set CAUSALDREAMER_DATA_DIR"
        )
    return path


@pytest.fixture(scope="session")
def ecare_dir() -> Path:
    """e-CARE's folder, found as the configs find it (``paths.ecare_dir``)."""
    path = Path(locations.dataset_dir("ecare"))
    if not (path / "train.jsonl").is_file():
        pytest.fail(
            f"e-CARE not found at {path}: put ../shared beside the checkout or set CAUSALDREAMER_ECARE_DIR"
        )
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One embedding cache for the whole session: each text is encoded once across all tests.

    Under pytest-xdist the workers share it (its file lock and atomic writes make that safe).
    """
    if "CAUSALDREAMER_TEST_CACHE_DIR" in os.environ:
        return Path(os.environ["CAUSALDREAMER_TEST_CACHE_DIR"])
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the directory all workers' temp folders live in
    return root / "embedding-cache"


@pytest.fixture(scope="session")
def minilm():
    from causaldreamer.encoders import MiniLMEncoder

    return MiniLMEncoder()


def cli_environment(data_dir: Path, cache_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for entry points run as subprocesses: real data, the session cache, offline W&B.

    Without WANDB_SERVICE: a test that used W&B in-process leaves its service's address there, and every
    child would log through that one service (a killed run's id then stays "in use" for its resume)
    instead of starting its own, as a command typed in a shell does.
    """
    inherited = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return dict(
        inherited,
        CAUSALDREAMER_DATA_DIR=str(data_dir),
        CAUSALDREAMER_CACHE_DIR=str(cache_dir),
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        HYDRA_FULL_ERROR="0",
        **extra,
    )


@pytest.fixture()
def cli_env(data_dir, cache_dir) -> dict[str, str]:
    return cli_environment(data_dir, cache_dir)


def write_adapter_folder(folder: Path, encoder, data_dir: Path, bank_size: int) -> Path:
    """The layout the trainer exports (config.json, model.safetensors, effect_bank.safetensors), with the
    first ``bank_size`` real effects and random gate and bias heads, so the intervention shows."""
    from causaldreamer.adapter import CausalAdapter
    from causaldreamer.bank import EffectBank

    with open(data_dir / "CausalLite10K.csv", newline="", encoding="utf-8") as handle:
        effects = list(dict.fromkeys(row["effect"] for row in csv.DictReader(handle)))[:bank_size]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        adapter = CausalAdapter()
        for head in (adapter.q_gate, adapter.k_gate, adapter.bias):
            torch.nn.init.normal_(head.weight, std=0.5)
    adapter.save_pretrained(folder)
    EffectBank(effects, encoder.encode(effects), encoder.identity).save(folder)
    return folder


def bare_trainer(**kwargs):
    """A Lightning Trainer that trains only: no validation, logging, checkpoints, progress bar or summary
    unless ``kwargs`` ask for them."""
    import lightning as L

    settings = dict(
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**(settings | kwargs))


def run_module(module: str, args: list[str], env: dict[str, str], cwd: Path, timeout: int = 300):
    """``python -m module args`` as a user would run it; returns the CompletedProcess."""
    return run_python(["-m", module, *args], env, cwd, timeout)


def run_python(args: list[str], env: dict[str, str], cwd: Path, timeout: int = 300):
    """``python args`` in a subprocess, no stdin, output captured; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def compose_config(name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose ``conf/<name>.yaml`` with Hydra's compose API, resolved against ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg.hydra
    return cfg


@pytest.fixture()
def train_cfg(tmp_path, data_dir, cache_dir):
    """A factory of composed train configs (smoke experiment, offline W&B) writing into tmp_path."""

    def make(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        base = [
            "+experiment=smoke",
            f"paths.data_dir={data_dir}",
            f"paths.cache_dir={cache_dir}",
            "logger.wandb.mode=offline",
        ]
        return compose_config("train", base + list(overrides), output_dir or tmp_path)

    return make

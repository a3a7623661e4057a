"""A training run killed with SIGKILL in its second epoch and resumed from its last checkpoint ends exactly
where an uninterrupted run ends: the same logged values, weights and exported adapter, bit for bit (CPU,
same seed), logged into the same W&B run. The W&B API key in its environment is written nowhere.

The killed run is resumed in its own run directory (``hydra.run.dir=RUN ckpt_path=RUN/checkpoints/
last.ckpt``), as one continues a job: its checkpoint bookkeeping (best score so far) carries on. Lightning
does not carry that bookkeeping into a fresh directory, so the "best" checkpoint tested and exported
after a resume there may differ.
"""

from __future__ import annotations

import csv
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import cli_environment

from causaldreamer.checkpoints import read_checkpoint, wandb_run_id

from .cli_checks import Command, wait_until

pytestmark = pytest.mark.reliability

TRAIN = ["+experiment=smoke", "trainer.max_epochs=3"]
SECRET = "d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f7a8b9c0d"  # the shape of a W&B API key, never a real one


@dataclass
class Runs:
    reference: Path  # uninterrupted
    resumed: Path  # killed, then resumed in place
    killed_checkpoint: dict  # last.ckpt as the kill left it


def kill_after_first_checkpoint(command: Command, run_dir: Path, stderr: Path) -> None:
    """Start the run and SIGKILL its process group as soon as its first last.ckpt lands: the end of
    epoch 1, so the kill falls in epoch 2. W&B's service runs in a session of its own and exits by
    itself once the run is gone; the resumed run starts a service of its own (conftest.cli_environment)."""
    process = command.start(stderr)
    last = run_dir / "checkpoints" / "last.ckpt"
    try:
        wait_until(last.exists, process, f"{last} appeared")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def runs(tmp_path_factory, slice_dir, cache_dir) -> Runs:
    root = tmp_path_factory.mktemp("resume")
    env = cli_environment(slice_dir, cache_dir, WANDB_API_KEY=SECRET)
    reference, resumed = root / "reference", root / "resumed"
    last = resumed / "checkpoints" / "last.ckpt"
    uninterrupted = Command("causaldreamer.train", [*TRAIN, "logger=csv", f"hydra.run.dir={reference}"], env)
    interrupted = Command("causaldreamer.train", [*TRAIN, f"hydra.run.dir={resumed}"], env)
    resume = Command("causaldreamer.train", [*interrupted.args, f"ckpt_path={last}"], env)
    with ThreadPoolExecutor(max_workers=1) as pool:  # the reference runs beside the killed one
        reference_result = pool.submit(uninterrupted.run)
        kill_after_first_checkpoint(interrupted, resumed, root / "killed.stderr")
        # Every checkpoint the kill left is whole: atomic saves.
        checkpoints = {path.name: read_checkpoint(path) for path in last.parent.glob("*.ckpt")}
        result = resume.run()
        assert result.returncode == 0, result.stderr[-3000:]
        assert reference_result.result().returncode == 0, reference_result.result().stderr[-3000:]
    return Runs(reference, resumed, checkpoints["last.ckpt"])


def logged_rows(run_dir: Path) -> list[tuple]:
    """Every row of the run's CSV log, as sorted (column, value) pairs, without empty cells."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as handle:
        return sorted(
            tuple(sorted((k, v) for k, v in row.items() if v != "")) for row in csv.DictReader(handle)
        )


def test_killed_in_second_epoch(runs):
    assert runs.killed_checkpoint["epoch"] == 0 and runs.killed_checkpoint["global_step"] == 256 // 32


def test_resumed_run_ends_bit_for_bit_where_an_uninterrupted_run_ends(runs):
    rows = logged_rows(runs.reference)
    assert any(dict(row).get("test/recall@5") for row in rows)  # the run went as far as its test
    assert logged_rows(runs.resumed) == rows  # every loss, learning rate and metric, each logged once
    final = read_checkpoint(runs.resumed / "checkpoints" / "last.ckpt")
    expected = read_checkpoint(runs.reference / "checkpoints" / "last.ckpt")
    assert final["global_step"] == expected["global_step"] == 3 * 256 // 32
    assert final["state_dict"].keys() == expected["state_dict"].keys()
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(final["state_dict"][name], tensor), name
    adapter = "adapter/model.safetensors"
    assert (runs.resumed / adapter).read_bytes() == (runs.reference / adapter).read_bytes()


def test_resumed_run_continues_the_same_wandb_run(runs):
    run_id = wandb_run_id(runs.killed_checkpoint)
    assert run_id
    folders = sorted((runs.resumed / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and all(folder.name.endswith(f"-{run_id}") for folder in folders)
    assert wandb_run_id(read_checkpoint(runs.resumed / "checkpoints" / "last.ckpt")) == run_id


def test_wandb_key_is_written_nowhere(runs):
    """Not in a log, a saved config, a checkpoint or W&B's own files, of any of the three runs."""
    files = [path for path in runs.resumed.parent.rglob("*") if path.is_file()]
    assert any("wandb" in path.parts for path in files)
    assert not [path for path in files if SECRET.encode() in path.read_bytes()]

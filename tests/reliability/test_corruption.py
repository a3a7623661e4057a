"""Damaged files are detected and named: a checkpoint or an exported adapter file that is corrupt or truncated
is refused in one line (exit 2, nothing written); a damaged embedding-cache file is rebuilt. And a
checkpoint is never half-written: a kill in the middle of a save leaves the previous one whole; and what
is written atomically stays as readable as any other file.

Not covered, because the formats carry no checksum: a flipped byte inside the tensor data of a safetensors
file (adapter weights, effect bank, cache) loads without error. Checkpoints are zip archives with CRCs,
which the checkpoint reader verifies.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import cli_environment
from hydra.utils import instantiate
from safetensors import safe_open

from causaldreamer.adapter import CausalAdapter
from causaldreamer.checkpoint_io import AtomicCheckpointIO
from causaldreamer.checkpoints import read_checkpoint
from causaldreamer.data.embedding_cache import EmbeddingCache
from causaldreamer.data.files import PAIRS_FILE, load_pairs
from causaldreamer.io import atomic_dir, atomic_path

from .cli_checks import (
    CAUSE,
    REPO,
    Attempt,
    Command,
    assert_refused_and_nothing_written,
    run_concurrently,
    wait_until,
)

pytestmark = pytest.mark.reliability

EXPECTED = {
    "checkpoint-truncated": ("checkpoint-truncated.ckpt is truncated or not a checkpoint (no zip archive)",),
    "checkpoint-flipped-byte": ("checkpoint-flipped-byte.ckpt is corrupt (checksum mismatch in",),
    "adapter-weights-truncated": ("adapter-weights-truncated-adapter cannot be loaded (SafetensorError",),
    "adapter-config-corrupt": ("adapter-config-corrupt-adapter cannot be loaded (JSONDecodeError",),
    "effect-bank-truncated": (
        "effect-bank-truncated-adapter/effect_bank.safetensors is corrupt or truncated",
    ),
}


def truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def flip_middle_byte(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def adapter_checkpoint(path: Path) -> Path:
    """A checkpoint as the trainer writes it, as far as the reader is concerned: a zip of tensors."""
    state = {f"adapter.{k}": v for k, v in CausalAdapter().state_dict().items()}
    torch.save({"epoch": 0, "global_step": 8, "state_dict": state}, path)
    return path


@pytest.fixture(scope="module")
def refusals(tmp_path_factory, slice_dir, adapter_dir) -> dict:
    base = tmp_path_factory.mktemp("corruption")

    def train_from(name: str, damage) -> Attempt:
        checkpoint = damage(adapter_checkpoint(base / f"{name}.ckpt"))
        args = ["+experiment=smoke", "logger=csv", f"ckpt_path={checkpoint}"]
        return Attempt("causaldreamer.train", args, slice_dir, base / name)

    def generate_with(name: str, damage) -> Attempt:
        folder = shutil.copytree(adapter_dir, base / f"{name}-adapter")
        damage(folder)
        args = ["diffusion=tiny", f"cause={CAUSE!r}", f"adapter={folder}"]
        return Attempt("causaldreamer.generate", args, slice_dir, base / name)

    attempts = [
        train_from("checkpoint-truncated", truncate),
        train_from("checkpoint-flipped-byte", flip_middle_byte),
        generate_with("adapter-weights-truncated", lambda f: truncate(f / "model.safetensors")),
        generate_with("adapter-config-corrupt", lambda f: (f / "config.json").write_text('{"dim": 384,')),
        generate_with("effect-bank-truncated", lambda f: truncate(f / "effect_bank.safetensors")),
    ]
    assert sorted(a.root.name for a in attempts) == sorted(EXPECTED)
    results = run_concurrently({a.root.name: a.command() for a in attempts})
    return {a.root.name: (a, results[a.root.name]) for a in attempts}


@pytest.mark.parametrize("case", EXPECTED)
def test_damaged_file_refused_in_one_line_with_nothing_written(refusals, case):
    attempt, result = refusals[case]
    assert_refused_and_nothing_written(attempt, result, *EXPECTED[case])


def test_damaged_embedding_cache_is_rebuilt_by_the_train_cli(tmp_path, slice_dir, minilm):
    cache = EmbeddingCache(tmp_path / "cache", minilm)
    effects = list(dict.fromkeys(load_pairs(slice_dir / PAIRS_FILE)["effect"]))
    expected = cache.sentences(effects)  # the effect bank, as an earlier run leaves it in the cache
    sentences = cache.folder / "sentences.safetensors"
    truncate(sentences)
    args = ["+experiment=smoke", "logger=csv", "trainer.max_epochs=1", "test=false", "data.limit_train=64"]
    command = Command(
        "causaldreamer.train",
        [*args, "data.limit_eval=32", f"hydra.run.dir={tmp_path / 'run'}"],
        cli_environment(slice_dir, tmp_path / "cache"),
    )
    result = command.run()
    assert result.returncode == 0, result.stderr[-3000:]
    log = (tmp_path / "run" / "train.log").read_text()
    assert f"embedding cache {sentences} is corrupt or truncated" in log
    with safe_open(str(sentences), framework="pt") as handle:
        texts = json.loads(handle.metadata()["texts"])
        rebuilt = handle.get_tensor("embeddings")
    encoded = re.findall(rf"embedding cache {re.escape(str(sentences))}: encoded (\d+) new text", log)
    assert sum(map(int, encoded)) == len(texts)  # nothing of the damaged file was used, no text twice
    torch.testing.assert_close(rebuilt[[texts.index(effect) for effect in effects]], expected)


SAVER = """
import sys, torch
from causaldreamer.checkpoint_io import AtomicCheckpointIO
io, path = AtomicCheckpointIO(), sys.argv[1]
io.save_checkpoint({"version": 1, "weights": torch.ones(1000)}, path)
io.save_checkpoint({"version": 2, "weights": torch.ones(50_000_000)}, path)  # 200 MB, killed while written
"""


def test_kill_in_the_middle_of_a_save_leaves_the_previous_checkpoint_whole(tmp_path):
    path = tmp_path / "last.ckpt"
    with open(tmp_path / "saver.stderr", "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", SAVER, str(path)], cwd=REPO, stderr=stderr, start_new_session=True
        )

    def second_save_under_way() -> bool:
        return path.exists() and any(tmp_path.glob(".last.ckpt.*.tmp"))

    try:
        wait_until(second_save_under_way, process, "the second save")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert list(tmp_path.glob(".last.ckpt.*.tmp")), "the kill came after the second save had finished"
    assert read_checkpoint(path)["version"] == 1


def test_atomic_writes_keep_the_usual_modes(tmp_path):
    """Written through a temporary file, yet as readable as any file the user writes (tempfile's would
    be 0600): teammates can read a shared embedding cache, a checkpoint or an exported adapter."""
    umask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "file") as tmp:
            tmp.write_text("x")
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "file").write_text("y")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "file").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755


def test_trainer_saves_through_the_atomic_plugin(train_cfg):
    trainer = instantiate(train_cfg().trainer)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)

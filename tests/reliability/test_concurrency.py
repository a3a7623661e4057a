"""Two jobs of one multirun, run in parallel by Hydra's joblib launcher, build the same embedding cache at
the same time: both finish, every text is encoded once, and the cache equals one built by one process.

To make the race certain rather than likely, the test holds the cache's lock while the jobs start and lets
go only once both jobs' logs show them waiting on it (filelock's own debug lines); from there the jobs race
as they would in any sweep.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import cli_environment
from filelock import FileLock
from safetensors import safe_open
from safetensors.torch import load_file

from causaldreamer.data.embedding_cache import EmbeddingCache
from causaldreamer.prompts import DEFAULT_TEMPLATE

from .cli_checks import Command, wait_until

pytestmark = pytest.mark.reliability

ENCODED = re.compile(r"embedding cache (?P<path>\S+): encoded (?P<count>\d+) new text")
JOBS = ("0", "1")


def cached(path: Path) -> tuple[list[str], dict[str, torch.Tensor]]:
    with safe_open(str(path), framework="pt") as handle:
        texts = json.loads(handle.metadata()["texts"])
    return texts, load_file(str(path))


def test_parallel_jobs_build_one_cache_once(tmp_path, slice_dir, minilm):
    cache, sweep = tmp_path / "cache", tmp_path / "sweep"
    sentences = cache / minilm.identity / "sentences.safetensors"
    sentences.parent.mkdir(parents=True)
    command = Command(
        "causaldreamer.train",
        [
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "hydra.verbose=filelock",  # lock waits appear in each job's log
            f"hydra.sweep.dir={sweep}",
            "+experiment=smoke",
            "logger=csv",
            "trainer.max_epochs=1",
            "test=false",
            "data.limit_train=64",
            "data.limit_eval=32",
            "model.lam=0.6,0.9",
        ],
        cli_environment(slice_dir, cache),
    )
    waiting = f"not acquired on {sentences}.lock"

    def both_jobs_waiting() -> bool:
        logs = [sweep / job / "train.log" for job in JOBS]
        return all(log.is_file() and waiting in log.read_text() for log in logs)

    with FileLock(f"{sentences}.lock"):
        process = command.start(tmp_path / "multirun.stderr")
        wait_until(both_jobs_waiting, process, "both jobs waiting on the cache lock")
    assert process.wait(timeout=600) == 0, (tmp_path / "multirun.stderr").read_text()[-3000:]

    for job in JOBS:
        assert (sweep / job / "adapter" / "model.safetensors").is_file()
    encoded = Counter()
    for job in JOBS:
        for match in ENCODED.finditer((sweep / job / "train.log").read_text()):
            encoded[Path(match["path"]).name] += int(match["count"])
    files = sorted(sentences.parent.glob("*.safetensors"))
    assert {path.name for path in files} == set(encoded) and len(files) == 2  # sentences, prompt tokens
    alone = EmbeddingCache(tmp_path / "alone", minilm)
    for path in files:
        texts, tensors = cached(path)
        assert encoded[path.name] == len(texts) == len(set(texts)), path.name  # each text encoded once
        if path == sentences:
            torch.testing.assert_close(tensors["embeddings"], alone.sentences(texts))
        else:
            tokens = alone.prompt_tokens(DEFAULT_TEMPLATE, [tuple(json.loads(text)) for text in texts])
            length = tokens.states.shape[1]
            assert torch.equal(tensors["span_ids"][:, :length].long(), tokens.span_ids)
            torch.testing.assert_close(tensors["states"][:, :length], tokens.states)

"""What the reliability tests expect of an entry point, and how they run it.

"Nothing written" means no output of ours: no run record, checkpoint, metrics, exported adapter,
generated sequence or embedding-cache entry. Hydra creates the run directory, its ``.hydra/`` folder and
the ``<task>.log`` file before any code of ours runs; those are Hydra's record of the attempt and are
allowed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from conftest import cli_environment, run_module

from causaldreamer.errors import EXIT_USER_ERROR

REPO = Path(__file__).resolve().parents[2]
CAUSE = "a glass falls off a table"  # what generate attempts are asked for
HYDRA_LOGS = ("train.log", "generate.log")


@dataclass
class Command:
    """``python -m module args`` in the repository, with its environment."""

    module: str
    args: list[str]
    env: dict[str, str] = field(repr=False)

    def run(self) -> subprocess.CompletedProcess:
        return run_module(self.module, self.args, self.env, REPO, timeout=600)

    def start(self, stderr: Path) -> subprocess.Popen:
        """Start it in its own process group, so that a test can kill it together with its children."""
        with open(stderr, "w") as log:
            return subprocess.Popen(
                [sys.executable, "-m", self.module, *self.args],
                cwd=REPO,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )


def wait_until(
    condition: Callable[[], bool], process: subprocess.Popen, what: str, timeout: float = 400
) -> None:
    """Poll ``condition`` (a file the run writes); fail if the run ends first or the time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended (code {process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


@dataclass
class Attempt:
    """One run of an entry point with its own run directory and its own, initially empty, embedding cache."""

    module: str
    args: list[str]
    data_dir: Path
    root: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    def command(self) -> Command:
        environment = cli_environment(self.data_dir, self.cache_dir, **self.env)
        return Command(self.module, [*self.args, f"hydra.run.dir={self.run_dir}"], environment)


def run_concurrently(
    commands: dict[str, Command], workers: int = 3
) -> dict[str, subprocess.CompletedProcess]:
    """Independent runs side by side: each spends seconds importing torch and Lightning, mostly waiting
    on one core, so a few at a time cut the suite's wall time without changing what any run does."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {name: pool.submit(command.run) for name, command in commands.items()}
        return {name: future.result() for name, future in futures.items()}


def assert_one_line_user_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit code 2, no traceback, and stderr ending in one ``error: ...`` line holding ``fragments``."""
    tail = result.stderr[-3000:]
    assert result.returncode == EXIT_USER_ERROR, (result.returncode, tail)
    assert "Traceback" not in result.stderr, tail
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and result.stderr.count("error: ") == 1, tail
    for fragment in fragments:
        assert fragment in last, (fragment, last)
    return last


def outputs_under(root: Path) -> list[Path]:
    """Every file under ``root`` that is not Hydra's own record of the attempt."""
    if not root.exists():
        return []
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file() and ".hydra" not in path.parts and path.name not in HYDRA_LOGS
    )


def assert_refused_and_nothing_written(
    attempt: Attempt, result: subprocess.CompletedProcess, *fragments: str
) -> None:
    assert_one_line_user_error(result, *fragments)
    assert outputs_under(attempt.run_dir) == []
    assert outputs_under(attempt.cache_dir) == []

"""The package as a user installs it: a wheel (not editable), its configs inside, its console scripts,
run from a directory that has nothing to do with the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ("causaldreamer-train", "causaldreamer-generate", "causaldreamer-evaluate", "causaldreamer-compare")

pytestmark = pytest.mark.slow


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The project's wheel, built and installed into a folder of its own; the environment that uses it."""
    root = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(REPO)], root, None
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (root / "dist").glob("causaldreamer-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert {"causaldreamer/conf/train.yaml", "causaldreamer/conf/experiment/lambda_sweep.yaml"} <= names
    assert all(f"{script} = causaldreamer." in entry_points for script in SCRIPTS)
    site = root / "site"
    done = run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], root, None)
    assert done.returncode == 0, done.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAUSALDREAMER_", "WANDB_SERVICE"))}
    # An installed package has no checkout to find ../shared beside: the user names the data folder.
    shared = REPO.parent / "shared" / "data"
    env |= {"PYTHONPATH": str(site), "CAUSALDREAMER_DATA_DIR": str(shared / "causallite10k")}
    env |= {"CAUSALDREAMER_ECARE_DIR": str(shared / "ecare")}
    env |= {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "XDG_CACHE_HOME": str(root / "user-cache")}
    return site, env


def test_wheel_runs_from_an_unrelated_directory(installed, tmp_path, cache_dir):
    site, env = installed
    env = {**env, "CAUSALDREAMER_CACHE_DIR": str(cache_dir)}  # the session's embeddings, encoded once
    where = run([sys.executable, "-c", "import causaldreamer.train as t; print(t.__file__)"], tmp_path, env)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    for script in SCRIPTS:
        shown = run([str(site / "bin" / script), "--help"], tmp_path, env, timeout=120)
        assert shown.returncode == 0 and "== Configuration groups ==" in shown.stdout, shown.stderr[-2000:]

    trained = run(
        [str(site / "bin/causaldreamer-train"), "+experiment=smoke", "trainer.max_epochs=1"], tmp_path, env
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    assert (run_dir / "adapter" / "model.safetensors").is_file() and (run_dir / "metrics.json").is_file()

    args = [
        "cause=a glass tipping over",
        f"adapter={run_dir / 'adapter'}",
        "diffusion=tiny",
        "output_dir=out",
    ]
    generated = run([str(site / "bin/causaldreamer-generate"), *args], tmp_path, env)
    assert generated.returncode == 0, generated.stderr[-3000:]
    (sequence,) = (p for p in (tmp_path / "out").iterdir() if p.is_dir())
    assert {"grid.png", "sequence.gif", "record.json"} <= {p.name for p in sequence.iterdir()}

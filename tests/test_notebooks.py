"""The notebooks run top to bottom under nbmake on small data, and are committed without outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, compose_config

from causaldreamer.sweeps.records import write_run_metrics
from causaldreamer.sweeps.summary import write_summary
from causaldreamer.train import train

NOTEBOOKS = REPO / "notebooks"


@pytest.fixture()
def smoke_adapter(tmp_path, data_dir, cache_dir) -> Path:
    """An adapter exported by a one-epoch smoke run: what the quickstart loads."""
    overrides = [
        "+experiment=smoke",
        "trainer.max_epochs=1",
        "test=false",
        "logger=csv",
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={cache_dir}",
    ]
    train(compose_config("train", overrides, tmp_path / "run"))
    return tmp_path / "run" / "adapter"


@pytest.fixture()
def sweep_dir(tmp_path, monkeypatch) -> Path:
    """A lambda sweep's directory with image metrics, summarised the way every multirun is."""
    sweep = tmp_path / "sweep"
    for num, lam in enumerate((0.5, 0.7, 1.0)):
        job = sweep / str(num)
        overrides = ["+experiment=lambda_sweep", "diffusion=sd15", f"model.lam={lam}"]
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        monkeypatch.setattr(
            "causaldreamer.sweeps.records.job_overrides", lambda overrides=overrides: overrides
        )
        write_run_metrics(
            job,
            {
                "val/recall@5": 0.20 + lam / 20,
                "test/recall@5": 0.19 + lam / 20,
                "test/zero_shot/recall@5": 0.12,
                "coverage/mean": 0.50 - lam / 20,
                "coverage/zero_shot/mean": 0.49,
                "coverage/share": 0.15,
                "gen/dino_tcs": 0.70 - lam / 10,
                "gen/sds": 0.20 + lam / 20,
            },
        )
    write_summary(sweep)
    return sweep


def test_notebooks_execute(smoke_adapter, sweep_dir, cli_env):
    env = {**cli_env, "CAUSALDREAMER_ADAPTER": str(smoke_adapter), "CAUSALDREAMER_SWEEP_DIR": str(sweep_dir)}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "--nbmake",
        "--nbmake-timeout=300",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    result = subprocess.run(
        [*command, str(NOTEBOOKS)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert "2 passed" in result.stdout


def test_committed_notebooks_have_no_outputs():
    notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert [p.name for p in notebooks] == ["quickstart.ipynb", "sweep_analysis.ipynb"]
    for path in notebooks:
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, (
                    f"{path.name}: strip outputs"
                )

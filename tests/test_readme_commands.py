"""The README's commands as a user types them: from a directory unrelated to the checkout, in the user's
own environment (no CAUSALDREAMER_* variables, no paths or sweep-dir overrides), the data found beside
the checkout. Only the budget is cut, by ordinary overrides (data limits, epochs, scenarios, trials)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import run_module

pytestmark = pytest.mark.slow

BUDGET = [
    "data.limit_train=64",
    "data.limit_eval=32",
    "trainer.max_epochs=1",
    "trainer.check_val_every_n_epoch=1",
]
SCORING_BUDGET = [*BUDGET, "scoring.limit=4"]


@pytest.fixture(scope="module")
def user_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("CAUSALDREAMER_", "WANDB_SERVICE"))}


def sweep_jobs(cwd: Path) -> tuple[Path, list[Path]]:
    (sweep,) = (cwd / "logs" / "train" / "multiruns").iterdir()
    return sweep, sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: int(p.name))


def job_config(job: Path) -> dict:
    return yaml.safe_load((job / "run.yaml").read_text())["config"]


def test_headline_lambda_sweep_as_typed(user_env, tmp_path):
    result = run_module(
        "causaldreamer.train", ["+experiment=lambda_sweep", *SCORING_BUDGET], user_env, tmp_path, 900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep, jobs = sweep_jobs(tmp_path)
    assert [job_config(job)["model"]["lam"] for job in jobs] == [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())["metrics"]
        assert {"val/recall@5", "test/recall@5", "coverage/mean", "coverage/gain"} <= set(metrics)
        assert (job / "adapter" / "model.safetensors").is_file() and (
            job / "checkpoints" / "last.ckpt"
        ).is_file()
    table = pd.read_csv(sweep / "summary.csv")
    assert table["status"].tolist() == ["done"] * 6 and table["model.lam"].tolist() == [
        0.5,
        0.6,
        0.7,
        0.8,
        0.9,
        1.0,
    ]
    assert (sweep / "summary.md").is_file() and (sweep / "summary.png").is_file()


def test_plain_multirun_and_optuna_as_typed(user_env, tmp_path):
    grid = tmp_path / "grid"
    grid.mkdir()
    result = run_module("causaldreamer.train", ["-m", "model.lam=0.5,0.7,0.9", *BUDGET], user_env, grid)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep, jobs = sweep_jobs(grid)
    assert [job_config(job)["model"]["lam"] for job in jobs] == [0.5, 0.7, 0.9]
    assert all((job / "metrics.json").is_file() for job in jobs)
    assert pd.read_csv(sweep / "summary.csv")["status"].tolist() == ["done"] * 3

    search = tmp_path / "search"
    search.mkdir()
    args = ["+hparams_search=optuna", "hydra.sweeper.n_trials=2", *BUDGET]
    result = run_module("causaldreamer.train", args, user_env, search)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep, jobs = sweep_jobs(search)
    assert len(jobs) == 2 and (sweep / "optimization_results.yaml").is_file()
    assert len(pd.read_csv(sweep / "summary.csv")) == 2


def test_generate_evaluate_compare_as_typed(user_env, tmp_path):
    trained = run_module(
        "causaldreamer.train", ["+experiment=smoke", "trainer.max_epochs=1"], user_env, tmp_path
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    adapter = run_dir / "adapter"

    generated = run_module(
        "causaldreamer.generate",
        ["cause=a glass tipping over", f"adapter={adapter}", "diffusion=tiny"],
        user_env,
        tmp_path,
    )
    assert generated.returncode == 0, generated.stderr[-3000:]
    (out,) = (tmp_path / "logs" / "generate" / "runs").iterdir()
    assert any((folder / "grid.png").is_file() for folder in out.iterdir() if folder.is_dir())

    ours = ["method=causaldreamer", f"adapter={adapter}", "diffusion=tiny", "metrics.tiny=true", "limit=2"]
    baseline = ["method=sd15", "method.tiny=true", "metrics.tiny=true", "limit=2"]
    outputs = []
    for name, args in (("cd", ours), ("sd15", baseline)):
        evaluated = run_module(
            "causaldreamer.evaluate", [*args, f"output_dir=results/{name}"], user_env, tmp_path
        )
        assert evaluated.returncode == 0, evaluated.stderr[-3000:]
        outputs.append(f"results/{name}")
    compared = run_module(
        "causaldreamer.compare",
        [f"summaries=[{','.join(outputs)}]", "output_dir=results/table"],
        user_env,
        tmp_path,
    )
    assert compared.returncode == 0, compared.stderr[-3000:]
    assert len(pd.read_csv(tmp_path / "results" / "table" / "comparison.csv")) == 2

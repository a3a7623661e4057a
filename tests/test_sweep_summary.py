"""The sweep summary as a paper would use it: named axes, a scale per metric, error bars, the budget,
and dry runs with random weights marked in the table and the figure."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from causaldreamer.sweeps.summary import collect_runs, random_weight_parts, summary_figure, write_summary

TINY_DIFFUSION = {"pipeline": {"_target_": "causaldreamer.diffusion.tiny.build_tiny_pipeline", "seed": 0}}
METRICS = {
    "val/recall@5": 0.25,
    "val/zero_shot/recall@5": 0.12,
    "coverage/mean": 0.52,
    "coverage/zero_shot/mean": 0.4955,
    "coverage/share": 0.15,
    "coverage/zero_shot/share": 0.1408,
    "coverage/gain": 0.02,
    "coverage/gain_se": 0.006,
    "gen/dino_tcs": 0.6,
}


def job(sweep: Path, num: int, lam: float, config: dict, metrics: dict = METRICS) -> None:
    """A job directory as train leaves it: run.yaml (the resolved config), metrics.json."""
    folder = sweep / str(num)
    folder.mkdir(parents=True)
    (folder / "run.yaml").write_text(yaml.safe_dump({"git_sha": "abc", "config": config}))
    overrides = ["+experiment=lambda_sweep", f"model.lam={lam}"]
    record = {
        "overrides": overrides,
        "metrics": {k: v + lam / 100 for k, v in metrics.items()},
        "wall_s": 1.0,
    }
    (folder / "metrics.json").write_text(json.dumps(record))


def smoke_config(**extra) -> dict:
    return {
        "experiment_name": "lambda_sweep",
        "trainer": {"max_epochs": 1},
        "data": {"limit_train": 256},
        **extra,
    }


def test_random_weight_parts_name_every_random_model():
    config = {
        "diffusion": TINY_DIFFUSION,
        "scoring": {"generation": {"features": "tiny"}},
        "method": {"tiny": True},
        "metrics": {"tiny": False},
        "encoder": {"_target_": "causaldreamer.encoders.MiniLMEncoder"},
    }
    assert random_weight_parts(config) == ["diffusion.pipeline", "scoring.generation.features", "method.tiny"]
    assert (
        random_weight_parts({"diffusion": None, "scoring": {"generation": {"features": "pretrained"}}}) == []
    )


def test_a_dry_run_is_marked_and_its_budget_stated(tmp_path):
    for num, lam in enumerate((0.9, 0.5)):
        job(tmp_path, num, lam, smoke_config(diffusion=TINY_DIFFUSION))
    table = write_summary(tmp_path)
    assert (
        table["epochs"].tolist() == [1, 1] and table["random_weights"].tolist() == ["diffusion.pipeline"] * 2
    )
    markdown = (tmp_path / "summary.md").read_text()
    assert markdown.startswith("# lambda_sweep: 2 runs, 1 epoch per run on the first 256 training pairs\n")
    assert (
        "**DRY RUN, random weights (diffusion.pipeline): the image metrics (gen/*) mean nothing.**"
        in markdown
    )
    assert (tmp_path / "summary.png").stat().st_size > 10_000

    table, swept, _ = collect_runs(tmp_path)
    figure = summary_figure(table, swept, "lambda_sweep: 2 runs, 1 epoch per run", "DRY RUN, random weights")
    assert "1 epoch per run" in figure.get_suptitle() and "DRY RUN" in figure.get_suptitle()
    axes = {axis.get_title(): axis for axis in figure.axes if axis.get_visible()}
    assert set(axes) == {
        "retrieval",
        "counterfactual coverage: mean",
        "counterfactual coverage: share",
        "coverage gain over zero-shot",
        "DINO-TCS (identity) [random weights]",
    }
    for axis in axes.values():
        assert axis.get_xlabel() == "lambda (model.lam)" and axis.get_ylabel()
    # mean (~0.5) and share (~0.14) on scales of their own
    mean, share = axes["counterfactual coverage: mean"], axes["counterfactual coverage: share"]
    assert mean.get_ylim()[0] > 0.4 and share.get_ylim()[1] < 0.2
    gain = axes["coverage gain over zero-shot"]
    (bars,) = [c for c in gain.containers if c.has_yerr]
    segments = bars.lines[2][0].get_segments()  # one vertical segment per run: gain ± SE
    assert sorted(round(s[1][1] - s[0][1], 6) for s in segments) == [
        round(2 * (0.006 + lam / 100), 6) for lam in (0.5, 0.9)
    ]


def test_only_the_dry_runs_of_a_mixed_sweep_are_flagged(tmp_path):
    job(tmp_path, 0, 0.5, smoke_config(diffusion=TINY_DIFFUSION))
    job(tmp_path, 1, 0.9, {"experiment_name": "lambda_sweep", "trainer": {"max_epochs": 20}})
    write_summary(tmp_path)
    markdown = (tmp_path / "summary.md").read_text()
    assert "| wall_s | random_weights |" in markdown and "| diffusion.pipeline |" in markdown
    assert markdown.splitlines()[0] == "# lambda_sweep: 2 runs, 1 to 20 epochs per run"


def test_runs_without_a_recorded_config_still_summarise(tmp_path):
    job(tmp_path, 0, 0.5, {})
    job(tmp_path, 1, 0.9, {})
    write_summary(tmp_path)
    markdown = (tmp_path / "summary.md").read_text()
    assert markdown.startswith(f"# Sweep {tmp_path.name}: 2 runs\n") and "DRY RUN" not in markdown

"""Sweeps and studies: the experiments run for real (smoke-sized), the ablation switches change the
computation, every multirun leaves its summary, search and DDP work through the Hydra CLI.

Real parts throughout: CausalLite10K slices, MiniLM, Lightning, Hydra's sweepers and launchers, Optuna
with a SQLite storage, gloo DDP with two processes, diffusers with tiny random weights.
"""

from __future__ import annotations

import copy
import csv
import importlib.util
import json
import math
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
import yaml
from conftest import CONF, bare_trainer, compose_config, run_module
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from omegaconf import open_dict
from PIL import Image

from causaldreamer.adapter import LINK_TYPES, CausalAdapter
from causaldreamer.bank import EffectBank
from causaldreamer.config import ddp_start_method
from causaldreamer.data.datamodule import CausalPairsDataModule
from causaldreamer.diffusion.adapter_folder import load_adapter_folder
from causaldreamer.errors import UserError
from causaldreamer.loggers import CSVLogger
from causaldreamer.metrics.retrieval import BankRetrieval
from causaldreamer.sweeps.records import write_run_metrics
from causaldreamer.sweeps.scoring import RunScorer
from causaldreamer.sweeps.summary import write_summary
from causaldreamer.train import train

SMOKE = ["trainer.max_epochs=1", "scoring.limit=16"]
TINY_GENERATION = [
    "diffusion=tiny",
    "scoring.features=tiny",
    "scoring.num_scenarios=1",
    "generation.num_frames=3",
    "generation.top_k=3",
]
LOSSES = ("delta", "triplet", "retrieval", "gate")
SWEEP_EXTRA = ("hydra_plugins.hydra_optuna_sweeper", "hydra_plugins.hydra_submitit_launcher")
needs_sweep_extra = pytest.mark.skipif(
    not all(importlib.util.find_spec(name) for name in SWEEP_EXTRA),
    reason="needs the sweep extra: pip install -e '.[sweep]'",
)


def hydra_compose(overrides: list[str]):
    """``conf/train.yaml`` composed as the CLI would, with the ``hydra`` node (sweeper, launcher, mode)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def sweep_jobs(experiment: str, *cli: str) -> list[list[str]]:
    """The job overrides Hydra's basic sweeper makes of an experiment's sweep params and CLI sweeps."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    params = hydra_compose([f"+experiment={experiment}"]).hydra.sweeper.params
    overrides = [f"{key}={value}" for key, value in params.items()] + list(cli)
    (jobs,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(overrides), None)
    return jobs


@pytest.fixture()
def as_hydra_job(data_dir, cache_dir):
    """Run ``train`` in-process as one job of a multirun would: the HydraConfig of its composed config."""

    def start(overrides: list[str], output_dir: Path):
        overrides = [*overrides, f"paths.data_dir={data_dir}", f"paths.cache_dir={cache_dir}"]
        cfg = hydra_compose(overrides)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
        HydraConfig.instance().set_config(cfg)
        return compose_config("train", overrides, output_dir)

    yield start
    HydraConfig.instance().cfg = None


def read_metrics(job_dir: Path) -> dict:
    return json.loads((job_dir / "metrics.json").read_text())


# -- experiments, smoke-sized --------------------------------------------------------------------------


def test_lambda_sweep_cli_writes_runs_scores_summary_and_wandb(cli_env, tmp_path):
    """``+experiment=lambda_sweep`` alone sets multirun mode; each run trains, tests, scores coverage and
    generated sequences; the sweep gets one table and plot; W&B runs share the sweep's group."""
    args = [
        "+experiment=[smoke,lambda_sweep]",
        "model.lam=0.6,0.9",
        *SMOKE,
        *TINY_GENERATION,
    ]
    result = run_module("causaldreamer.train", args, cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    for job, lam in zip(jobs, (0.6, 0.9), strict=True):
        record = read_metrics(job)
        assert f"model.lam={lam}" in record["overrides"] and record["wall_s"] > 0
        metrics = record["metrics"]
        for name in ("val/recall@5", "test/recall@5", "coverage/mean", "coverage/zero_shot/share", "gen/sds"):
            assert math.isfinite(metrics[name]), name
        gain = metrics["coverage/mean"] - metrics["coverage/zero_shot/mean"]  # equal reference counts
        assert metrics["coverage/gain"] == pytest.approx(gain, abs=1e-5) and metrics["coverage/gain_se"] >= 0
        sequence = json.loads(next((job / "sequences").glob("*/record.json")).read_text())
        assert sequence["lambda"] == lam and sequence["top_k"] == 3 and len(sequence["frames"]) == 3
        config = yaml.safe_load((job / "run.yaml").read_text())["config"]
        wandb = config["logger"]["wandb"]
        assert (wandb["group"], wandb["job_type"]) == ("lambda_sweep", "train")
        assert "lambda_sweep" in wandb["tags"]
        (run_file,) = (job / "wandb").glob("offline-run-*/run-*.wandb")
        assert b"lambda_sweep" in run_file.read_bytes()  # group and tags, in W&B's own record of the run
    zero_shot = {read_metrics(job)["metrics"]["val/zero_shot/recall@5"] for job in jobs}
    assert len(zero_shot) == 1  # the baseline does not depend on lambda

    table = pd.read_csv(sweep_dir / "summary.csv")
    assert table["model.lam"].tolist() == [0.6, 0.9] and table["status"].tolist() == ["done", "done"]
    assert table["coverage/mean"].notna().all()
    markdown = (sweep_dir / "summary.md").read_text()
    assert (
        "| job | model.lam | val/selection | val/recall@1" in markdown
        and "coverage/zero_shot/mean" in markdown
    )
    assert "`diffusion=tiny`" in markdown  # overrides shared by all runs go into the header
    with Image.open(sweep_dir / "summary.png") as plot:
        assert plot.format == "PNG" and plot.width > 600


def test_topk_sweep_trains_once_and_each_top_k_changes_coverage_and_frames(as_hydra_job, tmp_path):
    """top_k does not enter training: one run, every value scored from its adapter into <run>/sweep/,
    and each value changes what it claims to: the K effects coverage scores and the frames show."""
    overrides = ["+experiment=[smoke,topk_sweep]", "scoring.sweep.top_k=[1,2,8]", *SMOKE, *TINY_GENERATION]
    hydra = hydra_compose(overrides)
    assert str(hydra.hydra.mode) != "RunMode.MULTIRUN"  # a single training run
    train(as_hydra_job([*overrides, "logger=csv"], tmp_path))
    sweep = tmp_path / "sweep"
    table = pd.read_csv(sweep / "summary.csv")
    assert table["generation.top_k"].tolist() == [1, 2, 8] and table["status"].tolist() == ["done"] * 3
    assert table["coverage/zero_shot/mean"].is_monotonic_increasing  # more effects cover more references
    assert table["coverage/mean"].nunique() == 3 and table["gen/sds"].nunique() == 3
    assert (sweep / "summary.png").is_file() and "generation.top_k" in (sweep / "summary.md").read_text()
    effects, frames = [], []
    for job in ("0", "1", "2"):
        (record_file,) = (sweep / job / "sequences").glob("*/record.json")
        record = json.loads(record_file.read_text())
        effects.append([frame["effect"] for frame in record["frames"]])
        frames.append([(record_file.parent / name).read_bytes() for name in record["files"]])
    assert [len(set(shown)) for shown in effects] == [1, 2, 3]  # K effects over 3 frames, K = 1, 2, 8
    assert frames[0] != frames[1] != frames[2] != frames[0]


def test_ablation_grid_runs_and_gates_off_are_exactly_one(as_hydra_job, tmp_path):
    jobs = sweep_jobs("ablations")
    assert [j[0] for j in jobs][:2] == ["+ablation=full", "+ablation=no_delta_loss"] and len(jobs) == 8
    for name in ("full", "no_gates"):
        overrides = ["+experiment=[smoke,ablations]", f"+ablation={name}", *SMOKE, "logger=csv"]
        train(as_hydra_job(overrides, tmp_path / name))
    table = write_summary(tmp_path).set_index("ablation")
    assert table.loc["full", "train/gate"] != table.loc["no_gates", "train/gate"]
    adapter = CausalAdapter.from_pretrained(tmp_path / "no_gates" / "adapter")
    out = adapter(torch.nn.functional.normalize(torch.randn(4, 384), dim=-1), torch.arange(4) % 3)
    assert adapter.use_gates is False and torch.equal(out.q_gate, torch.ones(4, 8))
    assert torch.equal(out.k_gate, torch.ones(4, 8, 2))


def test_generation_ablations_train_once_and_generate_with_each_switch(as_hydra_job, tmp_path):
    overrides = ["+experiment=[smoke,generation_ablations]", "scoring.sweep.ablation=[full,no_shared_seed]"]
    train(as_hydra_job([*overrides, *SMOKE, *TINY_GENERATION, "logger=csv"], tmp_path))
    table = pd.read_csv(tmp_path / "sweep" / "summary.csv").set_index("ablation")
    assert table["gen/dino_tcs"].notna().all()
    assert table.loc["full", "gen/dino_tcs"] != table.loc["no_shared_seed", "gen/dino_tcs"]
    records = {
        name: json.loads(next((tmp_path / "sweep" / job / "sequences").glob("*/record.json")).read_text())
        for name, job in (("full", "0"), ("no_shared_seed", "1"))
    }
    assert records["full"]["shared_seed"] is True and records["no_shared_seed"]["shared_seed"] is False


def test_a_sweep_names_only_generation_settings_and_generation_ablations(tmp_path, data_dir, cache_dir):
    paths = [f"paths.data_dir={data_dir}", f"paths.cache_dir={cache_dir}"]
    for override, message in (
        ("scoring.sweep={lamda:[0.5]}", "scoring.sweep.lamda: sweep a key of the generation group"),
        ("scoring.sweep={ablation:[no_gates]}", "no_gates is a training-side ablation"),
        ("scoring.sweep={top_k:[0]}", "top_k=0"),
    ):
        cfg = compose_config("train", ["+experiment=[smoke,study]", *paths, override], tmp_path)
        with pytest.raises(UserError, match=message):
            train(cfg)
        assert not (tmp_path / "run.yaml").exists()


# -- the switches each change the computation -----------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_datamodule(data_dir, cache_dir, minilm) -> CausalPairsDataModule:
    datamodule = CausalPairsDataModule(data_dir, cache_dir, minilm, limit_train=64, limit_eval=32)
    datamodule.setup("fit")
    return datamodule


def one_step(ablation: str, datamodule, data_dir, cache_dir, tmp_path) -> tuple[dict, CausalAdapter]:
    """One optimiser step of the configured module from identical weights and batch; the logged terms.

    The gate and bias heads start random (an untrained adapter's are zero, i.e. neutral), so that
    switching them off visibly changes the loss.
    """
    overrides = ["+experiment=[smoke,ablations]", f"+ablation={ablation}", f"paths.data_dir={data_dir}"]
    cfg = compose_config("train", [*overrides, f"paths.cache_dir={cache_dir}"], tmp_path)
    L.seed_everything(0)
    adapter = instantiate(cfg.model.adapter, dim=384)
    for head in (adapter.q_gate, adapter.k_gate, adapter.bias):
        torch.nn.init.normal_(head.weight, std=0.5)
    model = instantiate(cfg.model, adapter=adapter)
    trainer = bare_trainer(
        max_steps=1,
        log_every_n_steps=1,
        default_root_dir=tmp_path,
    )
    L.seed_everything(0)
    trainer.fit(model, datamodule=datamodule)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}, adapter


@pytest.fixture(scope="module")
def full_step(smoke_datamodule, data_dir, cache_dir, tmp_path_factory):
    return one_step("full", smoke_datamodule, data_dir, cache_dir, tmp_path_factory.mktemp("full"))


@pytest.mark.parametrize("loss", LOSSES)
def test_loss_off_removes_exactly_its_term(loss, full_step, smoke_datamodule, data_dir, cache_dir, tmp_path):
    full, _ = full_step
    ablated, _ = one_step(f"no_{loss}_loss", smoke_datamodule, data_dir, cache_dir, tmp_path)
    assert f"train/{loss}" in full and f"train/{loss}" not in ablated
    weight = yaml.safe_load((CONF / "model" / "causal_adapter.yaml").read_text())["loss_weights"][loss]
    expected = full["train/loss"] - weight * full[f"train/{loss}"]
    assert ablated["train/loss"] == pytest.approx(expected, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize(
    ("ablation", "changed", "unchanged"),
    [("no_gates", "gate", "delta"), ("no_bias", "gate", "delta"), ("no_relation", "delta", None)],
)
def test_adapter_switch_changes_the_loss_and_its_outputs(
    ablation, changed, unchanged, full_step, smoke_datamodule, data_dir, cache_dir, tmp_path
):
    full, _ = full_step
    ablated, adapter = one_step(ablation, smoke_datamodule, data_dir, cache_dir, tmp_path)
    assert ablated[f"train/{changed}"] != pytest.approx(full[f"train/{changed}"], rel=1e-4)
    if unchanged:  # gates and bias act on attention only, never on the predicted effect
        assert ablated[f"train/{unchanged}"] == pytest.approx(full[f"train/{unchanged}"], rel=1e-6)
    cause = torch.nn.functional.normalize(torch.randn(len(LINK_TYPES), 384), dim=-1)
    with torch.no_grad():
        out = adapter.eval()(cause, torch.arange(len(LINK_TYPES)))
        if ablation == "no_gates":
            assert torch.equal(out.q_gate, torch.ones_like(out.q_gate))
            assert torch.equal(out.k_gate, torch.ones_like(out.k_gate))
        elif ablation == "no_bias":
            assert torch.equal(out.bias, torch.zeros_like(out.bias))
        else:  # the same cause under every link type gives the same prediction
            same = adapter(cause[:1].expand(len(LINK_TYPES), -1), torch.arange(len(LINK_TYPES)))
            torch.testing.assert_close(same.effect, same.effect[:1].expand_as(same.effect))


@pytest.fixture(scope="module")
def adapter_folder(tmp_path_factory, minilm, data_dir):
    """An exported adapter folder whose gate and bias heads are random, over a 64-effect bank."""
    with open(data_dir / "CausalLite10K.csv", newline="", encoding="utf-8") as handle:
        effects = list(dict.fromkeys(row["effect"] for row in csv.DictReader(handle)))[:64]
    folder = tmp_path_factory.mktemp("adapter")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        adapter = CausalAdapter(encoder_name=minilm.identity)
        for head in (adapter.q_gate, adapter.k_gate, adapter.bias):
            torch.nn.init.normal_(head.weight, std=0.5)
    adapter.save_pretrained(folder)
    EffectBank(effects, minilm.encode(effects), minilm.identity).save(folder)
    return load_adapter_folder(folder)


CAUSE = "a glass tipping over on a table"


def generator_for(ablation: str, adapter_folder, minilm, data_dir, tmp_path):
    """The generator scoring builds for ``+experiment=study +ablation=...`` (tiny, 3 frames)."""
    overrides = ["+experiment=study", f"+ablation={ablation}", f"paths.data_dir={data_dir}"]
    scorer = RunScorer(compose_config("train", [*overrides, *TINY_GENERATION], tmp_path))
    return scorer.method(scorer.settings, adapter_folder, minilm).generator


def pixels(images) -> list[torch.Tensor]:
    return [torch.tensor(list(image.getdata()), dtype=torch.float) for image in images]


@pytest.fixture(scope="module")
def full_generation(adapter_folder, minilm, data_dir, tmp_path_factory):
    """The full method's generator, its plan for CAUSE and the frames it renders from seed 0."""
    full = generator_for("full", adapter_folder, minilm, data_dir, tmp_path_factory.mktemp("full"))
    plan = full.plan(CAUSE)
    return full, plan, pixels(full.render(plan, seed=0).images)


@pytest.mark.parametrize("ablation", ["no_progression", "no_shared_seed", "shared_attention"])
def test_generation_switch_changes_the_frames(
    ablation, full_generation, adapter_folder, minilm, data_dir, tmp_path
):
    full, plan, frames = full_generation
    ablated = generator_for(ablation, adapter_folder, minilm, data_dir, tmp_path)
    if ablation == "no_progression":
        torch.testing.assert_close(full.intervention(plan).progress, torch.tensor([1 / 3, 2 / 3, 1.0]))
        torch.testing.assert_close(ablated.intervention(plan).progress, torch.ones(3))
    elif ablation == "no_shared_seed":
        latents, own = full.initial_latents(0), ablated.initial_latents(0)
        assert torch.equal(latents[0], latents[2]) and not torch.equal(own[0], own[2])
        torch.testing.assert_close(own[0], latents[0])  # frame 0 keeps the sequence's seed
    else:
        assert ablated.attention(plan).share_first_frame and not full.attention(plan).share_first_frame
    other = pixels(ablated.render(plan, seed=0).images)
    assert any(not torch.equal(a, b) for a, b in zip(frames, other, strict=True))


# -- summary, scoring checks, logger, DDP start method, launchers ---------------------------------------


def fake_job(sweep_dir: Path, num: int, overrides: list[str], metrics: dict | None, monkeypatch) -> None:
    """A job directory as Hydra and train leave it; no metrics.json when the job failed."""
    job = sweep_dir / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        (job / "run.yaml").write_text("{}")
        monkeypatch.setattr("causaldreamer.sweeps.records.job_overrides", lambda: overrides)
        write_run_metrics(job, metrics)


def test_summary_lists_failed_jobs_and_sorts_numeric_sweeps(tmp_path, monkeypatch):
    for num, lam in enumerate((0.9, 0.5, 0.7)):
        metrics = (
            None if lam == 0.7 else {"val/recall@5": lam / 2, "coverage/mean": 0.4, "val/loss": math.nan}
        )
        fake_job(tmp_path, num, ["+experiment=lambda_sweep", f"model.lam={lam}"], metrics, monkeypatch)
    table = write_summary(tmp_path)
    assert table["status"].tolist() == ["done", "done", "no metrics"]
    assert table["model.lam"].tolist() == [0.9, 0.5, 0.7]
    assert table["val/loss"].isna().all()  # a NaN metric is recorded as null, not as an invalid number
    markdown = (tmp_path / "summary.md").read_text()
    assert "| job | status | model.lam | val/recall@5 | coverage/mean | wall_s |" in markdown
    assert "| 2 | no metrics | 0.7 |" in markdown and "`experiment=lambda_sweep`" in markdown
    assert (tmp_path / "summary.png").stat().st_size > 1000


def test_summary_of_a_multirun_without_metrics_writes_nothing(tmp_path, monkeypatch):
    fake_job(tmp_path, 0, ["cause=a dog"], None, monkeypatch)
    assert write_summary(tmp_path)["status"].tolist() == ["no metrics"]
    assert not list(tmp_path.glob("summary.*"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("generation.top_k=0", "top_k=0: must be an integer >= 1"),
        ("generation.retrieval=nearest", "retrieval='nearest': use one of topk, path"),
        ("scoring.scenarios=/nonexistent.csv", "scoring.scenarios=/nonexistent.csv not found"),
        ("scoring.features=fancy", "scoring.features='fancy'"),
    ],
)
def test_bad_scoring_settings_fail_before_training(tmp_path, data_dir, cache_dir, override, message):
    paths = [f"paths.data_dir={data_dir}", f"paths.cache_dir={cache_dir}"]
    cfg = compose_config("train", ["+experiment=[smoke,study]", "diffusion=tiny", *paths, override], tmp_path)
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        train(cfg)
    assert not (tmp_path / "run.yaml").exists() and not (tmp_path / "checkpoints").exists()


def test_generation_ablation_without_a_scored_run_says_what_it_needs(tmp_path, data_dir, cache_dir):
    overrides = ["+experiment=smoke", "+ablation=no_progression", f"paths.data_dir={data_dir}"]
    with pytest.raises(UserError, match=r"need a scored run .* \+experiment=study diffusion=sd15"):
        train(compose_config("train", [*overrides, f"paths.cache_dir={cache_dir}"], tmp_path))


def test_csv_logger_continues_a_file_another_process_started(tmp_path):
    """Under forked or spawned DDP, fit and test run in different processes, each with a copy of the
    logger the parent made before any metrics.csv existed; both write into the same file."""
    for logger_class, fails in ((LightningCSVLogger, True), (CSVLogger, False)):
        folder = tmp_path / logger_class.__module__
        parent = logger_class(folder, name="csv", version="")
        parent.log_hyperparams({"adapter_parameters": 1})  # as train does, before fit
        fit, test = copy.deepcopy(parent), copy.deepcopy(parent)
        fit.log_metrics({"val/recall@5": 0.1}, step=1)
        fit.save()
        test.log_metrics({"test/recall@5": 0.2}, step=2)
        if fails:
            with pytest.raises(ValueError, match="fields not in fieldnames"):
                test.save()
        else:
            test.save()
            rows = list(csv.DictReader((folder / "csv" / "metrics.csv").open()))
            assert [(r["val/recall@5"], r["test/recall@5"]) for r in rows] == [("0.1", ""), ("", "0.2")]


def test_ddp_start_method_avoids_relaunching_a_sweep():
    assert ddp_start_method("fork") == "popen"  # no Hydra job: Lightning's default
    try:
        for overrides, expected in (([], "popen"), (["+experiment=lambda_sweep"], "fork")):
            HydraConfig.instance().set_config(hydra_compose(overrides))
            assert ddp_start_method("fork") == expected
    finally:
        HydraConfig.instance().cfg = None


@needs_sweep_extra
def test_launchers_trainers_and_search_compose():
    slurm = hydra_compose(["hydra/launcher=slurm", "trainer=ddp"])
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher") and slurm.hydra.launcher.gpus_per_node == 1
    assert slurm.trainer.strategy.process_group_backend == "nccl" and slurm.trainer.accelerator == "gpu"
    parallel = hydra_compose(["hydra/launcher=parallel", "trainer=ddp_cpu"])
    assert parallel.hydra.launcher._target_.endswith("JoblibLauncher") and parallel.hydra.launcher.n_jobs == 2
    assert (parallel.trainer.devices, parallel.trainer.strategy.process_group_backend) == (2, "gloo")
    search = hydra_compose(["+hparams_search=optuna"])
    assert (
        search.hydra.sweeper._target_.endswith("OptunaSweeper") and search.optimized_metric == "val/selection"
    )
    assert str(search.hydra.mode) == "RunMode.MULTIRUN"
    assert hydra_compose(["trainer=gpu"]).trainer.devices == 1
    lam = hydra_compose(["+experiment=lambda_sweep"])
    assert lam.hydra.sweeper.params["model.lam"] == "0.5,0.6,0.7,0.8,0.9,1.0"
    # The studies' budget: 20 epochs, two jobs at a time; both give way to the command line.
    assert lam.trainer.max_epochs == 20 and lam.hydra.launcher._target_.endswith("JoblibLauncher")
    full = hydra_compose(["+experiment=lambda_sweep", "trainer.max_epochs=200", "hydra/launcher=basic"])
    assert full.trainer.max_epochs == 200 and full.hydra.launcher._target_.endswith("BasicLauncher")
    assert (lam.logger.wandb.group, lam.logger.wandb.job_type) == ("lambda_sweep", "train")


# -- search and scale through the CLI -------------------------------------------------------------------


@needs_sweep_extra
def test_optuna_search_runs_two_trials_on_parallel_workers(cli_env, tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = [
        "+experiment=smoke",
        "+hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=smoke",
        "hydra/launcher=parallel",
        "trainer.max_epochs=1",
        "test=false",
        "logger=csv",
    ]
    result = run_module("causaldreamer.train", args, cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    selections = [read_metrics(sweep_dir / job)["metrics"]["val/selection"] for job in ("0", "1")]
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())["best_value"]
    assert best == pytest.approx(max(selections))
    study = optuna.load_study(study_name="smoke", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    table = pd.read_csv(sweep_dir / "summary.csv")
    assert {"model.lr", "val/recall@5"} <= set(table.columns) and len(table) == 2


def zero_shot_metrics(data_dir, cache_dir, minilm, split: str) -> dict[str, float]:
    """The zero-shot baseline (e_hat = c) of the smoke slice, computed in one process."""
    datamodule = CausalPairsDataModule(
        data_dir, cache_dir, minilm, limit_train=256, limit_eval=128, gate_tokens=False
    )
    datamodule.setup("test")
    rows = datamodule.datasets[split].tensors
    metric = BankRetrieval()
    metric.update(
        rows["cause"],
        datamodule.bank.embeddings,
        rows["effect_id"],
        datamodule.seen_effects[rows["effect_id"]],
    )
    return {f"{split}/zero_shot/{k}": float(v) for k, v in metric.compute().items()}


def test_ddp_on_two_cpu_processes_inside_a_multirun(cli_env, tmp_path, data_dir, cache_dir, minilm):
    """Two gloo processes, forked inside the multirun job (re-running the command would re-launch the
    sweep): one job, the usual outputs, and retrieval metrics gathered from both processes."""
    args = ["-m", "+experiment=smoke", "trainer=ddp_cpu", "trainer.max_epochs=1", "logger=csv"]
    result = run_module("causaldreamer.train", args, cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stdout + result.stderr
    (sweep_dir,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    (job,) = (p for p in sweep_dir.iterdir() if p.is_dir())
    config = yaml.safe_load((job / "run.yaml").read_text())["config"]
    assert config["trainer"]["strategy"]["start_method"] == "fork"
    assert (job / "checkpoints" / "last.ckpt").is_file() and (job / "adapter" / "model.safetensors").is_file()
    header = (job / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "val/recall@5" in header and "test/recall@5" in header
    metrics = read_metrics(job)["metrics"]
    # 128 eval rows split 64/64 over the ranks: only a correct gather of the cat states gives the
    # single-process values.
    for split in ("val", "test"):
        for name, value in zero_shot_metrics(data_dir, cache_dir, minilm, split).items():
            assert metrics[name] == pytest.approx(value, abs=1e-6), name
    assert pd.read_csv(sweep_dir / "summary.csv")["status"].tolist() == ["done"]

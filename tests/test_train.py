"""The main job end to end: real Hydra composition and CLI, real Trainer, offline W&B, real files."""

import math

import pytest
import torch
import yaml
from conftest import REPO, run_module

from causaldreamer.adapter import CausalAdapter
from causaldreamer.bank import EffectBank
from causaldreamer.errors import UserError
from causaldreamer.train import train


def test_smoke_run_checkpoints_exports_and_logs(train_cfg, tmp_path):
    metrics = train(train_cfg())
    for split in ("val", "test"):
        for name in ("recall@1", "recall@5", "recall@10", "mrr", "unseen/recall@10", "zero_shot/recall@5"):
            assert 0.0 <= metrics[f"{split}/{name}"] <= 1.0, f"{split}/{name}"
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert len(list((tmp_path / "checkpoints").glob("epoch_*.ckpt"))) == 1  # the best by val recall@5
    adapter = CausalAdapter.from_pretrained(tmp_path / "adapter")
    assert adapter.num_parameters == 1_347_752 and adapter.dim == 384
    bank = EffectBank.load(tmp_path / "adapter")
    assert len(bank) == 5131 and bank.encoder == adapter.encoder_name
    record = yaml.safe_load((tmp_path / "run.yaml").read_text())
    assert len(record["git_sha"]) >= 7 and record["config"]["model"]["lam"] == 0.7
    assert list((tmp_path / "wandb").glob("offline-run-*")), "W&B offline run missing"
    assert "val/recall@5" in (tmp_path / "csv" / "metrics.csv").read_text()


def test_resume_from_last_checkpoint(train_cfg, tmp_path):
    first = tmp_path / "first"
    train(train_cfg("trainer.max_epochs=1", output_dir=first))
    resumed = tmp_path / "resumed"
    metrics = train(
        train_cfg("trainer.max_epochs=2", f"ckpt_path={first}/checkpoints/last.ckpt", output_dir=resumed)
    )
    checkpoint = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["global_step"] == 2 * (256 // 32)
    assert math.isfinite(metrics["val/recall@5"])


def test_checkpoint_from_another_encoder_dimension(train_cfg, tmp_path):
    first = tmp_path / "first"
    train(train_cfg("trainer.max_epochs=1", output_dir=first))
    ckpt = torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["state_dict"] = {
        k: (v[:, :-1] if k == "adapter.relation.weight" else v) for k, v in ckpt["state_dict"].items()
    }
    torch.save(ckpt, tmp_path / "other.ckpt")
    with pytest.raises(UserError, match="adapter is 383-d but the configured encoder gives 384-d"):
        train(train_cfg(f"ckpt_path={tmp_path / 'other.ckpt'}", output_dir=tmp_path / "second"))


def test_cli_overrides_and_multirun(cli_env, tmp_path):
    common = [
        "+experiment=smoke",
        "trainer.max_epochs=1",
        f"paths.log_dir={tmp_path}",
        "logger=csv",
        "test=false",
    ]
    single = run_module(
        "causaldreamer.train", [*common, "model.lam=0.5", "data.batch_size=64"], cli_env, REPO
    )
    assert single.returncode == 0, single.stderr[-2000:]
    (run_dir,) = (tmp_path / "train" / "runs").iterdir()
    config = yaml.safe_load((run_dir / "run.yaml").read_text())["config"]
    assert config["model"]["lam"] == 0.5 and config["data"]["batch_size"] == 64
    assert (run_dir / "adapter" / "model.safetensors").is_file()

    multi = run_module("causaldreamer.train", ["-m", *common, "model.lam=0.6,0.9"], cli_env, REPO)
    assert multi.returncode == 0, multi.stderr[-2000:]
    (sweep_dir,) = (tmp_path / "train" / "multiruns").iterdir()
    lams = sorted(
        yaml.safe_load((sweep_dir / job / "run.yaml").read_text())["config"]["model"]["lam"]
        for job in ("0", "1")
    )
    assert lams == [0.6, 0.9]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.lam=nan", "model.lam=nan is invalid: expected a finite number"),
        ("model.lam=abc", "model.lam='abc' is invalid"),
        ("data.batch_size=0", "data.batch_size=0 is invalid: expected an integer >= 1"),
        ("ckpt_path=/nonexistent/last.ckpt", "ckpt_path=/nonexistent/last.ckpt does not exist"),
    ],
)
def test_bad_overrides_exit_2_with_one_line(cli_env, tmp_path, override, message):
    result = run_module(
        "causaldreamer.train", ["+experiment=smoke", f"paths.log_dir={tmp_path}", override], cli_env, REPO
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {message}")
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("run.yaml"))

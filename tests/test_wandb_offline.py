"""What a training run gives W&B, read back from the offline run the real client wrote.

Offline, wandb keeps everything in the run's transaction log (``run-<id>.wandb``; no ``files/config.yaml``
is written until a sync). ``wandb leet inspect``, the client's own reader of that log, prints its records
and the run's merged state as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import run_module

from causaldreamer.adapter import CausalAdapter

UNIT_FILES = {"config.json", "model.safetensors", "effect_bank.safetensors", "README.md"}


def inspect_run(run: Path, *flags: str) -> str:
    """``wandb leet inspect --json`` of an offline run directory: its records, or with --summary its state."""
    result = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", *flags, str(run)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


def test_training_run_logs_its_whole_config_and_the_adapter_artifact(cli_env, tmp_path):
    args = ["+experiment=smoke", "+ablation=no_gates", "trainer.max_epochs=1", "test=false", "model.lam=0.9"]
    result = run_module("causaldreamer.train", args, cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    (offline,) = (run_dir / "wandb").glob("offline-run-*")

    config = json.loads(inspect_run(offline, "--summary"))["config"]
    assert "hydra" not in config
    assert config["choices"]["ablation"] == "no_gates" and config["choices"]["experiment"] == "smoke"
    assert config["choices"]["encoder"] == "minilm" and config["seed"] == 42
    assert config["model"]["adapter"]["use_gates"] is False and config["model"]["lam"] == 0.9
    assert (
        config["data"]["limit_train"] == 256 and config["data"]["template"] == "{cause}. Therefore, {effect}"
    )
    assert config["encoder"]["_target_"] == "causaldreamer.encoders.MiniLMEncoder"
    assert config["trainer"]["max_epochs"] == 1 and config["adapter_parameters"] == 1_347_752

    records = [json.loads(line) for line in inspect_run(offline).splitlines()]
    artifacts = [r["artifact"] for r in records if r["type"] == "artifact"]  # tables are artifacts too
    (artifact,) = [a for a in artifacts if a["type"] == "model"]
    assert artifact["name"] == f"adapter-{offline.name.rsplit('-', 1)[-1]}"  # offline-run-<time>-<run id>
    files = {entry["path"]: entry for entry in artifact["manifest"]["contents"]}
    assert set(files) == UNIT_FILES
    adapter_dir = run_dir / "adapter"
    for name, entry in files.items():  # kept locally, in the exported folder, until `wandb sync`
        assert Path(entry["local_path"]) == adapter_dir / name and int(entry["size"]) > 0
    metadata = json.loads(artifact["metadata"])
    assert metadata["lam"] == 0.9 and 0 <= metadata["metrics"]["val/recall@5"] <= 1

    adapter = CausalAdapter.from_pretrained(adapter_dir)
    assert adapter.lam == 0.9 and not adapter.use_gates and len(adapter.bank) == 5131
    assert "| val/recall@5 |" in (adapter_dir / "README.md").read_text()


def test_training_with_a_diffusion_model_logs_captioned_preview_grids(cli_env, tmp_path):
    """The preview callback on the CPU (on_cpu, tiny random weights): one grid per cause at every
    validation, captioned, as W&B image records of the run and PNG files of its media."""
    args = [
        "+experiment=[smoke,study]",
        "diffusion=tiny",
        "trainer.max_epochs=2",
        "test=false",
        "scoring.limit=4",
        "scoring.features=tiny",
        "scoring.num_scenarios=1",
        "generation.num_frames=2",
        "generation.top_k=2",
        "callbacks.sequence_preview.on_cpu=true",
        "callbacks.sequence_preview.every_n_validations=1",
        "callbacks.sequence_preview.causes=[a glass falls off a table,a dog runs into a puddle]",
    ]
    result = run_module("causaldreamer.train", args, cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    records = [json.loads(line) for line in inspect_run(offline).splitlines()]
    previews = [
        record["history"]["item"]
        for record in records
        if record["type"] == "history" and "preview/sequences._type" in record["history"]["item"]
    ]
    assert len(previews) == 2  # two validations, every one rendered
    for preview in previews:
        assert preview["preview/sequences._type"] == "images/separated"
        assert [caption.split(" (epoch")[0] for caption in preview["preview/sequences.captions"]] == [
            "a glass falls off a table",
            "a dog runs into a puddle",
        ]
    assert len(list(offline.glob("files/media/images/preview/*.png"))) == 4

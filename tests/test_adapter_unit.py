"""The exported adapter as one complete unit (weights, config with the training lambda and template, effect
bank, model card), loaded from a folder or a hub id, and generation defaulting to its own settings.

Real parts throughout: MiniLM and real CausalLite10K effects, real safetensors files, huggingface_hub's own
cache reader (a hub id is resolved offline from a Hugging Face cache laid out as a download leaves it),
the generate entry point in-process and as a subprocess.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

import pytest
import torch
from conftest import cli_environment, compose_config, run_module, write_adapter_folder
from hydra.utils import instantiate
from safetensors.torch import load_file, save_file

from causaldreamer.adapter import CausalAdapter
from causaldreamer.bank import EffectBank
from causaldreamer.diffusion.adapter_folder import load_adapter_folder
from causaldreamer.errors import EXIT_USER_ERROR, UserError
from causaldreamer.generate import generate
from causaldreamer.prompts import DEFAULT_TEMPLATE

LAM, TEMPLATE = 0.9, "{cause}, and then {effect}"
METRICS = {"val/recall@5": 0.2512, "test/mrr": 0.1234}
REPO_ID = "someone/causal-adapter"
CAUSE = "a dog running in a park"
UNIT_FILES = {"config.json", "model.safetensors", "effect_bank.safetensors", "README.md"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, minilm, data_dir) -> Path:
    """A unit as the trainer exports it: trained at lambda 0.9 with its own template, bank and metrics."""
    trained = CausalAdapter.from_pretrained(
        write_adapter_folder(tmp_path_factory.mktemp("old"), minilm, data_dir, bank_size=64)
    )
    adapter = CausalAdapter(encoder_name=minilm.identity)  # as the trainer builds it
    adapter.load_state_dict(trained.state_dict())
    adapter.lam, adapter.template, adapter.bank, adapter.metrics = LAM, TEMPLATE, trained.bank, METRICS
    folder = tmp_path_factory.mktemp("unit") / "adapter"
    adapter.save_pretrained(folder)
    return folder


def strip_generation_fields(folder: Path) -> Path:
    """An adapter folder as releases before the unit wrote it: config.json without lam/template/metrics."""
    config = json.loads((folder / "config.json").read_text())
    for key in ("lam", "template", "metrics"):
        config.pop(key)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def hub_cache(cache: Path, repo_id: str, folder: Path) -> str:
    """``folder`` as a Hugging Face cache holds a downloaded model repository: content-addressed blobs, a
    snapshot of symlinks per commit, and ``refs/main`` naming that commit. Returns the commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / commit).mkdir(parents=True)
    for file in folder.iterdir():
        blob = hashlib.sha256(file.read_bytes()).hexdigest()
        (repo / "blobs" / blob).write_bytes(file.read_bytes())
        os.symlink(Path("..", "..", "blobs", blob), repo / "snapshots" / commit / file.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return commit


def test_save_pretrained_writes_everything_generation_needs(exported, minilm):
    assert {p.name for p in exported.iterdir()} == UNIT_FILES
    config = json.loads((exported / "config.json").read_text())
    assert config["lam"] == LAM and config["template"] == TEMPLATE and config["metrics"] == METRICS
    assert config["encoder_name"] == minilm.identity and config["dim"] == 384
    card = (exported / "README.md").read_text()
    assert "license: mit" in card and "CausalLite10K (MIT license)" in card
    assert "| val/recall@5 | 0.2512 |" in card and "| test/mrr | 0.1234 |" in card
    assert f"`{TEMPLATE}`" in card and f"| {LAM} |" in card and "64 effects" in card

    loaded = CausalAdapter.from_pretrained(exported)
    assert (loaded.lam, loaded.template, loaded.metrics) == (LAM, TEMPLATE, METRICS)
    assert loaded.bank.texts == EffectBank.load(exported).texts and len(loaded.bank) == 64
    assert not loaded.training
    torch.testing.assert_close(loaded.state_dict(), load_file(exported / "model.safetensors"))


def test_a_missing_tensor_is_refused_not_left_random(exported, tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    for name in UNIT_FILES - {"model.safetensors"}:
        (folder / name).write_bytes((exported / name).read_bytes())
    tensors = load_file(exported / "model.safetensors")
    tensors.pop("bias.weight")
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(UserError, match=r"cannot be loaded \(RuntimeError: Error\(s\) in loading state_dict"):
        load_adapter_folder(folder)


def test_hub_id_loads_offline_from_the_hugging_face_cache(exported, tmp_path):
    cache = tmp_path / "hub"
    commit = hub_cache(cache, REPO_ID, exported)
    adapter = CausalAdapter.from_pretrained(REPO_ID, cache_dir=cache, local_files_only=True)
    assert (adapter.lam, adapter.template, len(adapter.bank)) == (LAM, TEMPLATE, 64)
    torch.testing.assert_close(adapter.state_dict(), CausalAdapter.from_pretrained(exported).state_dict())
    assert (cache / f"models--someone--causal-adapter/snapshots/{commit}/model.safetensors").is_symlink()


def test_old_adapter_folder_falls_back_to_the_design_defaults(tmp_path, minilm, data_dir, caplog):
    folder = strip_generation_fields(write_adapter_folder(tmp_path / "old", minilm, data_dir, bank_size=16))
    with caplog.at_level(logging.WARNING, logger="causaldreamer.adapter"):
        loaded = load_adapter_folder(folder)
    assert (loaded.adapter.lam, loaded.adapter.template) == (0.7, DEFAULT_TEMPLATE)
    assert "records no lam or template" in caplog.text and "using lam=0.7" in caplog.text


def generate_one(adapter: Path, output_dir: Path, *overrides: str) -> dict:
    cfg = compose_config(
        "generate",
        [
            "diffusion=tiny",
            f"cause={CAUSE!r}",
            f"adapter={adapter}",
            "generation.num_frames=2",
            "generation.top_k=2",
            "generation.num_inference_steps=1",
            *overrides,
        ],
        output_dir,
    )
    (folder,) = generate(cfg)
    return json.loads((folder / "record.json").read_text())


def test_generate_defaults_to_the_adapters_lambda_and_template(exported, tmp_path):
    record = generate_one(exported, tmp_path / "own")
    assert record["lambda"] == LAM and record["template"] == TEMPLATE
    assert all(f["prompt"] == TEMPLATE.format(cause=CAUSE, effect=f["effect"]) for f in record["frames"])
    assert record["adapter_defaults"] == {"lambda": LAM, "template": TEMPLATE} and record["overrides"] == {}

    record = generate_one(
        exported, tmp_path / "override", "generation.lam=0.5", "generation.template='{cause}; {effect}'"
    )
    assert record["lambda"] == 0.5 and record["template"] == "{cause}; {effect}"
    assert record["overrides"] == {"lambda": 0.5, "template": "{cause}; {effect}"}
    assert record["adapter_defaults"] == {"lambda": LAM, "template": TEMPLATE}


def test_evaluate_method_defaults_to_the_adapters_settings(exported, tmp_path):
    def method(*overrides: str):
        cfg = compose_config(
            "evaluate",
            ["method=causaldreamer", "diffusion=tiny", f"adapter={exported}", *overrides],
            tmp_path,
        )
        return instantiate(cfg.method)

    own = method()
    assert own.record()["lambda"] == LAM and own.record()["template"] == TEMPLATE
    overridden = method("generation.lam=0.5")
    assert overridden.record()["lambda"] == 0.5 and overridden.record()["template"] == TEMPLATE
    overridden.generator.settings = dataclasses.replace(overridden.generator.settings, num_inference_steps=1)
    record = overridden.generate_sequence(CAUSE, ["a", "b"], seed=0).record
    assert record["overrides"] == {"lambda": 0.5} and record["adapter_defaults"]["lambda"] == LAM


def test_generate_cli_takes_a_hub_id_offline(exported, tmp_path, data_dir, cache_dir):
    cache = tmp_path / "hub"
    hub_cache(cache, REPO_ID, exported)
    env = cli_environment(data_dir, cache_dir, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache))
    common = ["diffusion=tiny", f"cause={CAUSE!r}", "generation.num_frames=2", "generation.top_k=2"]
    common += ["generation.num_inference_steps=1"]
    result = run_module(
        "causaldreamer.generate",
        [*common, f"adapter={REPO_ID}", f"output_dir={tmp_path / 'out'}"],
        env,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (record_file,) = (tmp_path / "out").glob("*/record.json")
    record = json.loads(record_file.read_text())
    assert record["lambda"] == LAM and record["template"] == TEMPLATE and record["overrides"] == {}
    assert record["models"]["adapter"].startswith(str(cache.resolve()))

    missing = run_module(
        "causaldreamer.generate",
        [*common, "adapter=someone/missing", f"output_dir={tmp_path / 'no'}"],
        env,
        tmp_path,
    )
    assert missing.returncode == EXIT_USER_ERROR
    last = missing.stderr.strip().splitlines()[-1]
    assert last.startswith("error: adapter someone/missing is not a local folder and could not be fetched")
    assert not (tmp_path / "no").exists()

"""The entry points' front door (causaldreamer/cli.py, schema.py): bad input is refused before Hydra
starts a job, in one line naming the key and the fix; good commands pass untouched.

In-process cases call ``precheck`` as the entry points do; the CLI cases run ``python -m ...`` from an
empty directory as a user would, and find it still empty afterwards.
"""

from __future__ import annotations

import pytest
from conftest import run_module
from hydra.core.global_hydra import GlobalHydra

from causaldreamer.cli import precheck
from causaldreamer.config import check_resume_path
from causaldreamer.errors import EXIT_USER_ERROR, UserError

REFUSED = {
    # (entry point's config, overrides): the error line's text
    ("train", "+model.lamda=0.5"): "unknown key model.lamda: did you mean model.lam?",
    ("train", "model.lamda=0.5"): "unknown key model.lamda: did you mean model.lam?",
    ("train", "+trainer.max_epoch=3"): "unknown key trainer.max_epoch: did you mean trainer.max_epochs?",
    ("train", "+lamda=0.5"): "unknown key lamda:",
    # A key under a parent the config lacks (scoring comes with the study experiments), typed or added.
    ("train", "scoring.limit=4"): "unknown key scoring.limit: this config declares nothing under scoring; "
    "known keys there: callbacks, ckpt_path",
    ("train", "+scoring.limit=4"): "unknown key scoring.limit: this config declares nothing under scoring;",
    ("train", "modle.lam=0.5"): "unknown key modle.lam: this config declares nothing under modle; did you "
    "mean model.lam?",
    ("train", "+model.lam=0.5"): "+model.lam=... adds a key that exists; drop the '+': model.lam=...",
    ("train", "model.margin=abc"): "model.margin='abc' is invalid: expected a number >= 0",
    (
        "train",
        "data.free_cause_prob=abc",
    ): "data.free_cause_prob='abc' is invalid: expected a number in [0, 1]",
    ("train", "data.free_cause_prob=1.5"): "data.free_cause_prob=1.5 is invalid: expected a number in [0, 1]",
    (
        "train",
        "model.adapter.use_gates=maybe",
    ): "model.adapter.use_gates='maybe' is invalid: expected true or false",
    ("train", "trainer.max_epochs=0"): "trainer.max_epochs=0 is invalid: expected an integer >= 1",
    ("train", "+experiment=lambda_sweep model.lam=0.5,abc"): "model.lam='abc' is invalid",
    (
        "train",
        "+experiment=ablatons",
    ): "experiment=ablatons is not an option of the config group 'experiment' (did you mean ablations?)",
    ("train", "+experiment=ablations +ablation=nope"): "ablation=nope is not an option of the config group",
    ("train", "model.lam=["): "cannot parse the overrides",
    ("generate", "diffusion=nope"): "diffusion=nope is not an option of the config group 'diffusion'",
    ("generate", "cause=x +lamda=0.5"): "unknown key lamda",
    ("evaluate", "-m method=sd15,nope"): "method=nope is not an option of the config group 'method'",
    ("evaluate", "limit=0"): "limit=0: must be null (all scenarios) or an integer >= 1",
    ("compare", "+summary=[a]"): "unknown key summary: did you mean summaries?",
}
ACCEPTED = [
    ("train", ""),
    ("train", "model.lam=0.5 data.batch_size=64 trainer.max_epochs=3"),
    ("train", "+experiment=smoke"),
    ("train", "-m model.lam=0.5,0.7,0.9"),
    ("train", "+experiment=lambda_sweep"),
    ("train", "+experiment=lambda_sweep model.lam=0.6,0.8 trainer.max_epochs=200"),
    ("train", "+experiment=ablations"),
    ("train", "+ablation=no_gates"),
    ("train", "+trainer.profiler=simple"),
    ("train", "+hparams_search=optuna"),
    ("generate", "cause=x diffusion=tiny"),
]


@pytest.fixture(autouse=True)
def fresh_hydra():
    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


@pytest.mark.parametrize(("config", "args"), REFUSED)
def test_bad_input_is_refused_naming_the_key(config, args):
    check = check_resume_path if config == "train" else None
    if config == "evaluate":
        from causaldreamer.evaluate import read_scenarios as check
    with pytest.raises(UserError) as refused:
        precheck(config, args.split(), check)
    assert REFUSED[config, args] in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(("config", "args"), ACCEPTED)
def test_readme_commands_pass_the_checks(config, args):
    precheck(config, args.split(), check_resume_path if config == "train" else None)


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        ("causaldreamer.train", ["+model.lamda=0.5"], "did you mean model.lam?"),
        ("causaldreamer.train", ["+experiment=lambda_sweep", "model.lam=0.5,abc"], "model.lam='abc'"),
        ("causaldreamer.generate", ["diffusion=nope"], "is not an option of the config group 'diffusion'"),
        ("causaldreamer.generate", ["diffusion=tiny", "cause=x", "adapter=/nonexistent"], "not found"),
        ("causaldreamer.evaluate", ["method=sd15", "limit=abc"], "limit='abc'"),
    ],
)
def test_cli_refusal_leaves_the_directory_empty(tmp_path, module, args, message):
    env = {"WANDB_MODE": "offline", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path.parent)}
    result = run_module(module, args, env, tmp_path, timeout=120)
    assert result.returncode == EXIT_USER_ERROR, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]  # before it at most library warnings, no traceback
    assert line.startswith("error: ") and message in line and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []

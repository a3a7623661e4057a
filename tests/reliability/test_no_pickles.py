"""Nothing unpickles a file a user did not create: checkpoints load weights-only (Lightning 2.6 passes
``weights_only=None`` to torch.load, which the environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD turns
into a full unpickle, so the project says True everywhere), adapters and caches are safetensors.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch

from causaldreamer.adapter import CausalAdapter
from causaldreamer.diffusion.adapter_folder import load_adapter_folder
from causaldreamer.errors import UserError

from .cli_checks import REPO, Attempt, assert_refused_and_nothing_written

pytestmark = pytest.mark.reliability

PACKAGE = REPO / "causaldreamer"
UNPICKLERS = {"pickle.load", "pickle.loads", "joblib.load", "dill.load", "dill.loads", "torch.jit.load"}
TRAINER_METHODS = {"fit", "validate", "test", "predict"}


class MakesADirectory:
    """A pickle that, when loaded with full unpickling, calls os.makedirs(path): harmless, and visible."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return os.makedirs, (self.path,)


def test_checkpoint_that_runs_code_is_refused_without_running_it(tmp_path, slice_dir):
    marker = tmp_path / "code-ran"
    checkpoint = tmp_path / "malicious.ckpt"
    torch.save({"epoch": 0, "state_dict": {"adapter.relation.weight": MakesADirectory(marker)}}, checkpoint)
    # Even where the environment asks torch for full unpickling by default.
    attempt = Attempt(
        "causaldreamer.train",
        ["+experiment=smoke", "logger=csv", f"ckpt_path={checkpoint}"],
        slice_dir,
        tmp_path / "attempt",
        {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"},
    )
    result = attempt.command().run()
    assert_refused_and_nothing_written(
        attempt, result, str(checkpoint), "GLOBAL os.makedirs", "asks to run code"
    )
    assert not marker.exists()
    torch.load(checkpoint, weights_only=False)  # the control: a full unpickle does run the payload
    assert marker.is_dir()


def test_adapter_folder_with_pickled_weights_is_refused(tmp_path):
    folder = tmp_path / "adapter"
    adapter = CausalAdapter()
    adapter.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(adapter.state_dict(), folder / "pytorch_model.bin")  # what from_pretrained would unpickle
    with pytest.raises(UserError, match="has no model.safetensors"):
        load_adapter_folder(folder)


def passes_weights_only(call: ast.Call) -> bool:
    return any(
        kw.arg == "weights_only" and isinstance(kw.value, ast.Constant) and kw.value.value is True
        for kw in call.keywords
    )


def unpickling_calls(code: str) -> list[tuple[int, str]]:
    """(line, callee) of the calls in ``code`` that could unpickle: pickle-family loaders, ``allow_pickle``,
    and checkpoint loads (torch.load, load_from_checkpoint, a Trainer method given a ckpt_path) without
    ``weights_only=True``."""
    found = []
    for node in ast.walk(ast.parse(code)):
        if not isinstance(node, ast.Call):
            continue
        callee = ast.unparse(node.func)
        name = callee.rsplit(".", 1)[-1]
        loads_checkpoint = callee == "torch.load" or name == "load_from_checkpoint"
        resumes = name in TRAINER_METHODS and any(kw.arg == "ckpt_path" for kw in node.keywords)
        if (
            callee in UNPICKLERS
            or any(kw.arg == "allow_pickle" for kw in node.keywords)
            or ((loads_checkpoint or resumes) and not passes_weights_only(node))
        ):
            found.append((node.lineno, callee))
    return found


def test_the_check_finds_what_it_looks_for():
    code = (
        "pickle.load(f)\n"
        "torch.load(path)\n"
        "torch.load(path, weights_only=True)\n"
        "trainer.fit(model, ckpt_path=path)\n"
        "trainer.fit(model, ckpt_path=path, weights_only=True)\n"
        "np.load(path, allow_pickle=True)\n"
    )
    assert [line for line, _ in unpickling_calls(code)] == [1, 2, 4, 6]


def test_no_code_path_unpickles():
    found = [
        f"{source.relative_to(REPO)}:{line} {callee}"
        for source in sorted(PACKAGE.rglob("*.py"))
        for line, callee in unpickling_calls(source.read_text())
    ]
    assert not found

"""Every user-facing input, when wrong, is refused by the real CLI in one ``error: ...`` line naming the
problem, with exit code 2, no traceback and nothing written (see cli_checks for what that means).

tests/test_data.py checks the loaders one by one; here each defect goes through ``python -m ...`` as a
user would meet it. The attempts are independent, so the module runs them side by side, once.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from causaldreamer.adapter import CausalAdapter
from causaldreamer.data.files import PAIRS_FILE

from .cli_checks import CAUSE, Attempt, assert_refused_and_nothing_written, run_concurrently

pytestmark = pytest.mark.reliability

COLUMN = {
    name: i for i, name in enumerate(["frame_id", "prompt", "cause", "effect", "link_type", "strength"])
}

EXPECTED = {
    "csv-missing-column": (PAIRS_FILE, "lacks column(s) ['effect']"),
    "csv-empty-cell": (PAIRS_FILE, "1 empty 'effect' cell(s), first at data row 5"),
    "csv-bad-encoding": (PAIRS_FILE, "is not UTF-8"),
    "csv-nan-strength": (PAIRS_FILE, "NaN 'strength' value(s), first at data row 2 ('nan')"),
    "csv-unknown-link-type": (PAIRS_FILE, "unknown link_type value(s) ['prevents']"),
    "csv-duplicated-header": (PAIRS_FILE, "duplicated column(s) ['cause']"),
    "split-out-of-range": ("train_list.txt", "out of range [0, 1000), e.g. 1000"),
    "split-overlap": ("splits train and val overlap in 1 row(s)",),
    "split-not-integer": ("train_list.txt", "'12.5' is not an integer row index"),
    "lam-not-finite": ("model.lam=inf is invalid: expected a finite number",),
    "batch-size-zero": ("data.batch_size=0 is invalid: expected an integer >= 1",),
    "batch-size-not-integer": ("data.batch_size=2.5 is invalid: expected an integer >= 1",),
    "missing-encoder-weights": ("could not load the CLIP tokenizer from '/nonexistent/clip'",),
    "checkpoint-other-dim": ("the checkpoint's adapter is 768-d but the configured encoder gives 384-d",),
    "output-dir-unwritable": ("cannot write to the output directory", "choose a writable one"),
    "generate-top-k-zero": ("top_k=0",),
    "generate-one-frame": ("num_frames=1", "at least 2 frames"),
    "generate-adapter-other-dim": ("(d=768) but the encoder is", "(d=384)"),
}


def data_copy(source: Path, root: Path) -> Path:
    folder = root / "data"
    shutil.copytree(source, folder)
    return folder


def edit_pairs(data: Path, edit: Callable[[list[list[str]]], None]) -> Path:
    """Apply ``edit`` to the pair table's rows (row 0 is the header) and write it back as CSV."""
    path = data / PAIRS_FILE
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    edit(rows)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)
    return data


def set_cell(row: int, column: int, value: str) -> Callable[[list[list[str]]], None]:
    def edit(rows: list[list[str]]) -> None:
        rows[row][column] = value

    return edit


def append_line(data: Path, name: str, line: str) -> Path:
    with open(data / name, "a") as handle:
        handle.write(f"{line}\n")
    return data


def first_index(split_list: Path) -> str:
    return split_list.read_text().split()[0]


def latin1_cause(data: Path) -> Path:
    path = data / PAIRS_FILE
    path.write_bytes(path.read_bytes().replace(b"rock rolls", "röck rolls".encode("latin-1"), 1))
    return data


@pytest.fixture(scope="module")
def refusals(tmp_path_factory, slice_dir, adapter_dir, clip_adapter_dir) -> dict:
    base = tmp_path_factory.mktemp("bad-input")
    effect = COLUMN["effect"]

    def train(name: str, *overrides: str, data: Callable[[Path], Path] | None = None) -> Attempt:
        root = base / name
        root.mkdir()
        data_dir = data(data_copy(slice_dir, root)) if data else slice_dir
        return Attempt("causaldreamer.train", ["+experiment=smoke", "logger=csv", *overrides], data_dir, root)

    def generate(name: str, *overrides: str, adapter: Path = adapter_dir) -> Attempt:
        args = ["diffusion=tiny", f"cause={CAUSE!r}", f"adapter={adapter}", *overrides]
        return Attempt("causaldreamer.generate", args, slice_dir, base / name)

    other_dim = base / "checkpoint-768d.ckpt"
    adapter = CausalAdapter(dim=768).state_dict()
    torch.save({"epoch": 0, "state_dict": {f"adapter.{k}": v for k, v in adapter.items()}}, other_dim)
    blocker = base / "a-file"  # a path below a regular file cannot be created, even by root
    blocker.write_text("")
    attempts = [
        train("csv-missing-column", data=lambda d: edit_pairs(d, set_cell(0, effect, "outcome"))),
        train("csv-empty-cell", data=lambda d: edit_pairs(d, set_cell(6, effect, ""))),
        train("csv-bad-encoding", data=latin1_cause),
        train("csv-nan-strength", data=lambda d: edit_pairs(d, set_cell(3, COLUMN["strength"], "nan"))),
        train(
            "csv-unknown-link-type",
            data=lambda d: edit_pairs(d, set_cell(2, COLUMN["link_type"], "prevents")),
        ),
        train("csv-duplicated-header", data=lambda d: edit_pairs(d, set_cell(0, effect, "cause"))),
        train("split-out-of-range", data=lambda d: append_line(d, "train_list.txt", "1000")),
        train(
            "split-overlap", data=lambda d: append_line(d, "val_list.txt", first_index(d / "train_list.txt"))
        ),
        train("split-not-integer", data=lambda d: append_line(d, "train_list.txt", "12.5")),
        train("lam-not-finite", "model.lam=inf"),
        train("batch-size-zero", "data.batch_size=0"),
        train("batch-size-not-integer", "data.batch_size=2.5"),
        train("missing-encoder-weights", "encoder=clip", "encoder.name_or_path=/nonexistent/clip"),
        train("checkpoint-other-dim", f"ckpt_path={other_dim}"),
        train("output-dir-unwritable", f"paths.output_dir={blocker / 'run'}"),
        generate("generate-top-k-zero", "generation.top_k=0"),
        generate("generate-one-frame", "generation.num_frames=1"),
        generate("generate-adapter-other-dim", adapter=clip_adapter_dir),
    ]
    assert sorted(a.root.name for a in attempts) == sorted(EXPECTED)
    results = run_concurrently({a.root.name: a.command() for a in attempts})
    return {a.root.name: (a, results[a.root.name]) for a in attempts}


@pytest.mark.parametrize("case", EXPECTED)
def test_refused_in_one_line_with_nothing_written(refusals, case):
    attempt, result = refusals[case]
    assert_refused_and_nothing_written(attempt, result, *EXPECTED[case])

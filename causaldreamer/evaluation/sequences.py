"""Sequences already in an evaluation's output directory: reused on a rerun, read back to be scored
(``causaldreamer.generation.run.score_sequences``).

Each scenario's sequence lives in its own folder, written atomically by ``write_sequence`` (the layout of
``causaldreamer.generate``), so an interrupted evaluation leaves complete folders only and a rerun keeps
them. A folder made by another method, other settings, another cause or seed stops the run instead:
scoring it would silently mix two configurations in one table.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from causaldreamer.diffusion.sequence_files import RECORD_FILE
from causaldreamer.errors import UserError


def read_record(folder: Path) -> dict:
    path = folder / RECORD_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(
            f"{path} cannot be read ({type(err).__name__}); delete {folder} to generate it again"
        ) from None


def check_reusable(folder: Path, expected: dict) -> None:
    """Every entry of ``expected`` (the method's record, the cause, the seed) as the folder's record has it."""
    record = read_record(folder)
    for key, value in json.loads(json.dumps(expected)).items():  # as JSON stores it: tuples become lists
        if record.get(key) != value:
            raise UserError(
                f"{folder} holds a sequence made with {key}={record.get(key)!r}, this run has {value!r}; "
                "evaluate into a new output_dir, or delete that folder to generate it again"
            )


def read_sequence(folder: Path) -> tuple[list[Image.Image], dict]:
    """The frames (in order) and the record of a complete sequence folder."""
    record = read_record(folder)
    try:
        frames = [Image.open(folder / name).convert("RGB") for name in record["files"]]
    except (KeyError, OSError) as err:
        raise UserError(
            f"{folder} lacks frames its record lists ({type(err).__name__}: {err}); delete the folder to "
            "generate it again"
        ) from None
    return frames, record

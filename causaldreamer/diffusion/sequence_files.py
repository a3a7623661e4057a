"""Writing one sequence (DESIGN 6.5): frames, grid, GIF and JSON record, all or nothing.

Everything is written into a hidden temporary folder beside the target, which is renamed into place
last (``causaldreamer.io.atomic_dir``): an interrupted run leaves complete sequence folders only, so a
rerun can skip them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from PIL import Image

from causaldreamer.io import atomic_dir

RECORD_FILE = "record.json"
GIF_FRAME_MS = 400


def sequence_folder_name(index: int, cause: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", cause.lower()).strip("-")[:60].rstrip("-")
    return f"{index:03d}-{slug or 'cause'}"


def is_complete(folder: Path) -> bool:
    return (folder / RECORD_FILE).is_file()


def image_grid(frames: list[Image.Image]) -> Image.Image:
    """The frames side by side, in temporal order."""
    width, height = frames[0].size
    grid = Image.new("RGB", (width * len(frames), height))
    for f, frame in enumerate(frames):
        grid.paste(frame.convert("RGB"), (f * width, 0))
    return grid


def write_sequence(folder: str | Path, frames: list[Image.Image], record: dict) -> Path:
    names = [f"frame_{f:02d}.png" for f in range(len(frames))]
    with atomic_dir(folder) as tmp:
        for name, frame in zip(names, frames, strict=True):
            frame.save(tmp / name)
        image_grid(frames).save(tmp / "grid.png")
        frames[0].save(
            tmp / "sequence.gif", save_all=True, append_images=frames[1:], duration=GIF_FRAME_MS, loop=0
        )
        (tmp / RECORD_FILE).write_text(json.dumps({**record, "files": names}, indent=2, ensure_ascii=False))
    return Path(folder)

"""Writing one sequence (DESIGN 6.5): frames, grid, GIF and JSON record, all or nothing.

Everything is written into a hidden temporary folder beside the target, which is renamed into place
last (``causaldreamer.io.atomic_dir``): an interrupted run leaves complete sequence folders only, so a
rerun can skip them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from causaldreamer.io import atomic_dir

RECORD_FILE = "record.json"
GIF_FRAME_MS = 400
GRID_MIN_WIDTH = 160  # px per frame in grid.png, so that its caption has room
CAPTION_LINES = 3  # lines of effect text under each frame; longer text ends in ELLIPSIS
ELLIPSIS = "..."


@dataclass
class GeneratedSequence:
    """One sequence's frames and record, from CausalDreamer or a baseline; ``record["frames"][f]["effect"]``
    is the effect frame f shows, the text the CLIP, CCS and CPS metrics pair it with."""

    frames: list[Image.Image]
    record: dict


def sequence_folder_name(index: int, cause: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", cause.lower()).strip("-")[:60].rstrip("-")
    return f"{index:03d}-{slug or 'cause'}"


def is_complete(folder: Path) -> bool:
    return (folder / RECORD_FILE).is_file()


def image_grid(frames: list[Image.Image], effects: list[str] | None = None) -> Image.Image:
    """The frames side by side, in temporal order, each with its number and effect written underneath,
    so a grid reads on its own in a paper or a dashboard. Frames narrower than GRID_MIN_WIDTH are
    enlarged (nearest pixel, whole factors) to leave the text room; the frame files keep their size."""
    width, height = frames[0].size
    scale = -(-GRID_MIN_WIDTH // width)  # ceil: at least 1
    width, height = width * scale, height * scale
    font = ImageFont.load_default(size=max(12, width // 12))  # still legible with 8 frames across a page
    ascent, descent = font.getmetrics()
    line, pad = ascent + descent, max(4, width // 40)
    grid = Image.new(
        "RGB",
        ((width + pad) * len(frames) - pad, height + 2 * pad + line * (1 + CAPTION_LINES)),
        "white",
    )
    draw = ImageDraw.Draw(grid)
    for f, frame in enumerate(frames):
        x = f * (width + pad)
        grid.paste(frame.convert("RGB").resize((width, height), Image.Resampling.NEAREST), (x, 0))
        draw.text((x, height + pad), f"frame {f}", fill="dimgray", font=font)
        for i, text in enumerate(caption_lines(effects[f] if effects else "", font, width), start=1):
            draw.text((x, height + pad + i * line), text, fill="black", font=font)
    return grid


def caption_lines(text: str, font: ImageFont.FreeTypeFont, width: float) -> list[str]:
    """``text`` wrapped at word boundaries into at most CAPTION_LINES lines of ``width`` pixels; what does
    not fit ends in an ellipsis (a word longer than a line too)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    kept = [_fit(line, font, width) for line in lines[:CAPTION_LINES]]
    if len(lines) > CAPTION_LINES and not kept[-1].endswith(ELLIPSIS):
        kept[-1] = _fit(kept[-1], font, width, cut=True)
    return kept


def _fit(text: str, font: ImageFont.FreeTypeFont, width: float, cut: bool = False) -> str:
    """``text`` as it is when it fits (and ``cut`` is off), else shortened to end in an ellipsis."""
    if not cut and font.getlength(text) <= width:
        return text
    while text and font.getlength(text + ELLIPSIS) > width:
        text = text[:-1]
    return text.rstrip() + ELLIPSIS


def write_sequence(folder: str | Path, frames: list[Image.Image], record: dict) -> Path:
    names = [f"frame_{f:02d}.png" for f in range(len(frames))]
    with atomic_dir(folder) as tmp:
        for name, frame in zip(names, frames, strict=True):
            frame.save(tmp / name)
        effects = [frame.get("effect", "") for frame in record.get("frames", [])]
        image_grid(frames, effects).save(tmp / "grid.png")
        frames[0].save(
            tmp / "sequence.gif", save_all=True, append_images=frames[1:], duration=GIF_FRAME_MS, loop=0
        )
        (tmp / RECORD_FILE).write_text(json.dumps({**record, "files": names}, indent=2, ensure_ascii=False))
    return Path(folder)

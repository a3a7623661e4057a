"""grid.png: the frames in order, each with its number and effect underneath, long text cut to fit."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFont

from causaldreamer.diffusion.sequence_files import (
    CAPTION_LINES,
    ELLIPSIS,
    GRID_MIN_WIDTH,
    caption_lines,
    image_grid,
    write_sequence,
)

LONG = "water spills over the edge of the table and onto the carpet in a puddle nobody notices for hours"


def noise_frames(count: int, size: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


def ink(image: Image.Image) -> int:
    """Dark pixels: where text was drawn on the white caption band."""
    return int((np.asarray(image.convert("L")) < 128).sum())


def test_each_frame_sits_above_its_number_and_effect():
    frames = noise_frames(3, 32)
    grid = image_grid(frames, ["the glass falls", LONG, "the floor is wet"])
    cell = GRID_MIN_WIDTH  # 32 px frames, enlarged 5 times
    pitch = cell + (grid.width - 3 * cell) // 2  # a cell and the gutter after it
    for f, frame in enumerate(frames):
        enlarged = frame.resize((cell, cell), Image.Resampling.NEAREST)
        assert grid.crop((f * pitch, 0, f * pitch + cell, cell)).tobytes() == enlarged.tobytes()
    captions = [grid.crop((f * pitch, cell, f * pitch + cell, grid.height)) for f in range(3)]
    assert all(ink(caption) > 0 for caption in captions)
    assert ink(captions[1]) > 2 * ink(captions[0])  # the long effect fills its lines
    unlabelled = image_grid(frames)  # a record without effects still gets frame numbers
    number_only = ink(unlabelled.crop((0, cell, cell, grid.height)))
    assert unlabelled.size == grid.size and 0 < number_only < ink(captions[0])


def test_large_frames_keep_their_size():
    size = 2 * GRID_MIN_WIDTH
    frames = noise_frames(2, size)
    grid = image_grid(frames, ["a", "b"])
    assert grid.crop((0, 0, size, size)).tobytes() == frames[0].tobytes() and grid.height > size


def test_caption_wraps_words_and_cuts_what_does_not_fit():
    font = ImageFont.load_default(size=14)
    width = 120
    lines = caption_lines(LONG, font, width)
    assert len(lines) == CAPTION_LINES and lines[-1].endswith(ELLIPSIS)
    assert all(font.getlength(line) <= width for line in lines)
    assert LONG.startswith(" ".join(lines).removesuffix(ELLIPSIS).rstrip())
    assert caption_lines("the glass falls", font, width) == ["the glass falls"]
    (word,) = caption_lines("Pneumonoultramicroscopicsilicovolcanoconiosis", font, width)
    assert word.endswith(ELLIPSIS) and font.getlength(word) <= width
    assert caption_lines("", font, width) == []


def test_written_grid_captions_come_from_the_record(tmp_path):
    frames = noise_frames(2, 32)
    record = {
        "cause": "a glass tips",
        "frames": [{"frame": 0, "effect": "it wobbles"}, {"frame": 1, "effect": LONG}],
    }
    folder = write_sequence(tmp_path / "seq", frames, record)
    written = Image.open(folder / "grid.png")
    assert written.tobytes() == image_grid(frames, ["it wobbles", LONG]).tobytes()

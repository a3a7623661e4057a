"""Composed prompts and the character spans of their cause and effect parts (DESIGN 6.1 and 6.4)."""

from __future__ import annotations

import string

from causaldreamer.errors import UserError
from causaldreamer.intervention import SPAN_CAUSE, SPAN_EFFECT, SPAN_NONE

DEFAULT_TEMPLATE = "{cause}. Therefore, {effect}"


def compose(template: str, cause: str, effect: str) -> tuple[str, list[tuple[int, int, int]]]:
    """Fill ``template`` and return the text with its (start, end, span_id) character spans."""
    fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    if sorted(fields) != ["cause", "effect"]:
        raise UserError(
            f"prompt template {template!r} must contain {{cause}} and {{effect}} once each, and nothing "
            "else in braces; fix the template setting"
        )
    text, spans = "", []
    for literal, name, _, _ in string.Formatter().parse(template):
        text += literal
        if name is not None:
            part = cause if name == "cause" else effect
            spans.append((len(text), len(text) + len(part), SPAN_CAUSE if name == "cause" else SPAN_EFFECT))
            text += part
    return text, spans


def span_ids_from_offsets(offsets: list[tuple[int, int]], spans: list[tuple[int, int, int]]) -> list[int]:
    """Span id of every token, given each token's character offsets (special tokens have (0, 0))."""
    ids = []
    for start, end in offsets:
        span_id = SPAN_NONE
        if end > start:
            for span_start, span_end, sid in spans:
                if start < span_end and end > span_start:
                    span_id = sid
                    break
        ids.append(span_id)
    return ids

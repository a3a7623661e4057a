"""Cause and effect token spans of each frame's prompt, in the Stable Diffusion tokenizer's ids (DESIGN 6.4).

The spans come from character offsets, so they follow the tokenizer's own word pieces; the ids are made
with the same settings the pipeline uses to encode the prompts (pad and truncate to model_max_length),
so span ids and text-encoder states line up token for token.
"""

from __future__ import annotations

import logging

import torch

from causaldreamer.errors import UserError
from causaldreamer.intervention import SPAN_EFFECT
from causaldreamer.prompts import compose, span_ids_from_offsets

log = logging.getLogger(__name__)


def tokenize_like_pipeline(tokenizer, prompts: list[str], offsets: bool = False):
    return tokenizer(
        prompts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
        return_offsets_mapping=offsets,
    )


def frame_prompts_and_spans(
    tokenizer, template: str, cause: str, effects: list[str]
) -> tuple[list[str], torch.Tensor]:
    """Prompt of every frame and its span ids [T, model_max_length] (0 none, 1 cause, 2 effect)."""
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(
            f"{type(tokenizer).__name__} gives no character offsets; load the pipeline with a fast "
            "(tokenizers-backed) CLIP tokenizer"
        )
    composed = [compose(template, cause, effect) for effect in effects]
    prompts = [text for text, _ in composed]
    batch = tokenize_like_pipeline(tokenizer, prompts, offsets=True)
    span_ids = torch.tensor(
        [
            span_ids_from_offsets(offsets, spans)
            for offsets, (_, spans) in zip(batch["offset_mapping"].tolist(), composed, strict=True)
        ],
        dtype=torch.long,
    )
    truncated = [p for p, ids in zip(prompts, span_ids, strict=True) if not (ids == SPAN_EFFECT).any()]
    if truncated:
        log.warning(
            "%d prompt(s) lose their whole effect to the %d-token limit, e.g. %r",
            len(truncated),
            tokenizer.model_max_length,
            truncated[0],
        )
    return prompts, span_ids

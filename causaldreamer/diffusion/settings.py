"""Checks of generation settings and causes: cheap, so a bad run fails in seconds, before any model loads
or any file is written."""

from __future__ import annotations

import math

from causaldreamer.adapter import LINK_TYPES
from causaldreamer.errors import UserError
from causaldreamer.prompts import DEFAULT_TEMPLATE, compose

RETRIEVAL_MODES = ("topk", "path")


def check_settings(
    *,
    num_frames: int,
    top_k: int,
    lam: float | None,
    bank_size: int,
    retrieval: str = "topk",
    link_type: str = "causal",
    template: str | None = DEFAULT_TEMPLATE,
    guidance_scale: float = 7.5,
    num_inference_steps: int = 50,
) -> None:
    """Reject settings that cannot make a sequence, before any model is loaded or file written. ``lam``
    or ``template`` None stands for the adapter's own, checked once the adapter is loaded."""
    if not _is_int(num_frames) or num_frames < 2:
        raise UserError(f"num_frames={num_frames!r}: a sequence needs at least 2 frames")
    if retrieval not in RETRIEVAL_MODES:
        raise UserError(f"retrieval={retrieval!r}: use one of {', '.join(RETRIEVAL_MODES)}")
    if not _is_int(top_k) or not 1 <= top_k <= bank_size:
        raise UserError(f"top_k={top_k!r}: must be an integer from 1 to the effect bank's size ({bank_size})")
    if retrieval == "path" and num_frames > bank_size:
        raise UserError(
            f"num_frames={num_frames}: path retrieval needs as many effects, the bank has {bank_size}"
        )
    if lam is not None and not _is_finite(lam):
        raise UserError(f"lam={lam!r}: the intervention strength must be a finite number")
    if link_type not in LINK_TYPES:
        raise UserError(f"link_type={link_type!r}: use one of {', '.join(LINK_TYPES)}")
    if not _is_finite(guidance_scale) or guidance_scale < 0:
        raise UserError(f"guidance_scale={guidance_scale!r}: must be a finite number >= 0")
    if not _is_int(num_inference_steps) or num_inference_steps < 1:
        raise UserError(f"num_inference_steps={num_inference_steps!r}: must be an integer >= 1")
    if template is not None:
        compose(template, "cause", "effect")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_cause(cause) -> str:
    if not isinstance(cause, str) or not cause.strip():
        raise UserError(f"cause={cause!r}: give a non-empty sentence, e.g. cause='a dog running in a park'")
    return cause.strip()

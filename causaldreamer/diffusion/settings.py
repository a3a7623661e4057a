"""The generation settings of one run, and their checks: cheap, so a bad run fails in seconds, before any
model loads or any file is written.

``GenerationSettings`` is the ``generation`` config group (``conf/generation/default.yaml``, the same
values) of every entry point: generate, evaluate's CausalDreamer method and the studies' scoring all
build their generator from it, so an override or an ablation (``+ablation=no_progression``) means the
same everywhere, and every sequence record is written from it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from causaldreamer.adapter import LINK_TYPES
from causaldreamer.errors import UserError
from causaldreamer.prompts import compose
from causaldreamer.retrieval import DEFAULT_RETRIEVAL, DEFAULT_TOP_K, RETRIEVAL_MODES


@dataclass(frozen=True)
class GenerationSettings:
    """How a cause becomes frames (DESIGN 6.2-6.4). ``lam`` and ``template`` None: the adapter's own (the
    values it was trained with); ``height`` and ``width`` None: the model's native size."""

    num_frames: int = 8
    top_k: int = DEFAULT_TOP_K  # K effects retrieved per cause, in both retrieval modes (retrieval.py)
    lam: float | None = None
    template: str | None = None
    retrieval: str = DEFAULT_RETRIEVAL
    link_type: str = "causal"
    share_first_frame: bool = False  # every frame's self-attention also attends frame 0
    progression: bool = True  # False (ablation): every frame gets the full intervention, a_f = 1
    shared_seed: bool = True  # False (ablation): frame f starts from its own latent, seed + f
    guidance_scale: float = 7.5
    num_inference_steps: int = 50
    height: int | None = None
    width: int | None = None
    # SD's NSFW checker blacks out frames it flags, which would corrupt the image metrics: off by default
    # in every path (the baselines never carry it); the records say which.
    safety_checker: bool = False

    def for_adapter(self, adapter) -> GenerationSettings:
        """``lam`` and ``template`` filled in with the adapter's own where they are None."""
        return dataclasses.replace(
            self,
            lam=adapter.lam if self.lam is None else self.lam,
            template=adapter.template if self.template is None else self.template,
        )

    def provenance(self, adapter) -> dict:
        """For a sequence's record: the adapter's own lambda and template, and what overrode them."""
        given = {"lambda": self.lam, "template": self.template}
        return {
            "adapter_defaults": {"lambda": adapter.lam, "template": adapter.template},
            "overrides": {name: value for name, value in given.items() if value is not None},
        }

    def record(self) -> dict:
        """Every setting under its record name (``lambda`` for ``lam``, as the paper writes it)."""
        values = dataclasses.asdict(self)
        return {("lambda" if name == "lam" else name): value for name, value in values.items()}


DEFAULTS = GenerationSettings()  # the library's defaults, which conf/generation/default.yaml repeats


def check_settings(settings: GenerationSettings, bank_size: int | None = None) -> None:
    """Reject settings that cannot make a sequence; with ``bank_size`` also a top_k the effect bank cannot
    give. Called once per run, before any model loads: where the bank is not known yet (the studies check
    before training), retrieval refuses a top_k over the bank's size itself."""
    s = settings
    if not _is_int(s.num_frames) or s.num_frames < 2:
        raise UserError(f"num_frames={s.num_frames!r}: a sequence needs at least 2 frames")
    if s.retrieval not in RETRIEVAL_MODES:
        raise UserError(f"retrieval={s.retrieval!r}: use one of {', '.join(RETRIEVAL_MODES)}")
    if not _is_int(s.top_k) or s.top_k < 1:
        raise UserError(f"top_k={s.top_k!r}: must be an integer >= 1 (the effects retrieved per cause)")
    if bank_size is not None and s.top_k > bank_size:
        raise UserError(
            f"top_k={s.top_k!r}: must be an integer from 1 to the effect bank's size ({bank_size})"
        )
    if s.lam is not None and not _is_finite(s.lam):
        raise UserError(f"lam={s.lam!r}: the intervention strength must be a finite number")
    if s.link_type not in LINK_TYPES:
        raise UserError(f"link_type={s.link_type!r}: use one of {', '.join(LINK_TYPES)}")
    if not _is_finite(s.guidance_scale) or s.guidance_scale < 0:
        raise UserError(f"guidance_scale={s.guidance_scale!r}: must be a finite number >= 0")
    if not _is_int(s.num_inference_steps) or s.num_inference_steps < 1:
        raise UserError(f"num_inference_steps={s.num_inference_steps!r}: must be an integer >= 1")
    for name in ("height", "width"):
        size = getattr(s, name)
        if size is not None and (not _is_int(size) or size < 8 or size % 8):
            raise UserError(f"{name}={size!r}: must be null (the model's size) or a multiple of 8")
    if s.template is not None:
        compose(s.template, "cause", "effect")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_cause(cause) -> str:
    if not isinstance(cause, str) or not cause.strip():
        raise UserError(f"cause={cause!r}: give a non-empty sentence, e.g. cause='a dog running in a park'")
    return cause.strip()

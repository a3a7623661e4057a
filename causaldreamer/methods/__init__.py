"""Sequence generators behind one interface (DESIGN 8): CausalDreamer and the baselines.

Each family lives in its own module with its builder, the Hydra target of ``conf/method``: ``causaldreamer``
(the method itself), ``text_to_image`` (sd15, sd15_shared_seed, sdxl), ``controlnet``, ``instruct_pix2pix``,
``animatediff``.
They are not imported here, so using the interface does not load diffusers.
"""

from causaldreamer.methods.base import SequenceMethod

__all__ = ["SequenceMethod"]

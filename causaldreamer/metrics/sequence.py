"""The six image-sequence metrics of DESIGN 7 (definitions and edge cases: docs/metrics.md).

Each metric takes features, not images (features.py turns frames and texts into them), scores every
sequence on its own and averages the per-sequence scores over sequences. The state is a sum of scores
and a count of sequences, both reduced by "sum", so a DDP sync gives exactly the mean over all
sequences of all processes.

Shapes: one sequence is [T, d] (cause [d]); a batch of sequences is [B, T, d] (cause [B, d]); T >= 2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.utilities import dim_zero_cat

ETC_LOW, ETC_HIGH = 0.6, 0.85


def _sequences(features: Tensor, name: str) -> Tensor:
    """[T,d] or [B,T,d] -> unit-norm [B,T,d] float features with T >= 2."""
    if features.ndim == 2:
        features = features[None]
    if features.ndim != 3:
        raise ValueError(f"{name} must be [T, d] or [B, T, d], got shape {tuple(features.shape)}")
    if features.shape[1] < 2:
        raise ValueError(f"{name} needs at least 2 frames per sequence, got {features.shape[1]}")
    return F.normalize(features.float(), dim=-1)


def _causes(features: Tensor, batch: int) -> Tensor:
    """[d] or [B,d] -> unit-norm [B,d] float features."""
    if features.ndim == 1:
        features = features[None]
    if features.ndim != 2 or features.shape[0] != batch:
        raise ValueError(f"cause_features must be [d] or [{batch}, d], got shape {tuple(features.shape)}")
    return F.normalize(features.float(), dim=-1)


def consecutive_cosines(features: Tensor) -> Tensor:
    """cos(x_f, x_{f+1}) of unit-norm [B,T,d] features: [B, T-1]."""
    return (features[:, :-1] * features[:, 1:]).sum(-1)


def mean_pairwise_dissimilarity(features: Tensor) -> Tensor:
    """Mean of 1 - cos(x_i, x_j) over all frame pairs i < j of unit-norm [B,T,d] features: [B]."""
    num_frames = features.shape[1]
    upper = torch.triu_indices(num_frames, num_frames, offset=1, device=features.device)
    cosines = (features @ features.transpose(1, 2))[:, upper[0], upper[1]]
    return (1 - cosines).mean(-1)


def transition_scores(similarities: Tensor, low: float = ETC_LOW, high: float = ETC_HIGH) -> Tensor:
    """ETC score of each transition: 1 inside [low, high], 0.5 above it, sim / low below it."""
    return torch.where(
        similarities > high,
        torch.full_like(similarities, 0.5),
        torch.where(similarities >= low, torch.ones_like(similarities), similarities / low),
    )


def causal_progress(image: Tensor, effect: Tensor, cause: Tensor) -> Tensor:
    """p_f = cos(img_f, effect_f) - cos(img_f, cause) of unit-norm features: [B, T]."""
    return (image * effect).sum(-1) - (image * cause[:, None]).sum(-1)


def average_ranks(values: Tensor) -> Tensor:
    """1-based ranks along the last dim, ties sharing their average rank (as Spearman needs)."""
    below = (values[..., None, :] < values[..., :, None]).sum(-1)
    equal = (values[..., None, :] == values[..., :, None]).sum(-1)
    return below + (equal + 1) / 2


def frame_order_correlation(values: Tensor) -> Tensor:
    """Spearman correlation between frame index and values [B,T]: [B].

    A constant sequence has no rank variance, so the correlation is undefined; it scores 0 (no
    progression), so that a sequence that never moves counts as showing no order instead of being dropped.
    """
    ranks = average_ranks(values)
    ranks = ranks - ranks.mean(-1, keepdim=True)
    index = torch.arange(values.shape[-1], dtype=ranks.dtype, device=values.device)
    index = index - index.mean()
    spread = ranks.norm(dim=-1) * index.norm()
    return torch.where(
        spread > 0, (ranks * index).sum(-1) / spread.clamp(min=1e-12), torch.zeros_like(spread)
    )


class SequenceMean(Metric):
    """Mean over sequences of a per-sequence score; subclasses say how one sequence is scored."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def _accumulate(self, scores: Tensor) -> None:
        self.total += scores.sum().to(self.total.dtype)
        self.count += scores.numel()

    def compute(self) -> Tensor:
        return self.total / self.count


class DinoTemporalConsistency(SequenceMean):
    """DINO-TCS, identity: mean cosine of the DINOv2 CLS features of consecutive frames."""

    def update(self, dino_features: Tensor) -> None:
        frames = _sequences(dino_features, "dino_features")
        self._accumulate(consecutive_cosines(frames).mean(-1))


class SemanticDiversity(SequenceMean):
    """SDS: mean over all frame pairs of 1 - cosine of CLIP image features."""

    def update(self, image_features: Tensor) -> None:
        frames = _sequences(image_features, "image_features")
        self._accumulate(mean_pairwise_dissimilarity(frames))


class EffectAlignment(SequenceMean):
    """CLIP: mean cosine of each frame's CLIP image feature with the CLIP text feature of its own effect."""

    def update(self, image_features: Tensor, effect_features: Tensor) -> None:
        frames = _sequences(image_features, "image_features")
        effects = _sequences(effect_features, "effect_features")
        self._accumulate((frames * effects).sum(-1).mean(-1))


class CausalConsistency(SequenceMean):
    """CCS: Spearman correlation between frame index and p_f = cos(img_f, effect_f) - cos(img_f, cause)."""

    def update(self, image_features: Tensor, effect_features: Tensor, cause_features: Tensor) -> None:
        frames = _sequences(image_features, "image_features")
        effects = _sequences(effect_features, "effect_features")
        cause = _causes(cause_features, frames.shape[0])
        self._accumulate(frame_order_correlation(causal_progress(frames, effects, cause)))


class CausalProgression(SequenceMean):
    """CPS: p_last - p_first, how much closer to its effect than to the cause the sequence ends up."""

    def update(self, image_features: Tensor, effect_features: Tensor, cause_features: Tensor) -> None:
        frames = _sequences(image_features, "image_features")
        effects = _sequences(effect_features, "effect_features")
        cause = _causes(cause_features, frames.shape[0])
        progress = causal_progress(frames, effects, cause)
        self._accumulate(progress[:, -1] - progress[:, 0])


class EventTransitionCoherence(SequenceMean):
    """ETC: consecutive CLIP image cosines scored by band (transition_scores), averaged over transitions."""

    def __init__(self, low: float = ETC_LOW, high: float = ETC_HIGH, **kwargs):
        if not 0 < low <= high:
            raise ValueError(f"ETC band needs 0 < low <= high, got [{low}, {high}]")
        super().__init__(**kwargs)
        self.low, self.high = low, high

    def update(self, image_features: Tensor) -> None:
        frames = _sequences(image_features, "image_features")
        self._accumulate(transition_scores(consecutive_cosines(frames), self.low, self.high).mean(-1))


class PerSequenceScores(Metric):
    """Each sequence's ``num_scores`` scores beside its index (cat states): after a DDP sync every process
    holds those of all processes, so one of them can write the per-sequence table. ``compute``: (index [N],
    scores [N, num_scores]) in index order.

    Both states are flat float vectors: a process that scored nothing syncs an empty float vector, which
    torchmetrics can gather beside the others' only if it has their dtype and number of dimensions.
    """

    is_differentiable = False
    full_state_update = False

    def __init__(self, num_scores: int, **kwargs):
        super().__init__(**kwargs)
        self.num_scores = num_scores
        self.add_state("index", [], dist_reduce_fx="cat")
        self.add_state("scores", [], dist_reduce_fx="cat")

    def update(self, index: Tensor, scores: Tensor) -> None:
        """index [B], scores [B, num_scores]."""
        self.index.append(index.float())
        self.scores.append(scores.float().reshape(-1))

    def compute(self) -> tuple[Tensor, Tensor]:
        index, scores = dim_zero_cat(self.index).reshape(-1), dim_zero_cat(self.scores)
        order = torch.argsort(index)
        return index[order].long(), scores.reshape(-1, self.num_scores)[order]


def sequence_metrics(**kwargs) -> MetricCollection:
    """All six under their report names; update with keyword features (``sequence_features`` output).

    Compute groups are off: the metrics share state names, not values.
    """
    return MetricCollection(
        {
            "dino_tcs": DinoTemporalConsistency(**kwargs),
            "sds": SemanticDiversity(**kwargs),
            "clip": EffectAlignment(**kwargs),
            "ccs": CausalConsistency(**kwargs),
            "cps": CausalProgression(**kwargs),
            "etc": EventTransitionCoherence(**kwargs),
        },
        compute_groups=False,
    )

"""Effect-bank search, temporal ordering and frame schedule (DESIGN 6.2, 6.2b, 6.3).

All of it works in the adapter's own encoder space (e.g. MiniLM); only spans and gates reach the UNet.
In both modes ``top_k`` is K, the number of distinct effects retrieved for a cause: ``topk`` keeps the K
nearest e_hat, ``path`` walks K steps from c to e_hat. Frames then show them in order, K < T holding an
effect over neighbouring frames and K > T sampling the list, so top_k acts alike in generation and in
counterfactual coverage (which scores the same K effects).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

RETRIEVAL_MODES = ("topk", "path")
DEFAULT_RETRIEVAL = "path"  # keeps more coverage of free-form causes (DESIGN 6.2b, docs/metrics.md)
DEFAULT_TOP_K = 8


@dataclass
class RetrievedSequence:
    """Effects for the T frames of one sequence, in temporal order."""

    bank_indices: list[int]  # per frame, index into the effect bank
    scores: list[float]  # per frame, cos(query, effect)
    positions: list[float]  # per frame, t_k along the causal direction
    progress: list[float]  # per frame, progression weight a_f = (f+1)/T


def top_k_effects(query: torch.Tensor, bank: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k bank rows by cosine (both unit norm): (scores [B,k], indices [B,k])."""
    return torch.topk(query @ bank.T, k, dim=-1)


def causal_positions(cause: torch.Tensor, effect_pred: torch.Tensor, effects: torch.Tensor) -> torch.Tensor:
    """t_k = <e_k - c, e_hat - c> / |e_hat - c|^2: each effect's position along the causal direction."""
    direction = effect_pred - cause
    return (effects - cause) @ direction / direction.dot(direction).clamp(min=1e-12)


def frame_progress(num_frames: int) -> list[float]:
    """a_f = (f+1)/T."""
    return [(f + 1) / num_frames for f in range(num_frames)]


def frame_slots(num_effects: int, num_frames: int) -> list[int]:
    """Frame f shows ordered effect floor(f*K/T): K < T holds effects, K > T samples them evenly."""
    return [f * num_effects // num_frames for f in range(num_frames)]


def retrieve_effects(
    cause: torch.Tensor,
    effect_pred: torch.Tensor,
    bank: torch.Tensor,
    top_k: int = DEFAULT_TOP_K,
    mode: str = DEFAULT_RETRIEVAL,
) -> tuple[list[int], list[float], list[float]]:
    """K = top_k distinct effects in temporal order: (bank indices, scores, t_k). cause, effect_pred [d]
    unit norm; bank [N,d] unit norm.

    mode "topk": the K effects nearest e_hat, sorted by t_k.
    mode "path": step k of K queries q_k = normalize((1-a_k) c + a_k e_hat), a_k = (k+1)/K, and takes its
    best effect not taken by an earlier step; the walk gives the order.
    """
    if mode == "topk":
        scores, indices = top_k_effects(effect_pred[None], bank, top_k)
        positions = causal_positions(cause, effect_pred, bank[indices[0]])
        order = torch.argsort(positions, stable=True).tolist()
        return (
            [indices[0, i].item() for i in order],
            [scores[0, i].item() for i in order],
            [positions[i].item() for i in order],
        )
    if mode == "path":
        weights = torch.tensor(frame_progress(top_k), dtype=cause.dtype, device=cause.device)[:, None]
        queries = F.normalize((1 - weights) * cause + weights * effect_pred, dim=-1)
        # K candidates per step always hold one not taken by the (at most K-1) earlier steps.
        candidates = torch.topk(queries @ bank.T, min(top_k, bank.shape[0]), dim=-1)
        chosen, chosen_scores = [], []
        for step in range(top_k):
            scores, indices = candidates.values[step].tolist(), candidates.indices[step].tolist()
            pick = next(i for i, index in enumerate(indices) if index not in chosen)
            chosen.append(indices[pick])
            chosen_scores.append(scores[pick])
        positions = causal_positions(cause, effect_pred, bank[chosen])
        return chosen, chosen_scores, positions.tolist()
    raise ValueError(f"unknown retrieval mode {mode!r}; use one of {', '.join(RETRIEVAL_MODES)}")


def retrieve_sequence(
    cause: torch.Tensor,
    effect_pred: torch.Tensor,
    bank: torch.Tensor,
    num_frames: int,
    top_k: int = DEFAULT_TOP_K,
    mode: str = DEFAULT_RETRIEVAL,
) -> RetrievedSequence:
    """Effects for each of the T = num_frames frames of one cause: the ``retrieve_effects`` list spread
    over the frames (frame f shows effect floor(f*K/T)), with progression weights a_f = (f+1)/T."""
    indices, scores, positions = retrieve_effects(cause, effect_pred, bank, top_k, mode)
    slots = frame_slots(top_k, num_frames)
    return RetrievedSequence(
        bank_indices=[indices[s] for s in slots],
        scores=[scores[s] for s in slots],
        positions=[positions[s] for s in slots],
        progress=frame_progress(num_frames),
    )

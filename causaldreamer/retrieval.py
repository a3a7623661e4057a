"""Effect-bank search, temporal ordering and frame schedule (DESIGN 6.2, 6.2b, 6.3).

All of it works in the adapter's own encoder space (e.g. MiniLM); only spans and gates reach the UNet.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


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


def retrieve_sequence(
    cause: torch.Tensor,
    effect_pred: torch.Tensor,
    bank: torch.Tensor,
    num_frames: int,
    top_k: int,
    mode: str = "topk",
) -> RetrievedSequence:
    """Effects for each frame of one cause. cause, effect_pred [d] unit norm; bank [N,d] unit norm.

    mode "topk": the top_k effects nearest e_hat, sorted by t_k and spread over the frames.
    mode "path": frame f queries q_f = normalize((1-a_f) c + a_f e_hat) and takes the best unused effect.
    """
    progress = frame_progress(num_frames)
    if mode == "topk":
        scores, indices = top_k_effects(effect_pred[None], bank, top_k)
        positions = causal_positions(cause, effect_pred, bank[indices[0]])
        order = torch.argsort(positions, stable=True)
        slots = frame_slots(top_k, num_frames)
        picked = [order[s].item() for s in slots]
        return RetrievedSequence(
            bank_indices=[indices[0, i].item() for i in picked],
            scores=[scores[0, i].item() for i in picked],
            positions=[positions[i].item() for i in picked],
            progress=progress,
        )
    if mode == "path":
        weights = torch.tensor(progress, dtype=cause.dtype, device=cause.device)[:, None]
        queries = F.normalize((1 - weights) * cause + weights * effect_pred, dim=-1)
        sims = queries @ bank.T
        used: set[int] = set()
        chosen, chosen_scores = [], []
        # Each frame takes its best effect not yet used by an earlier frame (at most T picks).
        candidates = torch.topk(sims, min(num_frames, bank.shape[0]), dim=-1)
        for f in range(num_frames):
            scores, indices = candidates.values[f].tolist(), candidates.indices[f].tolist()
            pick = next(i for i, index in enumerate(indices) if index not in used)
            used.add(indices[pick])
            chosen.append(indices[pick])
            chosen_scores.append(scores[pick])
        positions = causal_positions(cause, effect_pred, bank[chosen])
        return RetrievedSequence(chosen, chosen_scores, positions.tolist(), progress)
    raise ValueError(f"unknown retrieval mode {mode!r}; use 'topk' or 'path'")

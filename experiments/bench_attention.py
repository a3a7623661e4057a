"""Cost of the causal intervention in the UNet: forward time with the intervention processors on every
cross-attention layer vs diffusers' stock ``AttnProcessor2_0``, same weights and inputs. Target: <= 5%.

Three measurements, each alternating stock and intervention runs. Times are the process's CPU time on
one thread by default: on a shared machine, wall time mostly measures the other processes.
1. the tiny random-weight UNet (the one the tests use), T frames under guidance (batch 2T);
2. one full-size SD 1.5 cross-attention layer (320 channels, 8 heads, 77 text tokens) at the batch and
   resolution of a real run (2 x 8 frames, 64x64 latents = 4096 queries);
3. a full-size SD 1.5 UNet built from its config with random weights (860M parameters), by default at
   2 x 1 frames and 16x16 latents: at 2 x 8 frames and 64x64 one forward takes minutes on a 2-core CPU.
The intervention adds O(B*H*77*Dh) work per layer (scaled keys, a [B,H,1,77] bias) and keeps SDPA's
fused kernel, so what it costs is mostly per-call overhead, largest relative to small UNets.

    .venv/bin/python experiments/bench_attention.py [--sd-frames 1 --sd-latent 16 --sd-reps 8 --threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from causaldreamer.diffusion.processor import (
    CausalInterventionAttnProcessor,
    CrossAttentionIntervention,
    SequenceAttention,
    install_causal_processors,
)
from causaldreamer.diffusion.sd15_random import SD15_UNET
from causaldreamer.intervention import SPAN_CAUSE, SPAN_EFFECT
from causaldreamer.methods.tiny import tiny_unet

HEADS, TEXT_TOKENS = 8, 77


def random_intervention(frames: int, num_keys: int = TEXT_TOKENS) -> CrossAttentionIntervention:
    """Realistic spans (cause tokens 1-6, effect tokens 9-14) and non-neutral gates and bias."""
    generator = torch.Generator().manual_seed(0)
    span_ids = torch.zeros(frames, num_keys, dtype=torch.long)
    span_ids[:, 1:7], span_ids[:, 9:15] = SPAN_CAUSE, SPAN_EFFECT
    return CrossAttentionIntervention(
        span_ids=span_ids,
        q_gate=1 + 0.5 * torch.rand(frames, HEADS, generator=generator),
        k_gate=1 + 0.5 * torch.rand(frames, HEADS, 2, generator=generator),
        bias=torch.randn(frames, HEADS, 2, generator=generator),
        progress=torch.arange(1, frames + 1) / frames,
        lam=0.7,
    )


def alternate(run_stock, run_causal, reps: int) -> tuple[list[float], list[float]]:
    """CPU seconds of each run, after one warm-up of each, alternating so that both see the same conditions."""
    run_stock()
    run_causal()
    stock, causal = [], []
    for _ in range(reps):
        for run, times in ((run_stock, stock), (run_causal, causal)):
            start = time.process_time()
            run()
            times.append(time.process_time() - start)
    return stock, causal


def report(name: str, stock: list[float], causal: list[float]) -> None:
    parts = []
    for label, pick in (("median", statistics.median), ("best", min)):
        a, b = pick(stock), pick(causal)
        parts.append(
            f"{label}: stock {a * 1e3:.1f} ms, intervention {b * 1e3:.1f} ms, overhead {b / a - 1:+.1%}"
        )
    print(f"{name}\n  " + "\n  ".join(parts))


@torch.no_grad()
def bench_unet(name: str, unet: UNet2DConditionModel, frames: int, latent: int, reps: int) -> None:
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2 * frames, 4, latent, latent, generator=generator)
    text = torch.randn(2 * frames, TEXT_TOKENS, unet.config.cross_attention_dim, generator=generator)
    timestep = torch.tensor(500)
    stock = unet.attn_processors
    install_causal_processors(unet, HEADS)
    causal = unet.attn_processors
    sequence = {"sequence": SequenceAttention(frames, random_intervention(frames))}

    def forward(processors, kwargs=None):
        unet.set_attn_processor(dict(processors))  # diffusers empties the dict it is given
        return unet(sample, timestep, encoder_hidden_states=text, cross_attention_kwargs=kwargs)

    stock_s, causal_s = alternate(lambda: forward(stock), lambda: forward(causal, sequence), reps)
    report(f"{name}, batch 2x{frames}, {latent}x{latent} latents, {reps} reps", stock_s, causal_s)


@torch.no_grad()
def bench_cross_attention_layer(frames: int, latent: int, reps: int) -> None:
    torch.manual_seed(0)
    attn = Attention(query_dim=320, cross_attention_dim=768, heads=HEADS, dim_head=40).eval()
    hidden = torch.randn(2 * frames, latent * latent, 320)
    text = torch.randn(2 * frames, TEXT_TOKENS, 768)
    sequence = {"sequence": SequenceAttention(frames, random_intervention(frames))}

    def forward(processor, kwargs):
        attn.set_processor(processor)
        return attn(hidden, encoder_hidden_states=text, **kwargs)

    stock_s, causal_s = alternate(
        lambda: forward(AttnProcessor2_0(), {}),
        lambda: forward(CausalInterventionAttnProcessor(), sequence),
        reps,
    )
    report(
        f"SD 1.5 cross-attention layer, batch 2x{frames}, {latent}x{latent} latents, {reps} reps",
        stock_s,
        causal_s,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--frames", type=int, default=8, help="frames (batch 2x) of the tiny UNet and the layer"
    )
    parser.add_argument("--tiny-reps", type=int, default=30, help="0 skips the tiny UNet")
    parser.add_argument("--layer-reps", type=int, default=8, help="0 skips the single layer")
    parser.add_argument(
        "--sd-frames", type=int, default=1, help="2x8 frames at 64x64: minutes per forward on a CPU"
    )
    parser.add_argument("--sd-latent", type=int, default=16)
    parser.add_argument("--sd-reps", type=int, default=8, help="0 skips the SD 1.5 UNet")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s), CPU time per forward")
    if args.tiny_reps:
        bench_unet("tiny UNet", tiny_unet(seed=0).eval(), args.frames, 16, args.tiny_reps)
    if args.layer_reps:
        bench_cross_attention_layer(args.frames, 64, args.layer_reps)
    if args.sd_reps:
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**SD15_UNET).eval()
        bench_unet("SD 1.5 UNet (random weights)", unet, args.sd_frames, args.sd_latent, args.sd_reps)


if __name__ == "__main__":
    main()

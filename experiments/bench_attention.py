"""Cost of the causal intervention in the UNet: forward time with the intervention processors on every
cross-attention layer vs diffusers' stock ``AttnProcessor2_0``, same weights and inputs. Target: <= 5%.

Three measurements, each alternating stock and intervention runs so that load on the machine hits both
alike, reporting medians:
1. the tiny random-weight UNet (the one the tests use), T frames under guidance (batch 2T);
2. a full-size SD 1.5 UNet built from its config with random weights (860M parameters);
3. one full-size SD 1.5 cross-attention layer (320 channels, 8 heads, 77 text tokens) at the batch and
   resolution of a real run (2 x 8 frames, 64x64 latents = 4096 queries), where the intervention's
   extra work (scaled keys, a [B,H,1,77] bias) is largest relative to the layer.

    .venv/bin/python experiments/bench_attention.py [--sd-frames 1 --sd-latent 32 --sd-reps 2]
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
    SequenceAttentionState,
    install_causal_processors,
)
from causaldreamer.intervention import SPAN_CAUSE, SPAN_EFFECT
from causaldreamer.methods.tiny import tiny_unet

HEADS, TEXT_TOKENS = 8, 77
SD15_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}


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


def alternate(run_stock, run_causal, reps: int) -> tuple[float, float]:
    """Median seconds of each, after one warm-up run of each, alternating to share the machine's load."""
    run_stock()
    run_causal()
    stock, causal = [], []
    for _ in range(reps):
        for run, times in ((run_stock, stock), (run_causal, causal)):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    return statistics.median(stock), statistics.median(causal)


def report(name: str, stock: float, causal: float) -> None:
    print(
        f"{name}: stock {stock * 1e3:.1f} ms, intervention {causal * 1e3:.1f} ms, overhead {causal / stock - 1:+.1%}"
    )


@torch.no_grad()
def bench_unet(name: str, unet: UNet2DConditionModel, frames: int, latent: int, reps: int) -> None:
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2 * frames, 4, latent, latent, generator=generator)
    text = torch.randn(2 * frames, TEXT_TOKENS, unet.config.cross_attention_dim, generator=generator)
    timestep = torch.tensor(500)
    stock = unet.attn_processors
    state = install_causal_processors(unet, HEADS)
    state.set_sequence(frames, random_intervention(frames))
    causal = unet.attn_processors

    def forward(processors):
        unet.set_attn_processor(dict(processors))  # diffusers empties the dict it is given
        return unet(sample, timestep, encoder_hidden_states=text)

    stock_s, causal_s = alternate(lambda: forward(stock), lambda: forward(causal), reps)
    report(f"{name}, batch 2x{frames}, {latent}x{latent} latents, {reps} reps", stock_s, causal_s)


@torch.no_grad()
def bench_cross_attention_layer(frames: int, latent: int, reps: int) -> None:
    torch.manual_seed(0)
    attn = Attention(query_dim=320, cross_attention_dim=768, heads=HEADS, dim_head=40).eval()
    hidden = torch.randn(2 * frames, latent * latent, 320)
    text = torch.randn(2 * frames, TEXT_TOKENS, 768)
    state = SequenceAttentionState()
    state.set_sequence(frames, random_intervention(frames))
    stock, causal = AttnProcessor2_0(), CausalInterventionAttnProcessor(state)

    def forward(processor):
        attn.set_processor(processor)
        return attn(hidden, encoder_hidden_states=text)

    stock_s, causal_s = alternate(lambda: forward(stock), lambda: forward(causal), reps)
    report(f"SD 1.5 cross-attention layer, batch 2x{frames}, {latent}x{latent} latents", stock_s, causal_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--frames", type=int, default=8, help="frames (batch 2x) for the tiny UNet and the layer"
    )
    parser.add_argument("--tiny-reps", type=int, default=20)
    parser.add_argument("--layer-reps", type=int, default=5)
    parser.add_argument(
        "--sd-frames", type=int, default=1, help="2x8 at 64 is a real run; ~6 min/forward here"
    )
    parser.add_argument("--sd-latent", type=int, default=32)
    parser.add_argument("--sd-reps", type=int, default=2)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    bench_unet("tiny UNet", tiny_unet(seed=0).eval(), args.frames, 16, args.tiny_reps)
    bench_cross_attention_layer(args.frames, 64, args.layer_reps)
    if args.sd_reps > 0:
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**SD15_UNET).eval()
        bench_unet("SD 1.5 UNet (random weights)", unet, args.sd_frames, args.sd_latent, args.sd_reps)


if __name__ == "__main__":
    main()

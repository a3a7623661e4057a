"""Seconds per 8-frame sequence and peak memory of generation (DESIGN 6.4), on Stable Diffusion 1.5's
real architecture with random weights: all frames in one batched pipeline call against one call per
frame (the paper's loop), each with the causal processors and with diffusers' stock attention.

Same prompts, initial latent, DDIM steps and CFG in every row; after one warm-up of each call shape,
causal and stock runs alternate --reps times and the fastest of each counts. Peak memory is the
process's: CUDA allocations on a GPU, resident memory on a CPU (Linux's high-water mark, reset before
each run), with what the run added over the loaded models.
A CPU run is sized down (64x64, 1 step: SD 1.5 at 512x512 and 50 steps takes hours on 2 cores), so
its calls are bound by reading the weights, which favours batching more than a full-size run does.

    .venv/bin/python experiments/bench_generation.py                      # CPU, 64x64, 1 step
    .venv/bin/python experiments/bench_generation.py --device cuda --fp16 --resolution 512 --steps 50
    .venv/bin/python experiments/bench_generation.py --model tiny --resolution 32   # the tests' pipeline
"""

from __future__ import annotations

import argparse
import ctypes
import re
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from causaldreamer.adapter import CausalAdapter
from causaldreamer.bank import EffectBank
from causaldreamer.diffusion.adapter_folder import load_adapter_folder
from causaldreamer.diffusion.pipeline import CausalSequenceGenerator
from causaldreamer.diffusion.processor import SequenceAttention
from causaldreamer.diffusion.sd15_random import build_sd15_random_pipeline
from causaldreamer.diffusion.settings import GenerationSettings
from causaldreamer.diffusion.tiny import build_tiny_pipeline
from causaldreamer.encoders import MiniLMEncoder

# Short texts: the stand-in tokenizer spells words out, and prompts must fit SD's 77 tokens.
CAUSE = "a glass tips over"
EFFECTS = [
    "it wobbles",
    "water spills",
    "the glass falls",
    "water spreads",
    "glass shatters",
    "shards scatter",
    "the floor is wet",
    "a towel comes",
]


class PeakMemory:
    """The process's peak memory in MiB while the block runs, and its rise over the start."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap back to the OS, so the start is low
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.start = self._status("VmRSS")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak = self._status("VmHWM")
        self.peak_mib, self.added_mib = self.peak / 2**20, (self.peak - self.start) / 2**20

    @staticmethod
    def _status(field: str) -> int:
        kib = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1)
        return int(kib) * 1024


def build_generator(args) -> CausalSequenceGenerator:
    """An untrained adapter (its outputs' values do not change the cost) over a bank of EFFECTS."""
    device = torch.device(args.device)
    dtype = torch.float16 if args.fp16 else torch.float32
    if args.model == "sd15":
        pipe = build_sd15_random_pipeline(device=device, dtype=dtype)
    else:
        pipe = build_tiny_pipeline().to(device)
        pipe = pipe.to(dtype=dtype) if args.fp16 else pipe
    pipe.set_progress_bar_config(disable=True)
    encoder = MiniLMEncoder()
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        CausalAdapter().save_pretrained(folder)
        EffectBank(EFFECTS, encoder.encode(EFFECTS), encoder.identity).save(folder)
        adapter_folder = load_adapter_folder(folder)
    settings = GenerationSettings(
        num_frames=args.frames,
        top_k=args.frames,
        num_inference_steps=args.steps,
        height=args.resolution,
        width=args.resolution,
    )
    return CausalSequenceGenerator(pipe, adapter_folder, encoder, settings)


def timed(run, device: torch.device) -> dict:
    """Wall and CPU seconds of one ``run`` and its peak memory."""
    with PeakMemory(device) as memory:
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"wall": wall, "cpu": cpu, "peak": memory.peak_mib, "added": memory.added_mib}


def best(a: dict | None, b: dict) -> dict:
    """Fastest times and highest memory of two runs: on a shared machine noise only ever adds time."""
    if a is None:
        return b
    return {
        "wall": min(a["wall"], b["wall"]),
        "cpu": min(a["cpu"], b["cpu"]),
        **{k: max(a[k], b[k]) for k in ("peak", "added")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("sd15", "tiny"), default="sd15")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--resolution", type=int, default=64, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=1, help="DDIM steps")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    generator = build_generator(args)
    pipe, unet = generator.pipe, generator.pipe.unet
    plan = generator.plan(CAUSE)
    rows, latents = generator.intervention(plan), generator.initial_latents(seed=0)
    processors = {
        "causal": unet.attn_processors,
        "stock": {name: AttnProcessor2_0() for name in unet.attn_processors},
    }

    def call(prompts: list[str], first: int, sequence: SequenceAttention | None):
        """One pipeline call exactly as ``CausalSequenceGenerator.render`` makes it, for frames from ``first``."""
        return pipe(
            prompt=prompts,
            height=generator.settings.height,
            width=generator.settings.width,
            num_inference_steps=generator.settings.num_inference_steps,
            guidance_scale=generator.settings.guidance_scale,
            latents=latents[first : first + len(prompts)],
            generator=torch.Generator().manual_seed(0),
            output_type="pil",
            cross_attention_kwargs=None if sequence is None else {"sequence": sequence},
        )

    def batched(causal: bool):
        call(plan.prompts, 0, generator.attention(plan) if causal else None)

    def sequential(causal: bool):
        for f, prompt in enumerate(plan.prompts):
            call([prompt], f, SequenceAttention(1, rows.frame(f)) if causal else None)

    unet.set_attn_processor(dict(processors["causal"]))  # diffusers empties the dict it is given
    call(plan.prompts, 0, generator.attention(plan))  # warm-up of both call shapes
    call(plan.prompts[:1], 0, SequenceAttention(1, rows.frame(0)))
    results = {}
    for calls, run in (("batched", batched), ("sequential", sequential)):
        for _ in range(args.reps):
            for attention in ("causal", "stock"):  # alternating, so that both see the same machine
                unet.set_attn_processor(dict(processors[attention]))
                key = calls, attention
                results[key] = best(results.get(key), timed(partial(run, attention == "causal"), device))

    params = sum(p.numel() for p in unet.parameters()) / 1e6
    model = "SD 1.5 architecture" if args.model == "sd15" else "tiny pipeline"
    steps = f"{args.steps} DDIM step{'s' * (args.steps != 1)}"
    print(
        f"torch {torch.__version__}, {device}, {unet.dtype}, {torch.get_num_threads()} CPU thread(s); "
        f"{model}, random weights ({params:.1f}M-parameter UNet); {args.frames} frames, "
        f"{generator.settings.width}x{generator.settings.height}, {steps}, CFG {generator.settings.guidance_scale:g}, best of {args.reps}"
    )
    print("| calls | attention | s / sequence | CPU s / sequence | peak MiB | added MiB |")
    print("|---|---|---|---|---|---|")
    for (calls, attention), r in results.items():
        label = "1 batched" if calls == "batched" else f"{args.frames} sequential"
        print(
            f"| {label} | {attention} | {r['wall']:.2f} | {r['cpu']:.2f} | {r['peak']:.0f} | {r['added']:.0f} |"
        )
    ratio = {a: results["sequential", a]["wall"] / results["batched", a]["wall"] for a in ("causal", "stock")}
    overhead = {
        c: results[c, "causal"]["wall"] / results[c, "stock"]["wall"] - 1 for c in ("batched", "sequential")
    }
    print(
        f"sequential / batched: causal {ratio['causal']:.2f}x, stock {ratio['stock']:.2f}x; "
        f"causal vs stock: batched {overhead['batched']:+.1%}, sequential {overhead['sequential']:+.1%}"
    )


if __name__ == "__main__":
    main()

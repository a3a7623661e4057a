"""All T frames of a sequence in ONE batched pipeline call (DESIGN 6.4) vs one pipeline call per frame
(the paper's inference loop), same prompts, intervention, initial latent and steps.

The sequential loop repeats per call what a batched call does once (scheduler setup, Python and
kernel-launch overhead per layer and step, VAE and text-encoder calls at batch 1), so batching wins
most where those dominate (small models, GPUs); on a CPU with a large UNet both are compute bound.

    .venv/bin/python experiments/bench_batched_frames.py [--frames 8 --steps 10 --reps 3 --threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from causaldreamer.adapter import CausalAdapter
from causaldreamer.bank import EffectBank
from causaldreamer.diffusion.adapter_folder import load_adapter_folder
from causaldreamer.diffusion.pipeline import CausalSequenceGenerator, SequencePlan
from causaldreamer.diffusion.tiny import build_tiny_pipeline
from causaldreamer.encoders import MiniLMEncoder

CAUSE = "a glass tipping over on a table"
EFFECTS = [
    "the glass wobbles",
    "water spills over the edge",
    "the glass falls",
    "water spreads across the table",
    "the glass shatters",
    "shards scatter on the floor",
    "the floor is wet",
    "someone fetches a towel",
]


def render_frame_by_frame(generator: CausalSequenceGenerator, plan: SequencePlan, seed: int) -> list:
    """One pipeline call per frame, each with that frame's prompt, spans and progression weight."""
    generator.activate()
    rows = generator.intervention(plan)
    latent = generator.initial_latents(seed)[:1]
    frames = []
    for f in range(generator.num_frames):
        one = slice(f, f + 1)
        row = replace(
            rows,
            span_ids=rows.span_ids[one],
            q_gate=rows.q_gate[one],
            k_gate=rows.k_gate[one],
            bias=rows.bias[one],
            progress=rows.progress[one],
        )
        generator.state.set_sequence(1, row)
        try:
            output = generator.pipe(
                prompt=plan.prompts[f],
                height=generator.height,
                width=generator.width,
                num_inference_steps=generator.num_inference_steps,
                guidance_scale=generator.guidance_scale,
                latents=latent,
                output_type="pil",
            )
        finally:
            generator.state.clear()
        frames.extend(output.images)
    return frames


def median_cpu_seconds(run, reps: int) -> float:
    """CPU time, not wall time: on a shared machine wall time mostly measures the other processes."""
    run()  # warm-up
    times = []
    for _ in range(reps):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    encoder = MiniLMEncoder()
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        CausalAdapter().save_pretrained(folder)
        EffectBank(EFFECTS, encoder.encode(EFFECTS), encoder.identity).save(folder)
        adapter_folder = load_adapter_folder(Path(folder))
    pipe = build_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    generator = CausalSequenceGenerator(
        pipe,
        adapter_folder,
        encoder,
        num_frames=args.frames,
        top_k=args.frames,
        num_inference_steps=args.steps,
    )
    plan = generator.plan(CAUSE)
    batched = median_cpu_seconds(lambda: generator.render(plan, seed=0), args.reps)
    sequential = median_cpu_seconds(lambda: render_frame_by_frame(generator, plan, seed=0), args.reps)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s), CPU time; "
        f"tiny pipeline, {args.steps} DDIM steps, CFG"
    )
    print(
        f"{args.frames} frames: batched {batched:.2f} s, sequential {sequential:.2f} s, "
        f"sequential / batched = {sequential / batched:.2f}x"
    )


if __name__ == "__main__":
    main()

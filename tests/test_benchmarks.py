"""The benchmarks in experiments/ run and print their numbers (smallest settings; timings are not checked)."""

from __future__ import annotations

import re

from conftest import REPO, run_python


def run_benchmark(script: str, args: list[str], env: dict[str, str]) -> str:
    result = run_python([str(REPO / "experiments" / script), *args], env, REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_bench_train_prints_both_loops_their_ratio_and_lightnings_floor(cli_env):
    out = run_benchmark(
        "bench_train.py", ["--epochs", "1", "--paper-steps", "1", "--limit-train", "256"], cli_env
    )
    assert "steps_per_epoch=8" in out
    ours = float(re.search(r"ours \(cached embeddings\): ([\d.]+) s/epoch", out).group(1))
    paper = float(re.search(r"paper \(re-encode every batch\): ([\d.]+) s/epoch", out).group(1))
    ratio = float(re.search(r"speed-up: ([\d.]+)x", out).group(1))
    assert ours > 0 and paper > 0 and abs(ratio - paper / ours) < 0.1 * ratio + 0.1
    assert re.search(r"Lightning's loop alone .*: [\d.]+ s/epoch, [\d.]+ ms/step", out)
    assert re.search(r"arithmetic of one step: \d+ MFLOP .* [\d.]+ ms/step, \d+ s for 200 epochs", out)
    parts = dict(re.findall(r"\n  (.+): ([\d.]+) ms/step", out))
    assert set(parts) == {
        "adapter forward + backward",
        "bank softmax forward + backward",
        "fused AdamW step",
        "gradient clipping",
        "all losses, clipping and AdamW",
    }
    assert all(float(ms) > 0 for ms in parts.values())


def test_bench_attention_and_batched_frames_print_their_comparisons(cli_env):
    out = run_benchmark(
        "bench_attention.py",
        ["--frames", "2", "--tiny-reps", "2", "--layer-reps", "0", "--sd-reps", "0"],
        cli_env,
    )
    assert re.search(
        r"tiny UNet.*\n  median: stock [\d.]+ ms, intervention [\d.]+ ms, overhead [+-][\d.]+%", out
    )
    out = run_benchmark("bench_batched_frames.py", ["--frames", "2", "--steps", "2", "--reps", "1"], cli_env)
    assert re.search(r"2 frames: batched [\d.]+ s, sequential [\d.]+ s, sequential / batched = [\d.]+x", out)

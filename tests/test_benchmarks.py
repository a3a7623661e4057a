"""The benchmarks in experiments/ run and print their numbers (smallest settings; timings are not checked)."""

from __future__ import annotations

import re

from conftest import REPO, run_python, write_adapter_folder


def run_benchmark(script: str, args: list[str], env: dict[str, str]) -> str:
    result = run_python([str(REPO / "experiments" / script), *args], env, REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_bench_train_prints_both_loops_their_ratio_and_lightnings_floor(cli_env):
    out = run_benchmark(
        "bench_train.py",
        ["--epochs", "1", "--paper-steps", "1", "--limit-train", "256", "--part-steps", "16"],
        cli_env,
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
        "batch gathering (the DataLoader's batches)",
        "adapter forward + backward",
        "bank softmax forward + backward",
        "gate loss forward + backward",
        "gate loss forward + backward, through SDPA (before)",
        "fused AdamW step",
        "gradient clipping",
        "gradient clipping, clip_grad_norm_ (before)",
        "all losses, clipping and AdamW",
    }
    assert all(float(ms) > 0 for ms in parts.values())
    floor = re.search(
        r"floor \(arithmetic \+ Lightning's loop\): ([\d.]+) ms/step; ours ([\d.]+) ms/step: ([\d.]+)x", out
    )
    assert floor and abs(float(floor.group(3)) - float(floor.group(2)) / float(floor.group(1))) < 0.02
    assert re.search(
        r"ours \(cached embeddings\): [\d.]+ s/epoch .*; CPU [\d.]+ s/epoch, [\d.]+ ms/step", out
    )


def test_bench_train_times_the_mixed_epoch_beside_causallite10k_alone(cli_env):
    args = ["--epochs", "1", "--paper-steps", "1", "--limit-train", "64", "--ecare-batch-size", "8"]
    args += ["--part-steps", "4"]
    out = run_benchmark("bench_train.py", args, cli_env)
    assert "ecare_batch_size=8 steps_per_epoch=2" in out
    mixed = float(re.search(r"ours \(cached embeddings\): ([\d.]+) s/epoch", out).group(1))
    alone = float(re.search(r"ours, CausalLite10K only: ([\d.]+) s/epoch", out).group(1))
    ratio = float(re.search(r"mixed / CausalLite10K only: ([\d.]+)x", out).group(1))
    assert abs(ratio - mixed / alone) < 0.05 * ratio + 0.01
    assert "(40 rows a step)" in out


def test_bench_attention_prints_its_comparison(cli_env):
    out = run_benchmark(
        "bench_attention.py",
        ["--frames", "2", "--tiny-reps", "2", "--layer-reps", "0", "--sd-reps", "0"],
        cli_env,
    )
    assert re.search(
        r"tiny UNet.*\n  median: stock [\d.]+ ms, intervention [\d.]+ ms, overhead [+-][\d.]+%", out
    )


def test_bench_generation_prints_a_row_per_call_shape_and_attention(cli_env):
    args = [
        "--model",
        "tiny",
        "--resolution",
        "32",
        "--frames",
        "2",
        "--steps",
        "1",
        "--reps",
        "1",
        "--threads",
        "1",
    ]
    out = run_benchmark("bench_generation.py", args, cli_env)
    assert "tiny pipeline, random weights" in out
    assert "2 frames, 32x32, 1 DDIM step, CFG 7.5, best of 1" in out
    rows = re.findall(
        r"\n\| (1 batched|2 sequential) \| (causal|stock) \| ([\d.]+) \| ([\d.]+) \| (\d+) \| (-?\d+) \|", out
    )
    assert {(calls, attention) for calls, attention, *_ in rows} == {
        (calls, attention) for calls in ("1 batched", "2 sequential") for attention in ("causal", "stock")
    }
    assert all(float(wall) > 0 and int(peak) > 0 for _, _, wall, _, peak, _ in rows)
    assert re.search(
        r"sequential / batched: causal [\d.]+x, stock [\d.]+x; causal vs stock: batched [+-]", out
    )


def test_coverage_gap_prints_the_gain_geometry_and_val_bins(cli_env, tmp_path, minilm, data_dir):
    adapter_dir = write_adapter_folder(tmp_path / "adapter", minilm, data_dir, bank_size=200)
    out = run_benchmark("coverage_gap.py", [str(adapter_dir)], cli_env)
    zero_shot = float(re.search(r"zero-shot: coverage ([\d.]+)", out).group(1))
    for mode in ("path", "topk"):
        line = re.search(rf"adapter, {mode}: coverage ([\d.]+), .* gain ([+-][\d.]+) ± ([\d.]+) \(SE\)", out)
        coverage, gain, se = map(float, line.groups())
        assert abs(gain - (coverage - zero_shot)) <= 2e-4 and se > 0
    assert re.search(r"\|D\| [\d.]+, cos\(c, e_hat\) -?[\d.]+; cosine to the reference centroid", out)
    bins = re.findall(r"\n\[([\d.]+), ([\d.]+)\) \| (\d+) \| [+-][\d.]+ ± [\d.]+", out)
    assert sum(int(rows) for *_, rows in bins) <= 1001 and len(bins) >= 3
    # Fit against coverage: the same coverage computed from predictions agrees with section 1's.
    fits = dict(re.findall(r"\n([^|\n]+) \| [\d.]+% \| ([\d.]+)", out))
    path = re.search(r"adapter, path: coverage ([\d.]+)", out).group(1)
    assert fits["zero-shot (e_hat = c)"] == f"{zero_shot:.4f}" and fits["adapter"] == path
    assert {"constant mean residual", "ridge, strength 1"} <= fits.keys()

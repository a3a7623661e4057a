"""CPU threads per workload: each command as a user runs it, with ``cpu_threads=1`` and ``=2`` in turn.

    python experiments/bench_threads.py [--repeats 2]

Prints the wall time of each (median over repeats, runs interleaved so a busy machine hurts both alike)
and the ratio; the defaults of ``cpu_threads`` (conf/train.yaml, causaldreamer/threads.py) follow it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

CAUSES = ["a glass tipping over", "a dog jumping over a log", "ice melting in the sun"]


def workloads(adapter: Path) -> dict[str, list[str]]:
    return {
        "training (3 epochs, full data)": [
            "causaldreamer.train",
            "trainer.max_epochs=3",
            "test=false",
            "logger=csv",
            "export_dir=null",
        ],
        "tiny generation (3 sequences)": [
            "causaldreamer.generate",
            f"causes_file={adapter.parent / 'causes.txt'}",
            f"adapter={adapter}",
            "diffusion=tiny",
        ],
        "tiny baseline evaluation (3 scenarios)": [
            "causaldreamer.evaluate",
            "method=sd15",
            "method.tiny=true",
            "metrics.tiny=true",
            "limit=3",
            "logger=csv",
        ],
    }


def timed(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", *args], cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "causaldreamer.train",
                "+experiment=smoke",
                "logger=csv",
                "export_dir=adapter",
            ],
            cwd=root,
            check=True,
            capture_output=True,
        )
        (root / "causes.txt").write_text("\n".join(CAUSES) + "\n")
        print(f"{'workload':42s} {'1 thread':>10s} {'2 threads':>10s} {'2/1':>6s}")
        for name, command in workloads(root / "adapter").items():
            seconds = {1: [], 2: []}
            for _ in range(args.repeats):
                for threads in (1, 2):
                    seconds[threads].append(timed([*command, f"cpu_threads={threads}"], root))
            one, two = median(seconds[1]), median(seconds[2])
            print(f"{name:42s} {one:9.1f}s {two:9.1f}s {two / one:6.2f}", flush=True)


if __name__ == "__main__":
    main()

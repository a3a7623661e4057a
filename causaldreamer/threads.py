"""torch's CPU threads per workload (``cpu_threads``), chosen by measurement (docs/results.md,
``python experiments/bench_threads.py``).

Training steps and the tiny random-weight models are made of small kernels: on the 2-core machine a
second thread mostly adds synchronisation. So ``train`` sets 1, and ``generate``/``evaluate`` leave it
null: 1 thread when every model has random weights (``diffusion=tiny``, ``method.tiny=true``), else
torch's default (all cores, or OMP_NUM_THREADS, or a launcher's per-worker limit) for real SD 1.5.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

TINY_THREADS = 1


def cpu_threads(cfg: DictConfig) -> int | None:
    """The thread count this run asks for; None leaves torch's default."""
    if cfg.get("cpu_threads") is not None:
        return int(cfg.cpu_threads)
    method = OmegaConf.select(cfg, "method")
    if method is not None and "tiny" in method:  # a baseline: its own models
        return TINY_THREADS if method.tiny else None
    pipeline = str(OmegaConf.select(cfg, "diffusion.pipeline._target_", default=""))
    return TINY_THREADS if pipeline.endswith("build_tiny_pipeline") else None


def configure_threads(cfg: DictConfig) -> None:
    threads = cpu_threads(cfg)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)

"""The per-run record a sweep summary is built from: ``metrics.json`` in each run directory.

It holds the run's final metrics and the command-line overrides that made it, so a summary needs no
config composition and works for every launcher (jobs may run in other processes or on other hosts).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import yaml
from hydra.core.hydra_config import HydraConfig

from causaldreamer.io import atomic_path

METRICS_FILE = "metrics.json"
RUN_RECORD = "run.yaml"  # written by the entry point before anything else: its mtime marks the start
HYDRA_OVERRIDES = Path(".hydra") / "overrides.yaml"


def job_overrides() -> list[str]:
    """The task overrides of the current Hydra job (empty outside a Hydra job, e.g. under the compose API)."""
    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def write_run_metrics(
    output_dir: str | Path, metrics: dict[str, float], overrides: list[str] | None = None
) -> Path:
    """``metrics.json``: the final metrics (non-finite values as null), the overrides (the Hydra job's,
    unless given) and the wall time since the run record was written."""
    output_dir = Path(output_dir)
    record_file = output_dir / RUN_RECORD
    started = record_file.stat().st_mtime if record_file.is_file() else None
    record = {
        "overrides": job_overrides() if overrides is None else overrides,
        "metrics": {k: (float(v) if math.isfinite(float(v)) else None) for k, v in sorted(metrics.items())},
        "wall_s": None if started is None else round(time.time() - started, 1),
    }
    path = output_dir / METRICS_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    return path


def read_run(job_dir: Path) -> dict | None:
    """A job directory's record: its metrics.json, or, for a job that never wrote one (it failed or is
    still running), its overrides from Hydra's ``.hydra/overrides.yaml`` with no metrics. None when the
    folder is not a job directory."""
    metrics_file = job_dir / METRICS_FILE
    if metrics_file.is_file():
        record = json.loads(metrics_file.read_text())
        return {**record, "status": "done"}
    overrides_file = job_dir / HYDRA_OVERRIDES
    if overrides_file.is_file():
        overrides = yaml.safe_load(overrides_file.read_text()) or []
        return {"overrides": overrides, "metrics": {}, "wall_s": None, "status": "no metrics"}
    return None

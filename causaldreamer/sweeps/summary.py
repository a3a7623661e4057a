"""One table and one plot for a whole multirun, built from the ``metrics.json`` of its job directories.

Columns are the overrides that differ between jobs (the swept values) and the metrics; overrides shared
by every job go into the markdown header. ``summary.csv`` holds every metric, ``summary.md`` the ones a
reader compares (retrieval beside its zero-shot baseline, counterfactual coverage, image metrics when
sequences were generated), ``summary.png`` those metrics against the swept value.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import yaml
from filelock import FileLock
from matplotlib.figure import Figure

from causaldreamer.io import atomic_path
from causaldreamer.sweeps.records import read_run

SUMMARY_CSV, SUMMARY_MD, SUMMARY_PNG = "summary.csv", "summary.md", "summary.png"

# The metrics a sweep is read by, in table order; each plot panel pairs a metric with its baseline.
REPORT_METRICS = (
    "val/recall@1",
    "val/recall@5",
    "val/recall@10",
    "val/mrr",
    "val/unseen/recall@10",
    "val/zero_shot/recall@5",
    "test/recall@5",
    "test/mrr",
    "test/zero_shot/recall@5",
    "coverage/mean",
    "coverage/share",
    "coverage/zero_shot/mean",
    "coverage/zero_shot/share",
    "coverage/gain",
    "coverage/gain_se",
    "gen/dino_tcs",
    "gen/sds",
    "gen/clip",
    "gen/ccs",
    "gen/cps",
    "gen/etc",
)
PLOT_PANELS = (
    ("retrieval", ("val/recall@5", "test/recall@5"), ("val/zero_shot/recall@5", "test/zero_shot/recall@5")),
    (
        "counterfactual coverage",
        ("coverage/mean", "coverage/share"),
        ("coverage/zero_shot/mean", "coverage/zero_shot/share"),
    ),
    ("generated sequences", ("gen/dino_tcs", "gen/sds", "gen/clip", "gen/ccs"), ()),
)


def _override_key(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def _parse_value(text: str):
    """An override value as YAML reads it, so that swept numbers sort and plot as numbers."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, int | float | str | bool) or value is None else text


def _job_order(path: Path) -> tuple[float, str]:
    return (int(path.name), "") if path.name.isdigit() else (math.inf, path.name)


def collect_runs(sweep_dir: str | Path) -> tuple[pd.DataFrame, list[str], dict[str, str]]:
    """(table, swept keys, common overrides): one row per job directory, sorted by job number."""
    records = []
    for job_dir in sorted((p for p in Path(sweep_dir).iterdir() if p.is_dir()), key=_job_order):
        record = read_run(job_dir)
        if record is not None:
            records.append((job_dir.name, record))
    overrides = [dict(_override_key(o) for o in record["overrides"]) for _, record in records]
    keys = list(dict.fromkeys(k for job in overrides for k in job))
    swept = [k for k in keys if len({job.get(k) for job in overrides}) > 1]
    common = {k: overrides[0][k] for k in keys if k not in swept and all(k in job for job in overrides)}
    rows = []
    for (name, record), job in zip(records, overrides, strict=True):
        row = {"job": name, "status": record["status"]}
        row.update({k: _parse_value(job[k]) if k in job else None for k in swept})
        row["wall_s"] = record["wall_s"]
        row.update(record["metrics"])
        rows.append(row)
    return pd.DataFrame(rows), swept, common


def markdown_table(table: pd.DataFrame, columns: list[str], metrics: set[str]) -> str:
    """Metrics to 4 decimals, everything else (swept values, times) as written."""

    def cell(column: str, value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        return (
            f"{value:.4f}" if column in metrics else f"{value:g}" if isinstance(value, float) else str(value)
        )

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c, row[c]) for c in columns) + " |" for _, row in table.iterrows()]
    return "\n".join(lines)


def _run_labels(table: pd.DataFrame, swept: list[str]) -> list[str]:
    return [", ".join(str(row[k]) for k in swept) or row["job"] for _, row in table.iterrows()]


def plot_summary(table: pd.DataFrame, swept: list[str], path: Path) -> None:
    """Metric panels against the swept value: lines over a numeric sweep, bars per run otherwise."""
    panels = [
        (title, [m for m in ms if m in table], [b for b in bs if b in table]) for title, ms, bs in PLOT_PANELS
    ]
    panels = [(title, ms, bs) for title, ms, bs in panels if ms and table[ms].notna().any().any()]
    if not panels:
        return
    numeric = len(swept) == 1 and pd.api.types.is_numeric_dtype(table[swept[0]])
    if numeric:
        table = table.sort_values(swept[0])
    x = table[swept[0]].to_numpy() if numeric else list(range(len(table)))
    figure = Figure(figsize=(5.2 * len(panels), 4.8), layout="constrained")
    for axis, (title, metrics, baselines) in zip(
        figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True
    ):
        width = 0.8 / len(metrics)
        for i, metric in enumerate(metrics):
            color = f"C{i}"
            if numeric:
                axis.plot(x, table[metric], marker="o", color=color, label=metric)
            else:
                axis.bar(
                    [p + (i - (len(metrics) - 1) / 2) * width for p in x],
                    table[metric],
                    width,
                    color=color,
                    label=metric,
                )
            baseline = metric.replace("/", "/zero_shot/", 1)
            if baseline in baselines:
                axis.plot(x, table[baseline], linestyle="--", color=color, label=f"{baseline} (no adapter)")
        axis.set_title(title)
        axis.set_xlabel(swept[0] if numeric else " / ".join(swept) or "run")
        if not numeric:
            axis.set_xticks(x, _run_labels(table, swept), rotation=45, ha="right", fontsize=8)
        # Below the axes, where it never covers a bar or a line.
        axis.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.18 if numeric else -0.4))
        axis.grid(alpha=0.3)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def write_summary(sweep_dir: str | Path) -> pd.DataFrame:
    """Write summary.csv, summary.md and summary.png into ``sweep_dir``; returns the table.

    Safe to call from concurrent jobs: a file lock serialises writers and every file is replaced whole.
    Writes nothing while no job has recorded metrics (e.g. a multirun of another entry point).
    """
    sweep_dir = Path(sweep_dir)
    with FileLock(str(sweep_dir / ".summary.lock")):
        table, swept, common = collect_runs(sweep_dir)
        if table.empty or not (table["status"] == "done").any():
            return table
        with atomic_path(sweep_dir / SUMMARY_CSV) as tmp:
            table.to_csv(tmp, index=False)
        metrics = [m for m in REPORT_METRICS if m in table]
        columns = ["job", *swept, *metrics, "wall_s"]
        if (table["status"] != "done").any():
            columns.insert(1, "status")
        header = [f"# Sweep {sweep_dir.name}: {len(table)} runs", ""]
        if common:
            header += ["Common overrides: " + " ".join(f"`{k}={v}`" for k, v in common.items()), ""]
        with atomic_path(sweep_dir / SUMMARY_MD) as tmp:
            tmp.write_text("\n".join([*header, markdown_table(table, columns, set(metrics))]) + "\n")
        plot_summary(table, swept, sweep_dir / SUMMARY_PNG)
    return table

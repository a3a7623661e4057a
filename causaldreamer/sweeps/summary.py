"""One table and one plot for a whole multirun, built from the ``metrics.json`` of its job directories.

Columns are the overrides that differ between jobs (the swept values) and the metrics; overrides shared
by every job go into the markdown header. ``summary.csv`` holds every metric, ``summary.md`` the ones a
reader compares (retrieval beside its zero-shot baseline, counterfactual coverage, image metrics when
sequences were generated), ``summary.png`` those metrics against the swept value, one panel and scale
each. Both state the training budget and mark runs whose image metrics come from random weights
(``diffusion=tiny``, tiny feature extractors), so a smoke run is never mistaken for a result.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import yaml
from filelock import FileLock
from matplotlib.figure import Figure

from causaldreamer.io import atomic_path
from causaldreamer.sweeps.records import RUN_RECORD, read_run

SUMMARY_CSV, SUMMARY_MD, SUMMARY_PNG = "summary.csv", "summary.md", "summary.png"

# The metrics a sweep is read by, in table order; each plot panel pairs a metric with its baseline.
REPORT_METRICS = (
    "val/selection",
    "val/recall@1",
    "val/recall@5",
    "val/recall@10",
    "val/mrr",
    "val/unseen/recall@10",
    "val/zero_shot/recall@5",
    "val/ecare/accuracy",
    "val/ecare/zero_shot/accuracy",
    "val/ecare/recall@5",
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
# The panels of summary.png, each on its own y scale: (metrics, title, y label). A metric's zero-shot
# baseline (``val/zero_shot/recall@5`` beside ``val/recall@5``) shares its panel, dashed.
PLOT_PANELS = (
    (("val/selection",), "selection (what checkpoints and sweeps pick by)", "mean gain over zero-shot"),
    (("val/recall@5", "test/recall@5"), "retrieval", "recall@5 over the effect bank"),
    (("val/ecare/accuracy",), "e-CARE two-choice accuracy (val)", "share of questions right"),
    (("coverage/mean",), "counterfactual coverage: mean", "mean best cosine per reference effect"),
    (("coverage/share",), "counterfactual coverage: share", "share of reference effects covered"),
    (("coverage/gain",), "coverage gain over zero-shot", "gain in coverage mean (± 1 SE)"),
    (("gen/dino_tcs",), "DINO-TCS (identity)", "cos of consecutive frames (DINOv2)"),
    (("gen/sds",), "SDS (semantic diversity)", "1 - cos over frame pairs (CLIP)"),
    (("gen/clip",), "CLIP (effect alignment)", "cos(frame, its effect)"),
    (("gen/ccs",), "CCS (causal consistency)", "Spearman rho, frame vs progress"),
    (("gen/cps",), "CPS (causal progression)", "last minus first frame's progress"),
    (("gen/etc",), "ETC (transition coherence)", "mean transition score"),
)
STANDARD_ERRORS = {"coverage/gain": "coverage/gain_se"}
PANEL_COLUMNS = 4
# What the swept keys mean, for axis labels; other keys are shown as they are.
AXIS_NAMES = {
    "model.lam": "lambda",
    "generation.top_k": "effects retrieved, top_k",
    "generation.retrieval": "retrieval",
    "generation.lam": "lambda at generation",
    "trainer.max_epochs": "epochs",
    "model.lr": "learning rate",
    "model.weight_decay": "weight decay",
    "data.batch_size": "batch size",
}
# Config entries that put random weights into a run (only its image metrics depend on them).
TINY_PIPELINE_TARGET = "causaldreamer.diffusion.tiny.build_tiny_pipeline"


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


def _run_config(job_dir: Path) -> dict:
    """The resolved config the entry point recorded in ``run.yaml`` (empty when it wrote none)."""
    path = job_dir / RUN_RECORD
    return (yaml.safe_load(path.read_text()) or {}).get("config") or {} if path.is_file() else {}


def _config_value(config: dict, dotted: str):
    for key in dotted.split("."):
        config = config.get(key) if isinstance(config, dict) else None
    return config


def random_weight_parts(config, path: str = "") -> list[str]:
    """Dotted paths of the config entries that build a model with random weights: the tiny diffusion
    pipeline, tiny feature extractors (``features: tiny``) and the baselines' ``tiny: true``."""
    if not isinstance(config, dict):
        return []
    if config.get("_target_") == TINY_PIPELINE_TARGET:
        return [path]
    parts = []
    for key, value in config.items():
        child = f"{path}.{key}" if path else key
        if (key == "tiny" and value is True) or (key == "features" and value == "tiny"):
            parts.append(child)
        else:
            parts += random_weight_parts(value, child)
    return parts


def collect_runs(sweep_dir: str | Path) -> tuple[pd.DataFrame, list[str], dict[str, str]]:
    """(table, swept keys, common overrides): one row per job directory, sorted by job number, with the
    run's experiment, budget (epochs, limit_train) and random-weight parts from its recorded config."""
    records = []
    for job_dir in sorted((p for p in Path(sweep_dir).iterdir() if p.is_dir()), key=_job_order):
        record = read_run(job_dir)
        if record is not None:
            records.append((job_dir.name, {**record, "config": _run_config(job_dir)}))
    overrides = [dict(_override_key(o) for o in record["overrides"]) for _, record in records]
    keys = list(dict.fromkeys(k for job in overrides for k in job))
    swept = [k for k in keys if len({job.get(k) for job in overrides}) > 1]
    common = {k: overrides[0][k] for k in keys if k not in swept and all(k in job for job in overrides)}
    rows = []
    for (name, record), job in zip(records, overrides, strict=True):
        row = {"job": name, "status": record["status"]}
        row.update({k: _parse_value(job[k]) if k in job else None for k in swept})
        config = record["config"]
        row["wall_s"] = record["wall_s"]
        row["experiment"] = config.get("experiment_name")
        row["epochs"] = _config_value(config, "trainer.max_epochs")
        row["limit_train"] = _config_value(config, "data.limit_train")
        row["random_weights"] = ", ".join(random_weight_parts(config))
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


def axis_name(key: str) -> str:
    """A swept key as an axis reads it: what it is, then the override that sets it."""
    name = AXIS_NAMES.get(key)
    return f"{name} ({key})" if name else key


def budget(table: pd.DataFrame) -> str:
    """The training budget of the runs, e.g. "20 epochs per run" ("" for runs that did not train)."""
    epochs = sorted({int(e) for e in table["epochs"].dropna()})
    if not epochs:
        return ""
    count = f"{epochs[0]}" if len(epochs) == 1 else f"{epochs[0]} to {epochs[-1]}"
    text = f"{count} epoch{'s' * (epochs != [1])} per run"
    limit = table["limit_train"].iloc[0]
    shared = table["limit_train"].nunique(dropna=False) == 1 and pd.notna(limit)
    return text + (f" on the first {int(limit)} training pairs" if shared else "")


def dry_run_note(table: pd.DataFrame) -> str:
    """What was random in the runs and what that voids ("" when nothing was)."""
    parts = sorted({p for cell in table["random_weights"] if cell for p in cell.split(", ")})
    if not parts:
        return ""
    return f"DRY RUN, random weights ({', '.join(parts)}): the image metrics (gen/*) mean nothing"


def _series_label(metric: str, metrics: list[str]) -> str:
    return metric.split("/")[0] if len(metrics) > 1 else "adapter"


def _draw_panel(axis, table: pd.DataFrame, x, numeric: bool, metrics: list[str]) -> None:
    """Each metric (error bars where it has a standard error) and, dashed, its zero-shot baseline: a
    line over a numeric sweep, points side by side per run otherwise (bars from 0 would hide the small
    differences runs have)."""
    shift = 0.12
    for i, metric in enumerate(metrics):
        color, label = f"C{i}", _series_label(metric, metrics)
        where = x if numeric else [p + (i - (len(metrics) - 1) / 2) * shift for p in x]
        axis.errorbar(
            where,
            table[metric],
            yerr=table.get(STANDARD_ERRORS.get(metric)),
            marker="o",
            linestyle="-" if numeric else "none",
            capsize=3,
            color=color,
            label=label,
        )
        head, _, name = metric.rpartition("/")
        baseline = f"{head}/zero_shot/{name}"  # val/ecare/accuracy -> val/ecare/zero_shot/accuracy
        if baseline in table and table[baseline].notna().any():
            zero_shot = "zero-shot (no adapter)" if len(metrics) == 1 else f"{label}, zero-shot"
            axis.plot(x, table[baseline], linestyle="--", color=color, label=zero_shot)
    if metrics[0] in STANDARD_ERRORS:
        axis.axhline(0, color="gray", linewidth=0.8)  # a gain within about 2 SE of 0 is no difference
    if len(axis.get_legend_handles_labels()[0]) > 1:
        axis.legend(fontsize=7)


def summary_figure(table: pd.DataFrame, swept: list[str], title: str, dry_run: str = "") -> Figure | None:
    """One panel per metric against the swept value, each on its own y scale (None: no metric to
    plot). ``title`` should state the budget; ``dry_run`` marks the figure and the image-metric panels."""
    panels = []
    for metrics, panel_title, ylabel in PLOT_PANELS:
        present = [m for m in metrics if m in table and table[m].notna().any()]
        if present:
            panels.append((present, panel_title, ylabel))
    if not panels:
        return None
    numeric = len(swept) == 1 and pd.api.types.is_numeric_dtype(table[swept[0]])
    if numeric:
        table = table.sort_values(swept[0])
    x = table[swept[0]].to_numpy() if numeric else list(range(len(table)))
    columns = min(PANEL_COLUMNS, len(panels))
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(4.2 * columns, 3.6 * rows + 0.5), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    for axis, (metrics, panel_title, ylabel) in zip(axes, panels, strict=False):
        _draw_panel(axis, table, x, numeric, metrics)
        random = bool(dry_run) and metrics[0].startswith("gen/")
        axis.set_title(
            panel_title + (" [random weights]" if random else ""), color="firebrick" if random else "black"
        )
        axis.set_ylabel(ylabel)
        axis.ticklabel_format(axis="y", useOffset=False)  # tick values as they are, not "1e-5 + 0.9997"
        axis.set_xlabel(axis_name(swept[0]) if numeric else " / ".join(map(axis_name, swept)) or "run")
        if not numeric:
            axis.set_xticks(x, _run_labels(table, swept), rotation=45, ha="right", fontsize=8)
            axis.set_xmargin(0.15)
        axis.grid(alpha=0.3)
    for axis in axes[len(panels) :]:
        axis.set_visible(False)
    figure.suptitle(title + (f"\n{dry_run}" if dry_run else ""), color="firebrick" if dry_run else "black")
    return figure


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
        dry_run = dry_run_note(table)
        if table["random_weights"].nunique() > 1:  # some runs only: say which
            columns.append("random_weights")
        experiments = list(dict.fromkeys(table["experiment"].dropna()))
        title = f"{' + '.join(experiments) or 'Sweep ' + sweep_dir.name}: {len(table)} runs"
        spent = budget(table)
        title += f", {spent}" if spent else ""
        header = [f"# {title}", "", f"Sweep directory: `{sweep_dir.name}`", ""]
        if dry_run:
            header += [f"**{dry_run}.**", ""]
        if common:
            header += ["Common overrides: " + " ".join(f"`{k}={v}`" for k, v in common.items()), ""]
        with atomic_path(sweep_dir / SUMMARY_MD) as tmp:
            tmp.write_text("\n".join([*header, markdown_table(table, columns, set(metrics))]) + "\n")
        figure = summary_figure(table, swept, title, dry_run)
        if figure is not None:
            with atomic_path(sweep_dir / SUMMARY_PNG) as tmp:
                figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return table

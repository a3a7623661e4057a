"""Results tables (DESIGN 7) in the paper's layout: a summary row per method, as CSV and markdown.

A summary row holds the six image metrics, each the mean over the method's sequences, and, for
CausalDreamer, the text-side counterfactual coverage beside zero-shot retrieval. ``evaluate`` writes one
row; ``compare`` stacks the rows of several evaluations so methods read side by side.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from causaldreamer.errors import UserError
from causaldreamer.io import atomic_path

SUMMARY_FILE = "summary.csv"

# Report name -> the paper's column header; ETC is not in the paper's table, it comes last.
METRIC_HEADERS = {
    "dino_tcs": "DINO-TCS↑",
    "sds": "SDS↑",
    "clip": "CLIP↑",
    "ccs": "CCS↑",
    "cps": "CPS↑",
    "etc": "ETC↑",
}
# Column prefix of a coverage run -> how the coverage table names it; the share's threshold is in
# the column coverage_threshold.
COVERAGE_RUNS = {
    "coverage_topk": "adapter, topk",
    "coverage_path": "adapter, path",
    "coverage_zero_shot": "zero-shot",
}
SUMMARY_COLUMNS = ("method", "label", "scenarios", *METRIC_HEADERS)

# The paper's names for the methods of conf/method.
METHOD_LABELS = {
    "causaldreamer": "CausalDreamer",
    "sd15": "Stable Diffusion",
    "sd15_shared_seed": "Stable Diffusion (shared seed)",
    "sdxl": "SDXL",
    "controlnet": "ControlNet",
    "instruct_pix2pix": "InstructPix2Pix",
    "animatediff": "AnimateDiff",
}


def method_label(name: str) -> str:
    return METHOD_LABELS.get(name, name)


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """Atomically: a reader (or a resumed run) sees the old table or the whole new one."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def read_summary(path: str | Path) -> pd.DataFrame:
    """An evaluation's summary table, from its ``summary.csv`` or from the run directory holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / SUMMARY_FILE
    if not path.is_file():
        raise UserError(f"summary {path} not found; pass an evaluate run directory or its {SUMMARY_FILE}")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(
            f"{path} is not a readable CSV ({str(err).splitlines()[0]}); pass a summary.csv"
        ) from None
    missing = [column for column in SUMMARY_COLUMNS if column not in table.columns]
    if missing:
        raise UserError(f"{path} lacks column(s) {missing}; it is not a summary.csv written by evaluate")
    return table


def _number(value) -> str:
    return "" if pd.isna(value) else f"{value:.3f}"


def _percent(value) -> str:
    return "" if pd.isna(value) else f"{100 * value:.1f}%"


def _gain(row: pd.Series, prefix: str) -> str:
    """The coverage run's paired gain over zero-shot as "+0.0123 ± 0.0045" (blank where there is none)."""
    gain, se = row.get(f"{prefix}_gain"), row.get(f"{prefix}_gain_se")
    return "" if gain is None or pd.isna(gain) else f"{gain:+.4f} ± {se:.4f}"


def results_markdown(summary: pd.DataFrame) -> str:
    """The paper's table (| Method | DINO-TCS↑ | SDS↑ | CLIP↑ | CCS↑ | CPS↑ | + ETC), then the coverage
    table of the rows that have coverage columns."""
    headers = ["Method", *METRIC_HEADERS.values()]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for _, row in summary.iterrows():
        lines.append(
            "| " + " | ".join([str(row["label"]), *(_number(row[m]) for m in METRIC_HEADERS)]) + " |"
        )
    counts = dict.fromkeys(int(n) for n in summary["scenarios"])
    if len(counts) == 1:
        lines += ["", f"Means over {next(iter(counts))} scenario(s) each."]
    else:
        per_row = ", ".join(f"{row['label']} {int(row['scenarios'])}" for _, row in summary.iterrows())
        lines += ["", f"Means over the scenarios of each row: {per_row}."]
    coverage_rows = [
        (row["label"], name, row[f"{prefix}_mean"], row[f"{prefix}_share"], _gain(row, prefix))
        for _, row in summary.iterrows()
        for prefix, name in COVERAGE_RUNS.items()
        if f"{prefix}_mean" in summary.columns and not pd.isna(row[f"{prefix}_mean"])
    ]
    if coverage_rows:
        thresholds = " / ".join(f"{t:g}" for t in summary["coverage_threshold"].dropna().unique())
        lines += [
            "",
            "Counterfactual coverage (text side, the same scenarios; share: reference effects whose best",
            f"cosine to a retrieved effect is at least {thresholds}):",
            "",
            "| Method | Retrieval | Coverage↑ | Share↑ | Gain over zero-shot (± SE) |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {label} | {name} | {_number(mean)} | {_percent(share)} | {gain} |"
            for label, name, mean, share, gain in coverage_rows
        ]
    return "\n".join(lines)


def write_markdown(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")

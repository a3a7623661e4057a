"""e-CARE's train split (DESIGN 2) as free-form causal pairs: fetch, verify, load, split by premise.

Each row asks which of two hypotheses is the premise's effect (ask-for "effect") or cause ("cause").
So it holds a right pair, (premise, right hypothesis) or (right hypothesis, premise) as (cause, effect),
and a wrong pair with the other hypothesis in its place. Every defect is a one-line ``UserError`` naming
the file, the line and the fix. Texts lose their final period, as CausalLite10K's and users' have none.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from causaldreamer.data.files import download_pinned, verify_checksums
from causaldreamer.errors import UserError

ECARE_FILE = "train.jsonl"
ECARE_URL = (
    "https://raw.githubusercontent.com/Waste-Wood/e-CARE/c3b52648adcc919303a297a377811e24d703e197/"
    "dataset/Causal_Reasoning/train.jsonl"
)
ECARE_SHA256 = "540f828fe640f0bbef0e16c47a933b65625f49f20aef8a45884a836eb9c034c3"
TEXT_FIELDS = ("premise", "hypothesis1", "hypothesis2")
COLUMNS = ("premise", "ask_for", "cause", "effect", "wrong_cause", "wrong_effect")


def fetch_ecare(ecare_dir: str | Path, download: bool = True) -> Path:
    """The path of ``train.jsonl`` in ``ecare_dir``, downloaded from the pinned commit if absent, verified."""
    folder = Path(ecare_dir)
    path = folder / ECARE_FILE
    fix = "copy e-CARE's train.jsonl there, or set data.ecare_dir (or CAUSALDREAMER_ECARE_DIR) to its folder"
    if not path.is_file():
        if not download:
            raise UserError(f"e-CARE's {ECARE_FILE} missing in {folder}; {fix}")
        download_pinned(ECARE_URL, path, ECARE_SHA256, fix)
    verify_checksums(folder)
    return path


def _clean(text: str) -> str:
    text = text.strip()
    return text[:-1].rstrip() if text.endswith(".") else text


def _row(path: Path, number: int, line: str) -> tuple[str, ...]:
    """One line as (premise, ask_for, cause, effect, wrong_cause, wrong_effect), or a UserError."""
    where = f"{path} line {number}"
    restore = f"restore the file (delete it to download again; pinned sha256 {ECARE_SHA256[:12]}...)"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise UserError(f"{where} is not valid JSON ({err.msg}); {restore}") from None
    if not isinstance(record, dict):
        raise UserError(f"{where} is not a JSON object; {restore}")
    absent = [k for k in (*TEXT_FIELDS, "ask-for", "label") if k not in record]
    if absent:
        raise UserError(f"{where} lacks field(s) {absent}; {restore}")
    for key in TEXT_FIELDS:
        if not isinstance(record[key], str) or not _clean(record[key]):
            raise UserError(f"{where} has an empty or non-text '{key}'; {restore}")
    if record["ask-for"] not in ("cause", "effect"):
        raise UserError(f"{where} has ask-for {record['ask-for']!r}, expected 'cause' or 'effect'; {restore}")
    if type(record["label"]) is not int or record["label"] not in (0, 1):
        raise UserError(f"{where} has label {record['label']!r}, expected 0 or 1; {restore}")
    premise = _clean(record["premise"])
    right, wrong = (_clean(record[f"hypothesis{i + 1}"]) for i in (record["label"], 1 - record["label"]))
    if record["ask-for"] == "effect":
        return premise, "effect", premise, right, premise, wrong
    return premise, "cause", right, premise, wrong, premise


def load_ecare(path: str | Path) -> pd.DataFrame:
    """The rows of ``train.jsonl``, columns ``COLUMNS``, in file order."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found; set data.ecare_dir to the folder with e-CARE's {ECARE_FILE}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 ({err.reason} at byte {err.start}); restore the file") from None
    rows = [_row(path, number, line) for number, line in enumerate(lines, 1) if line.strip()]
    if not rows:
        raise UserError(f"{path} has no rows; restore the file (delete it to download again)")
    return pd.DataFrame(rows, columns=list(COLUMNS))


def split_by_premise(frame: pd.DataFrame, val_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Row indices of a train and a val part: ``val_fraction`` of the unique premises, drawn with
    ``seed``, go to val with all their rows, so no premise is on both sides."""
    premises = frame["premise"].unique()
    order = np.random.default_rng(seed).permutation(len(premises))
    held_out = set(premises[order[: max(1, round(val_fraction * len(premises)))]])
    in_val = frame["premise"].isin(held_out).to_numpy()
    return {"train": np.flatnonzero(~in_val), "val": np.flatnonzero(in_val)}

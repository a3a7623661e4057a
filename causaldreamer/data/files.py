"""CausalLite10K files (DESIGN 2): fetch from the pinned commit, verify checksums, load and validate.

Every defect in a user's files is a ``UserError`` whose one line names the file, the defect and the fix.
"""

from __future__ import annotations

import csv
import hashlib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from causaldreamer.adapter import LINK_TYPES
from causaldreamer.data.phrasing import free_phrasing
from causaldreamer.errors import UserError
from causaldreamer.io import atomic_path

SOURCE_URL = (
    "https://raw.githubusercontent.com/namrata-patel/causal-dreamer/"
    "be535e82130b3138bf620cadbc5e7c4623d996b1/data/{name}"
)
PAIRS_FILE = "CausalLite10K.csv"
COUNTERFACTUAL_FILE = "test_counterfactual.csv"
SPLIT_FILES = {"train": "train_list.txt", "val": "val_list.txt", "test": "test_list.txt"}
CHECKSUM_FILE = "SHA256SUMS"
# The checksums of the pinned commit, so a download is verified against what the project expects.
PINNED_SHA256 = {
    PAIRS_FILE: "e7058785c33f278430d4aa721c3481be931b555b13c66444361de4f88119c18b",
    COUNTERFACTUAL_FILE: "831627a8594b3dc0feef41d4a328b2c35ff4bbc9da53d577801c3ee04b720c11",
    "train_list.txt": "bdfc62b898af1c63fd8d6fe4843a38aa92a3a669edf21c3801246ac2d154da81",
    "val_list.txt": "021d1fa406c844c6216690008aba8841f8728cb1bdb35f39a8adc26e6ad8570a",
    "test_list.txt": "073911c1798a8c76f0729aebc052c153adfec6434c084f3183d69143e1f9e932",
}
PAIR_COLUMNS = ("prompt", "cause", "effect", "link_type", "strength")


@dataclass
class CausalPairs:
    """The pair table and the official split (row indices), validated."""

    rows: pd.DataFrame  # columns: prompt, cause, effect, link_type, strength, free_cause
    splits: dict[str, np.ndarray]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_dataset(data_dir: str | Path, download: bool = True) -> Path:
    """Make sure the CausalLite10K files are in ``data_dir``: download missing ones, verify checksums."""
    data_dir = Path(data_dir)
    missing = [name for name in PINNED_SHA256 if not (data_dir / name).is_file()]
    if missing and not download:
        raise UserError(
            f"CausalLite10K files missing in {data_dir}: {', '.join(missing)}; copy the data/ folder of "
            "namrata-patel/causal-dreamer there, or set data.data_dir (or CAUSALDREAMER_DATA_DIR)"
        )
    fix = (
        "copy the CausalLite10K files there, or set data.data_dir (or CAUSALDREAMER_DATA_DIR) to the folder "
        "that has them"
    )
    for name in missing:
        download_pinned(SOURCE_URL.format(name=name), data_dir / name, PINNED_SHA256[name], fix)
    verify_checksums(data_dir)
    return data_dir


def download_pinned(url: str, path: Path, expected_sha256: str, fix: str) -> None:
    """Fetch ``url`` into ``path`` atomically, refusing content whose checksum is not the pinned one."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            payload = response.read()
    except OSError as err:
        raise UserError(
            f"{path.name} is not in {path.parent} and could not be downloaded ({err}); {fix}"
        ) from None
    digest = hashlib.sha256(payload).hexdigest()
    if digest != expected_sha256:
        raise UserError(
            f"downloaded {path.name} has sha256 {digest[:12]}..., expected {expected_sha256[:12]}... ({url})"
        )
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


def verify_checksums(data_dir: Path) -> None:
    """Check the files against the folder's SHA256SUMS (a user's own dataset may have none)."""
    sums_file = data_dir / CHECKSUM_FILE
    if not sums_file.is_file():
        return
    for line in sums_file.read_text().splitlines():
        if not line.strip():
            continue
        expected, name = line.split(maxsplit=1)
        path = data_dir / name.strip().lstrip("*")
        if path.is_file() and sha256(path) != expected:
            raise UserError(
                f"checksum mismatch for {path} (sha256 {sha256(path)[:12]}... != {expected[:12]}... in "
                f"{CHECKSUM_FILE}); the file is damaged or edited: restore it, or delete it to download again"
            )


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{path} not found; set data.data_dir to the folder with the CausalLite10K files")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 ({err.reason} at byte {err.start}); save it as UTF-8") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise UserError(f"{path} is not a readable CSV ({str(err).splitlines()[0]}); fix the file") from None
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise UserError(f"{path} has duplicated column(s) {duplicated}; keep one of each")
    absent = [name for name in required if name not in frame.columns]
    if absent:
        raise UserError(f"{path} lacks column(s) {absent} (has {list(frame.columns)}); rename or add them")
    for column in required:
        empty = frame.index[frame[column].str.strip() == ""]
        if len(empty):
            raise UserError(
                f"{path} has {len(empty)} empty '{column}' cell(s), first at data row {empty[0]}; fill or drop them"
            )
    return frame


def load_pairs(path: str | Path) -> pd.DataFrame:
    """The pair table with ``strength`` as float and ``free_cause``: the prompt's phrasing of the cause."""
    path = Path(path)
    frame = _read_csv(path, PAIR_COLUMNS)
    unknown = sorted(set(frame["link_type"]) - set(LINK_TYPES))
    if unknown:
        raise UserError(f"{path} has unknown link_type value(s) {unknown}; allowed: {list(LINK_TYPES)}")
    strength = pd.to_numeric(frame["strength"], errors="coerce")
    bad = frame.index[~np.isfinite(strength.to_numpy(dtype=float))]
    if len(bad):
        raise UserError(
            f"{path} has {len(bad)} non-numeric or NaN 'strength' value(s), first at data row {bad[0]} "
            f"({frame['strength'][bad[0]]!r}); use numbers in (0, 1)"
        )
    frame = frame.assign(strength=strength.astype(float))
    for column in ("prompt", "cause", "effect"):
        frame[column] = frame[column].str.strip()
    # Users type free-form sentences: the prompt cut before its effect ("A rock rolls down a slope") is a
    # natural-language phrasing of the terse cause, used as a training view (DESIGN 7, both pitfalls).
    frame["free_cause"] = [
        free_phrasing(*row) for row in zip(frame["prompt"], frame["cause"], frame["effect"], strict=True)
    ]
    return frame.reset_index(drop=True)


def load_split(path: Path, num_rows: int) -> np.ndarray:
    """0-based row indices, one per line, all in range."""
    if not path.is_file():
        raise UserError(f"split list {path} not found; set data.data_dir to the folder that has it")
    indices = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        token = line.strip()
        if not token:
            continue
        if not token.lstrip("-").isdigit():
            raise UserError(
                f"{path} line {number}: {token!r} is not an integer row index; fix the split list"
            )
        indices.append(int(token))
    indices = np.asarray(indices, dtype=np.int64)
    out = indices[(indices < 0) | (indices >= num_rows)]
    if len(out):
        raise UserError(
            f"{path} has {len(out)} row index(es) out of range [0, {num_rows}), e.g. {out[0]}; the split "
            "list does not belong to this CSV"
        )
    if len(np.unique(indices)) != len(indices):
        raise UserError(f"{path} lists some row indices twice; each row belongs once to one split")
    return indices


def load_dataset(data_dir: str | Path) -> CausalPairs:
    """Pairs and the train/val/test split, checked for range and overlap."""
    data_dir = Path(data_dir)
    rows = load_pairs(data_dir / PAIRS_FILE)
    splits = {name: load_split(data_dir / file, len(rows)) for name, file in SPLIT_FILES.items()}
    names = list(splits)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            shared = np.intersect1d(splits[first], splits[second])
            if len(shared):
                raise UserError(
                    f"splits {first} and {second} overlap in {len(shared)} row(s), e.g. row {shared[0]}; "
                    "official splits are disjoint: fix the split lists"
                )
    return CausalPairs(rows, splits)


def load_counterfactual(path: str | Path) -> pd.DataFrame:
    """The generation benchmark: one row per cause, columns cause, effect1..effect8."""
    path = Path(path)
    required = ("cause",) + tuple(f"effect{i}" for i in range(1, 9))
    frame = _read_csv(path, required)
    return frame.assign(**{c: frame[c].str.strip() for c in required}).reset_index(drop=True)

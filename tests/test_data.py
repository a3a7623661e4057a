"""CausalLite10K loading (DESIGN 2) and its one-line errors for each kind of bad file."""

import shutil

import pytest

from causaldreamer.data.files import PAIRS_FILE, fetch_dataset, load_dataset, load_pairs
from causaldreamer.errors import UserError

HEADER = "frame_id,prompt,cause,effect,link_type,strength\n"
GOOD_ROW = '1,"A rock rolls down a slope, crushing a fence",rock rolls,fence crushed,causal,0.7\n'


def test_real_dataset_matches_design(data_dir):
    pairs = load_dataset(data_dir)
    rows = pairs.rows
    assert len(rows) == 10_000
    assert {k: len(v) for k, v in pairs.splits.items()} == {"train": 7999, "val": 1001, "test": 1000}
    assert rows["cause"].nunique() == 3709 and rows["effect"].nunique() == 5131
    assert rows["link_type"].value_counts().to_dict() == {"causal": 9495, "inhibits": 310, "enables": 195}
    assert rows.loc[0, "free_cause"] == "A rock rolls down a slope"
    train_effects = set(rows["effect"].iloc[pairs.splits["train"]])
    val_effects = set(rows["effect"].iloc[pairs.splits["val"]])
    assert len(val_effects) == 840 and len(val_effects - train_effects) == 396


def test_checksums_verified(tmp_path, data_dir):
    folder = tmp_path / "data"
    shutil.copytree(data_dir, folder)
    assert fetch_dataset(folder, download=False) == folder
    (folder / PAIRS_FILE).chmod(0o644)
    with (folder / PAIRS_FILE).open("a") as handle:
        handle.write(GOOD_ROW)
    with pytest.raises(UserError, match="checksum mismatch for .*CausalLite10K.csv"):
        fetch_dataset(folder, download=False)


def test_missing_files_offline_names_the_fix(tmp_path):
    with pytest.raises(UserError, match="missing in .*CAUSALDREAMER_DATA_DIR"):
        fetch_dataset(tmp_path, download=False)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("frame_id,prompt,cause,outcome,link_type,strength\n" + GOOD_ROW, r"lacks column\(s\) \['effect'\]"),
        (HEADER + '1,"A rock rolls",rock rolls,,causal,0.7\n', "empty 'effect' cell"),
        (HEADER + '1,"A rock rolls",  ,fence,causal,0.7\n', "empty 'cause' cell"),
        (HEADER + GOOD_ROW.replace("causal", "prevents"), r"unknown link_type value\(s\) \['prevents'\]"),
        (HEADER + GOOD_ROW.replace("0.7", "nan"), "NaN 'strength'"),
        (HEADER + GOOD_ROW.replace("0.7", "high"), "non-numeric or NaN 'strength'"),
        ("frame_id,prompt,cause,effect,cause,link_type,strength\n", "duplicated column"),
    ],
)
def test_csv_defects_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / PAIRS_FILE
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message) as info:
        load_pairs(path)
    assert "\n" not in str(info.value)


def test_bad_encoding(tmp_path):
    path = tmp_path / PAIRS_FILE
    path.write_bytes((HEADER + GOOD_ROW).encode() + "caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match="is not UTF-8"):
        load_pairs(path)


def _dataset_with_splits(tmp_path, data_dir, train=None, val=None):
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(data_dir / PAIRS_FILE, folder)
    for name in ("train_list.txt", "val_list.txt", "test_list.txt"):
        shutil.copy(data_dir / name, folder)
    if train is not None:
        (folder / "train_list.txt").chmod(0o644)
        (folder / "train_list.txt").write_text(train)
    if val is not None:
        (folder / "val_list.txt").chmod(0o644)
        (folder / "val_list.txt").write_text(val)
    return folder


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ("0\n1\n10000\n", r"out of range \[0, 10000\)"),
        ("0\n-3\n", "out of range"),
        ("0\n1.5\n", "not an integer row index"),
        ("0\nseven\n", "not an integer row index"),
        ("0\n0\n", "twice"),
    ],
)
def test_split_defects(tmp_path, data_dir, train, message):
    with pytest.raises(UserError, match=message):
        load_dataset(_dataset_with_splits(tmp_path, data_dir, train=train))


def test_overlapping_splits(tmp_path, data_dir):
    val = (
        (data_dir / "val_list.txt").read_text() + "\n" + (data_dir / "train_list.txt").read_text().split()[0]
    )
    with pytest.raises(UserError, match="splits train and val overlap in 1 row"):
        load_dataset(_dataset_with_splits(tmp_path, data_dir, val=val))

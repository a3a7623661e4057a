"""CausalLite10K and e-CARE loading (DESIGN 2), their one-line errors for each kind of bad file, and
free-form phrasings that do not contain their effect (DESIGN 7)."""

import json
import shutil

import numpy as np
import pytest

from causaldreamer.data.ecare import ECARE_FILE, fetch_ecare, load_ecare, split_by_premise
from causaldreamer.data.files import PAIRS_FILE, fetch_dataset, load_dataset, load_pairs
from causaldreamer.data.phrasing import free_phrasing, leak_share
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


# -- free-form phrasings (DESIGN 7, second pitfall) -----------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "cause", "effect", "phrasing"),
    [
        ("A burst pipe causes water to gush out, flooding the room", "pipe bursts", "water floods", "A burst pipe"),
        ("The leaf of a tree rustles and falls to the ground", "leaf rustles loose", "leaf falls off", "The leaf of a tree rustles"),
        ("After a disagreement, friends exchange hugs and the tension dissipates", "hugs exchanged", "tension relieved", "After a disagreement, friends exchange hugs"),
        # nothing of the cause is left before the effect begins: the terse cause
        ("A child learns they can't have a pet dog and starts pouting", "pet denial", "child sulks", "pet denial"),
    ],
)  # fmt: skip
def test_free_phrasing_stops_before_the_effect(prompt, cause, effect, phrasing):
    assert free_phrasing(prompt, cause, effect) == phrasing


def test_leak_share_on_hand_counted_rows():
    phrasings = ["a glass slips and shatters", "a glass slips"]
    effects, causes = ["glass shattered", "glass shattered"], ["glass slips", "glass slips"]
    assert leak_share(phrasings, effects) == 1.0  # both name the glass
    assert leak_share(phrasings, effects, causes) == 0.5  # only the first names what the cause does not


def test_no_free_phrasing_contains_its_effect(data_dir):
    rows = load_dataset(data_dir).rows
    first_clause = rows["prompt"].str.split(",", n=1).str[0]  # the phrasing before the fix
    assert leak_share(first_clause, rows["effect"], rows["cause"]) > 0.6
    assert leak_share(rows["free_cause"], rows["effect"], rows["cause"]) == 0.0
    # Words the effect shares with its terse cause (its subject) remain, no more often than in the cause.
    assert leak_share(rows["free_cause"], rows["effect"]) <= leak_share(rows["cause"], rows["effect"])


# -- e-CARE (DESIGN 2) ----------------------------------------------------------------------------------

ECARE_ROW = {
    "index": "train-0",
    "premise": "There is a light rain today.",
    "ask-for": "effect",
    "hypothesis1": "The roots of many plants are not moistened by rain.",
    "hypothesis2": "Tourists have seen many ripples.",
    "label": 0,
}


def test_real_ecare_file_and_its_premise_split(ecare_dir):
    rows = load_ecare(fetch_ecare(ecare_dir, download=False))
    assert len(rows) == 14_928 and rows["ask_for"].value_counts().to_dict() == {"cause": 7617, "effect": 7311}
    first = rows.iloc[0]  # ask-for effect, label 0: premise -> hypothesis1, hypothesis2 the wrong effect
    assert (first["cause"], first["effect"]) == ("There is a light rain today", ECARE_ROW["hypothesis1"][:-1])
    assert (first["wrong_cause"], first["wrong_effect"]) == (
        first["cause"],
        "Tourists have seen many ripples",
    )
    third = rows.iloc[2]  # ask-for cause: right hypothesis -> premise
    assert (third["cause"], third["effect"]) == ("The child ran towards hippos", "His parents stopped him")
    assert third["wrong_effect"] == third["effect"] and third["wrong_cause"] != third["cause"]
    split = split_by_premise(rows, 0.1, seed=0)
    train, val = rows.iloc[split["train"]], rows.iloc[split["val"]]
    assert len(train) + len(val) == len(rows) and not set(train["premise"]) & set(val["premise"])
    assert val["premise"].nunique() == round(0.1 * rows["premise"].nunique()) == 1387
    assert all(np.array_equal(split[k], split_by_premise(rows, 0.1, seed=0)[k]) for k in split)
    assert not np.array_equal(split["val"], split_by_premise(rows, 0.1, seed=1)["val"])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"premise": "x", ', "line 2 is not valid JSON"),
        ("[1, 2]", "line 2 is not a JSON object"),
        (json.dumps({k: v for k, v in ECARE_ROW.items() if k != "label"}), r"line 2 lacks field\(s\) \['label'\]"),
        (json.dumps(ECARE_ROW | {"premise": "  "}), "line 2 has an empty or non-text 'premise'"),
        (json.dumps(ECARE_ROW | {"ask-for": "reason"}), "line 2 has ask-for 'reason'"),
        (json.dumps(ECARE_ROW | {"label": 2}), "line 2 has label 2, expected 0 or 1"),
        (json.dumps(ECARE_ROW | {"label": True}), "line 2 has label True"),
    ],
)  # fmt: skip
def test_ecare_defects_are_one_line_errors(tmp_path, line, message):
    path = tmp_path / ECARE_FILE
    path.write_text(json.dumps(ECARE_ROW) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=f"{ECARE_FILE} {message}.*restore the file") as info:
        load_ecare(path)
    assert "\n" not in str(info.value)


def test_ecare_checksum_and_missing_file(tmp_path, ecare_dir):
    folder = tmp_path / "ecare"
    shutil.copytree(ecare_dir, folder)
    (folder / ECARE_FILE).chmod(0o644)
    with (folder / ECARE_FILE).open("a") as handle:
        handle.write("\n" + json.dumps(ECARE_ROW))
    with pytest.raises(UserError, match="checksum mismatch for .*train.jsonl"):
        fetch_ecare(folder, download=False)
    with pytest.raises(UserError, match="train.jsonl missing in .*CAUSALDREAMER_ECARE_DIR"):
        fetch_ecare(tmp_path / "empty", download=False)

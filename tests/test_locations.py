"""Where data and caches are found when no path is given (README "Where files live"), rule by rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from causaldreamer import locations


@pytest.fixture()
def checkout(tmp_path, monkeypatch) -> Path:
    """A source checkout with shared/ beside it, and a user cache, none of the environment's own."""
    root = tmp_path / "main"
    (root / "causaldreamer").mkdir(parents=True)
    (root / "pyproject.toml").write_text("")
    monkeypatch.setattr(locations, "CHECKOUT", root)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    for name in locations.DATASET_VARIABLES.values():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("CAUSALDREAMER_CACHE_DIR", raising=False)
    return root


def put_dataset(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True)
    (folder / locations.DATASET_MARKERS[name]).write_text("")
    return folder


def test_download_location_is_the_user_cache(checkout, tmp_path):
    assert locations.dataset_dir("causallite10k") == str(
        tmp_path / "user-cache/causaldreamer/data/causallite10k"
    )
    assert locations.embedding_cache_dir() == str(tmp_path / "user-cache/causaldreamer/embeddings")


def test_shared_data_beside_the_checkout_wins_over_the_cache(checkout, tmp_path):
    shared = put_dataset(tmp_path / "shared/data/ecare", "ecare")
    assert locations.dataset_dir("ecare") == str(shared)
    # ... only when it holds the dataset, and only beside a source checkout
    assert locations.dataset_dir("causallite10k").startswith(str(tmp_path / "user-cache"))
    (checkout / "pyproject.toml").unlink()
    assert locations.dataset_dir("ecare").startswith(str(tmp_path / "user-cache"))


def test_environment_wins_over_the_checkout(checkout, tmp_path, monkeypatch):
    put_dataset(tmp_path / "shared/data/causallite10k", "causallite10k")
    monkeypatch.setenv("CAUSALDREAMER_DATA_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("CAUSALDREAMER_CACHE_DIR", str(tmp_path / "embeddings"))
    assert locations.dataset_dir("causallite10k") == str(tmp_path / "mine")
    assert locations.embedding_cache_dir() == str(tmp_path / "embeddings")


def test_unknown_dataset_is_refused():
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        locations.dataset_dir("nope")

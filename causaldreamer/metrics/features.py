"""Frozen feature extractors for the sequence metrics: DINOv2 CLS features and CLIP image/text features.

Both load real weights from a hub id or a local folder, and both can be built tiny with random weights
for tests. Images are PIL images or [N,3,H,W] tensors (uint8 in 0..255, or float in 0..1); the
model's own image processor prepares them, so nothing depends on torchvision. Features come back
unit norm, float32, on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from tokenizers.pre_tokenizers import ByteLevel
from torch import Tensor, nn
from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    BitImageProcessor,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPTokenizer,
    Dinov2Config,
    Dinov2Model,
)

from causaldreamer.errors import UserError

DEFAULT_DINO = "facebook/dinov2-base"
DEFAULT_CLIP = "openai/clip-vit-large-patch14"

Images = Sequence[Image.Image] | Tensor


def _load_pretrained(loader, name_or_path: str, what: str, setting: str):
    try:
        return loader.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        raise UserError(
            f"could not load the {what} from {name_or_path!r} ({type(err).__name__}); set {setting} to a "
            "local folder with its weights, or a hub id you can reach"
        ) from None


def _pixel_values(processor, images: Images) -> Tensor:
    """Run the model's image processor; float tensors are taken as already scaled to 0..1."""
    if isinstance(images, Tensor):
        return processor(
            images=list(images.cpu()), do_rescale=not images.is_floating_point(), return_tensors="pt"
        )["pixel_values"]
    return processor(images=[image.convert("RGB") for image in images], return_tensors="pt")["pixel_values"]


def _projected(output) -> Tensor:
    """CLIP's get_*_features: a tensor in transformers 4, an output whose pooler_output is projected in 5."""
    return output if isinstance(output, Tensor) else output.pooler_output


class FrozenExtractor(nn.Module):
    """A frozen model with its image processor: eval mode always, no gradients, batched over images."""

    def __init__(self, model: nn.Module, image_processor, name: str, batch_size: int):
        super().__init__()
        self.model, self.image_processor = model, image_processor
        self.name, self.batch_size = name, batch_size
        self.model.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> FrozenExtractor:
        """Stays in eval mode: a metric's extractor must not switch dropout on with its parent module."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _image_features(self, pixel_values: Tensor) -> Tensor:
        raise NotImplementedError

    @torch.inference_mode()
    def images(self, images: Images) -> Tensor:
        """[N, d] unit-norm image features."""
        if isinstance(images, Tensor) and images.ndim == 3:
            images = images[None]
        chunks = []
        for start in range(0, len(images), self.batch_size):
            pixels = _pixel_values(self.image_processor, images[start : start + self.batch_size])
            pixels = pixels.to(self.device, next(self.model.parameters()).dtype)
            chunks.append(F.normalize(self._image_features(pixels).float(), dim=-1).cpu())
        return torch.cat(chunks)


class DinoFeatures(FrozenExtractor):
    """DINOv2 (transformers Dinov2Model): the CLS token of the last, layer-normed hidden states."""

    @classmethod
    def from_pretrained(cls, name_or_path: str = DEFAULT_DINO, batch_size: int = 32) -> DinoFeatures:
        setting = "metrics.dino_model"
        model = _load_pretrained(Dinov2Model, name_or_path, "DINOv2 model", setting)
        processor = _load_pretrained(AutoImageProcessor, name_or_path, "DINOv2 image processor", setting)
        return cls(model, processor, name_or_path, batch_size)

    @classmethod
    def tiny(cls, image_size: int = 32, seed: int = 0) -> DinoFeatures:
        """Random weights, 2 layers of width 32, for tests."""
        torch.manual_seed(seed)
        config = Dinov2Config(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            image_size=image_size,
            patch_size=8,
        )
        processor = BitImageProcessor(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
            image_mean=[0.485, 0.456, 0.406],
            image_std=[0.229, 0.224, 0.225],
        )
        return cls(Dinov2Model(config), processor, "tiny-dinov2", batch_size=32)

    def _image_features(self, pixel_values: Tensor) -> Tensor:
        return self.model(pixel_values=pixel_values).last_hidden_state[:, 0]


class ClipFeatures(FrozenExtractor):
    """CLIP (transformers CLIPModel): projected image and text embeddings in one shared space."""

    def __init__(self, model: CLIPModel, image_processor, tokenizer, name: str, batch_size: int):
        super().__init__(model, image_processor, name, batch_size)
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(cls, name_or_path: str = DEFAULT_CLIP, batch_size: int = 32) -> ClipFeatures:
        setting = "metrics.clip_model"
        model = _load_pretrained(CLIPModel, name_or_path, "CLIP model", setting)
        processor = _load_pretrained(AutoImageProcessor, name_or_path, "CLIP image processor", setting)
        tokenizer = _load_pretrained(AutoTokenizer, name_or_path, "CLIP tokenizer", setting)
        return cls(model, processor, tokenizer, name_or_path, batch_size)

    @classmethod
    def tiny(cls, image_size: int = 32, seed: int = 0) -> ClipFeatures:
        """Random weights, width 32, with a byte-level CLIP BPE tokenizer (no merges) built in memory."""
        torch.manual_seed(seed)
        symbols = sorted(ByteLevel.alphabet())  # unordered (a set underneath): sorted, the ids are stable
        vocab = {token: i for i, token in enumerate(symbols + [s + "</w>" for s in symbols])}
        vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
        tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
        config = CLIPConfig(
            text_config=dict(
                text,
                vocab_size=len(vocab),
                max_position_embeddings=77,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            ),
            vision_config=dict(text, image_size=image_size, patch_size=8),
            projection_dim=24,
        )
        processor = CLIPImageProcessor(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        )
        return cls(CLIPModel(config), processor, tokenizer, "tiny-clip", batch_size=32)

    def _image_features(self, pixel_values: Tensor) -> Tensor:
        return _projected(self.model.get_image_features(pixel_values=pixel_values))

    @torch.inference_mode()
    def texts(self, texts: Sequence[str]) -> Tensor:
        """[N, d] unit-norm text features; texts past CLIP's context length are truncated."""
        chunks = []
        max_length = self.model.config.text_config.max_position_embeddings
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(self.device)
            features = _projected(self.model.get_text_features(**batch))
            chunks.append(F.normalize(features.float(), dim=-1).cpu())
        return torch.cat(chunks)


def sequence_features(
    frames: Images, cause: str, effects: Sequence[str], dino: DinoFeatures, clip: ClipFeatures
) -> dict[str, Tensor]:
    """Features of one sequence, keyed by the update arguments of the metrics in sequence.py.

    ``effects[f]`` is the effect frame f shows. Returns dino_features, image_features and
    effect_features [1,T,d], and cause_features [1,d].
    """
    if len(effects) != len(frames):
        raise ValueError(f"{len(frames)} frames but {len(effects)} effects; give one effect per frame")
    return {
        "dino_features": dino.images(frames)[None],
        "image_features": clip.images(frames)[None],
        "effect_features": clip.texts(effects)[None],
        "cause_features": clip.texts([cause]),
    }

"""Tiny random-weight Stable Diffusion parts, built from configs, for tests that run on a CPU in seconds.

They mirror the real architectures (SD 1.5, SDXL, ControlNet, AnimateDiff) at toy widths, as diffusers'
own fast tests do, so every code path of the real pipelines runs without downloading weights. The CLIP
tokenizer is a real byte-level BPE with a small vocabulary built in memory. Each builder seeds its own
random stream, so two calls give the same weights and the global RNG is left alone.
"""

from __future__ import annotations

import contextlib

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, MotionAdapter, UNet2DConditionModel
from tokenizers import pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

TEXT_DIM = 32
BLOCK_OUT_CHANNELS = (32, 64)
LATENT_SIZE = 16  # 16x16 latents; the two-block VAE decodes them to 32x32 px frames

# A few common English merges, so words split into real sub-word pieces as in CLIP's own BPE.
_MERGES = [
    ("t", "h"),
    ("th", "e</w>"),
    ("a", "n"),
    ("an", "d</w>"),
    ("i", "n"),
    ("in", "g</w>"),
    ("e", "r"),
    ("o", "n</w>"),
]


@contextlib.contextmanager
def _seeded(seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def tiny_clip_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """CLIP's byte-level BPE with the 256 byte symbols, their end-of-word forms and a few merges."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = alphabet + [f"{symbol}</w>" for symbol in alphabet] + [a + b for a, b in _MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=list(_MERGES), model_max_length=model_max_length)


def tiny_clip_text_encoder(
    tokenizer: CLIPTokenizer, with_projection: bool = False, seed: int = 0
) -> CLIPTextModel | CLIPTextModelWithProjection:
    """A 2-layer CLIP text tower of width 32 whose vocabulary and special ids match ``tokenizer``."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=tokenizer.model_max_length,
        hidden_size=TEXT_DIM,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        projection_dim=TEXT_DIM,
    )
    with _seeded(seed):
        return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def tiny_unet(in_channels: int = 4, seed: int = 0) -> UNet2DConditionModel:
    """An SD 1.5-style UNet (cross-attention to the text states); 8 input channels for InstructPix2Pix."""
    with _seeded(seed):
        return UNet2DConditionModel(
            sample_size=LATENT_SIZE,
            in_channels=in_channels,
            out_channels=4,
            block_out_channels=BLOCK_OUT_CHANNELS,
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=TEXT_DIM,
            norm_num_groups=2,
        )


def tiny_sdxl_unet(seed: int = 0) -> UNet2DConditionModel:
    """An SDXL-style UNet: both text towers' states concatenated, pooled text and size ids added to time."""
    time_embed_dim = 8
    with _seeded(seed):
        return UNet2DConditionModel(
            sample_size=LATENT_SIZE,
            in_channels=4,
            out_channels=4,
            block_out_channels=BLOCK_OUT_CHANNELS,
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            transformer_layers_per_block=1,
            cross_attention_dim=2 * TEXT_DIM,
            addition_embed_type="text_time",
            addition_time_embed_dim=time_embed_dim,
            # 6 size/crop ids of time_embed_dim each, plus text_encoder_2's pooled projection
            projection_class_embeddings_input_dim=6 * time_embed_dim + TEXT_DIM,
            norm_num_groups=2,
        )


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    """A two-block KL autoencoder: 4 latent channels, images twice the latent size."""
    with _seeded(seed):
        return AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=BLOCK_OUT_CHANNELS,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            latent_channels=4,
            norm_num_groups=2,
            sample_size=2 * LATENT_SIZE,
        )


def tiny_controlnet(unet: UNet2DConditionModel, seed: int = 0) -> ControlNetModel:
    """A ControlNet copied from ``unet`` (as ControlNet training starts), with random zero-convolutions.

    Real ControlNets start with zero-initialised output convolutions; left at zero the control image
    would have no effect, so a tiny one draws them at random to make the conditioning observable.
    """
    with _seeded(seed):
        # one stride-2 step in the condition embedding: control images at the VAE's 2x image size
        controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
        for conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            torch.nn.init.normal_(conv.weight, std=0.1)
    return controlnet


def tiny_motion_adapter(unet: UNet2DConditionModel, seed: int = 0) -> MotionAdapter:
    """AnimateDiff motion modules (temporal attention) shaped to plug into ``unet``."""
    with _seeded(seed):
        return MotionAdapter(
            block_out_channels=tuple(unet.config.block_out_channels),
            motion_layers_per_block=unet.config.layers_per_block,
            motion_norm_num_groups=2,
            motion_num_attention_heads=4,
            motion_max_seq_length=32,
        )


def tiny_ddim_scheduler() -> DDIMScheduler:
    """DDIM with Stable Diffusion 1.5's training noise schedule."""
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def tiny_sd15_components(unet_in_channels: int = 4, seed: int = 0) -> dict:
    """The model parts of an SD 1.5 pipeline (UNet, VAE, text tower, tokenizer, scheduler), by name."""
    tokenizer = tiny_clip_tokenizer()
    return {
        "unet": tiny_unet(unet_in_channels, seed=seed),
        "vae": tiny_vae(seed=seed),
        "text_encoder": tiny_clip_text_encoder(tokenizer, seed=seed),
        "tokenizer": tokenizer,
        "scheduler": tiny_ddim_scheduler(),
    }


def tiny_sdxl_components(seed: int = 0) -> dict:
    """The model parts of an SDXL pipeline, by name: two text towers, the second one projected."""
    tokenizer, tokenizer_2 = tiny_clip_tokenizer(), tiny_clip_tokenizer()
    return {
        "unet": tiny_sdxl_unet(seed=seed),
        "vae": tiny_vae(seed=seed),
        "text_encoder": tiny_clip_text_encoder(tokenizer, seed=seed),
        "tokenizer": tokenizer,
        "text_encoder_2": tiny_clip_text_encoder(tokenizer_2, with_projection=True, seed=seed + 1),
        "tokenizer_2": tokenizer_2,
        "scheduler": tiny_ddim_scheduler(),
    }

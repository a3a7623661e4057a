"""Cause -> an ordered sequence of frames of one subject (DESIGN 6.2-6.5), on diffusers' StableDiffusionPipeline.

The adapter runs once per sequence, in its own encoder space: it predicts the effect direction (for
retrieval and ordering) and the gates and bias (for the UNet). Only token spans, gates and bias reach the
UNet, as an argument of the pipeline call that its cross-attention processors read; the pipeline renders
all T frames in ONE batched call from the same initial latent, so the subject's identity comes from the
shared noise and prompt prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from causaldreamer.adapter import LINK_TYPES, AdapterOutput
from causaldreamer.diffusion.adapter_folder import AdapterFolder
from causaldreamer.diffusion.processor import (
    CrossAttentionIntervention,
    SequenceAttention,
    install_causal_processors,
)
from causaldreamer.diffusion.settings import check_cause, check_settings
from causaldreamer.diffusion.spans import frame_prompts_and_spans
from causaldreamer.encoders import TextEncoder
from causaldreamer.errors import UserError
from causaldreamer.prompts import DEFAULT_TEMPLATE
from causaldreamer.retrieval import RetrievedSequence, retrieve_sequence


@dataclass
class SequencePlan:
    """Everything decided before denoising: the adapter's outputs, the effects and prompts of the frames."""

    cause: str
    adapter_output: AdapterOutput  # batch of 1
    retrieved: RetrievedSequence
    effects: list[str]  # per frame, in temporal order
    prompts: list[str]  # per frame
    span_ids: torch.Tensor  # [T, tokenizer.model_max_length]


@dataclass
class GeneratedSequence:
    frames: list[Image.Image]
    record: dict


class CausalSequenceGenerator:
    """Reusable across causes: load the pipeline and adapter once, then call ``generate(cause, seed)``."""

    def __init__(
        self,
        pipe: StableDiffusionPipeline,
        adapter_folder: AdapterFolder,
        encoder: TextEncoder,
        num_frames: int = 8,
        top_k: int = 8,
        lam: float = 0.7,
        guidance_scale: float = 7.5,
        num_inference_steps: int = 50,
        retrieval: str = "topk",
        template: str = DEFAULT_TEMPLATE,
        link_type: str = "causal",
        share_first_frame: bool = False,
        progression: bool = True,
        shared_seed: bool = True,
        height: int | None = None,
        width: int | None = None,
    ):
        bank, adapter = adapter_folder.bank, adapter_folder.adapter
        check_settings(
            num_frames=num_frames,
            top_k=top_k,
            lam=lam,
            bank_size=len(bank),
            retrieval=retrieval,
            link_type=link_type,
            template=template,
            guidance_scale=guidance_scale,
            num_inference_steps=num_inference_steps,
        )
        self.encoder_identity = encoder.identity  # a digest of the weights: computed once
        if bank.encoder != self.encoder_identity or adapter.dim != encoder.dim:
            raise UserError(
                f"the adapter's effect bank was encoded with {bank.encoder} (d={bank.dim}) but the encoder is "
                f"{self.encoder_identity} (d={encoder.dim}); choose the encoder the adapter was trained with"
            )
        self.pipe, self.folder, self.encoder = pipe, adapter_folder, encoder
        self.adapter, self.bank = adapter.eval(), bank
        self.num_frames, self.top_k, self.lam = num_frames, top_k, float(lam)
        self.guidance_scale, self.num_inference_steps = guidance_scale, num_inference_steps
        self.retrieval, self.template, self.link_type = retrieval, template, link_type
        # progression False: every frame gets the full intervention (a_f = 1); shared_seed False: frame f
        # starts from its own latent (seed + f). Both are ablations of DESIGN 6.3 / 6.4.
        self.share_first_frame = share_first_frame
        self.progression, self.shared_seed = progression, shared_seed
        default_size = pipe.unet.config.sample_size * pipe.vae_scale_factor
        self.height, self.width = height or default_size, width or default_size
        if self.height % 8 or self.width % 8:
            raise UserError(f"height={self.height}, width={self.width}: both must be multiples of 8")
        install_causal_processors(pipe.unet, adapter.num_heads)

    @torch.inference_mode()
    def plan(self, cause: str) -> SequencePlan:
        """Adapter (once), retrieval and temporal order in the encoder space, prompts and their spans."""
        cause = check_cause(cause)
        cause_embedding = self.encoder.encode([cause]).to(self.bank.embeddings.dtype)
        link = torch.tensor([LINK_TYPES.index(self.link_type)])
        output = self.adapter(cause_embedding, link)
        retrieved = retrieve_sequence(
            cause_embedding[0],
            output.effect[0],
            self.bank.embeddings,
            self.num_frames,
            self.top_k,
            self.retrieval,
        )
        effects = [self.bank.texts[i] for i in retrieved.bank_indices]
        prompts, span_ids = frame_prompts_and_spans(self.pipe.tokenizer, self.template, cause, effects)
        return SequencePlan(cause, output, retrieved, effects, prompts, span_ids)

    def intervention(self, plan: SequencePlan) -> CrossAttentionIntervention:
        """The conditional rows the processors use: one cause's gates and bias for every frame, each frame
        with its own spans and progression weight."""
        device, frames = self.pipe.unet.device, self.num_frames
        output = plan.adapter_output
        return CrossAttentionIntervention(
            span_ids=plan.span_ids.to(device),
            q_gate=output.q_gate.expand(frames, -1).to(device),
            k_gate=output.k_gate.expand(frames, -1, -1).to(device),
            bias=output.bias.expand(frames, -1, -1).to(device),
            progress=torch.tensor(self.progress(plan), device=device),
            lam=self.lam,
        )

    def attention(self, plan: SequencePlan) -> SequenceAttention:
        """What the processors read during this sequence's pipeline call (passed with the call)."""
        return SequenceAttention(self.num_frames, self.intervention(plan), self.share_first_frame)

    def progress(self, plan: SequencePlan) -> list[float]:
        """Progression weight a_f of each frame: (f+1)/T, or 1 everywhere with ``progression`` off."""
        return plan.retrieved.progress if self.progression else [1.0] * self.num_frames

    def initial_latents(self, seed: int) -> torch.Tensor:
        """One latent drawn from ``seed`` (on CPU, so it is the same on every device), repeated per frame;
        without a shared seed, frame f draws its own from ``seed + f``."""
        unet = self.pipe.unet
        shape = (
            1,
            unet.config.in_channels,
            self.height // self.pipe.vae_scale_factor,
            self.width // self.pipe.vae_scale_factor,
        )
        seeds = [seed if self.shared_seed else seed + f for f in range(self.num_frames)]
        latents = [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]
        return torch.cat(latents).to(unet.device, unet.dtype)

    def render(self, plan: SequencePlan, seed: int):
        """All frames in one batched pipeline call; the intervention travels with the call, so generators
        sharing the pipeline never see each other's."""
        return self.pipe(
            prompt=plan.prompts,
            height=self.height,
            width=self.width,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            latents=self.initial_latents(seed),
            generator=torch.Generator().manual_seed(seed),
            output_type="pil",
            cross_attention_kwargs={"sequence": self.attention(plan)},
        )

    def generate(self, cause: str, seed: int) -> GeneratedSequence:
        plan = self.plan(cause)
        output = self.render(plan, seed)
        return GeneratedSequence(list(output.images), self.record(plan, seed, output.nsfw_content_detected))

    def record(self, plan: SequencePlan, seed: int, nsfw: list[bool] | None) -> dict:
        """The JSON record of one sequence (DESIGN 6.5)."""
        retrieved, progress = plan.retrieved, self.progress(plan)
        frames = [
            {
                "frame": f,
                "effect": plan.effects[f],
                "bank_index": retrieved.bank_indices[f],
                "score": retrieved.scores[f],
                "t_k": retrieved.positions[f],
                "progress": progress[f],
                "prompt": plan.prompts[f],
            }
            for f in range(self.num_frames)
        ]
        return {
            "cause": plan.cause,
            "link_type": self.link_type,
            "frames": frames,
            "lambda": self.lam,
            "top_k": self.top_k,
            "num_frames": self.num_frames,
            "retrieval": self.retrieval,
            "template": self.template,
            "seed": seed,
            "guidance_scale": self.guidance_scale,
            "num_inference_steps": self.num_inference_steps,
            "height": self.height,
            "width": self.width,
            "share_first_frame": self.share_first_frame,
            "progression": self.progression,
            "shared_seed": self.shared_seed,
            "models": {
                "diffusion": self.pipe.name_or_path,
                "scheduler": type(self.pipe.scheduler).__name__,
                "encoder": self.encoder_identity,
                "adapter": str(self.folder.path),
            },
            "adapter_sha256": self.folder.adapter_sha256,
            "effect_bank_sha256": self.folder.bank_sha256,
            "nsfw_content_detected": nsfw,
        }

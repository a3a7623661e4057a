"""Cause -> an ordered sequence of frames of one subject (DESIGN 6.2-6.5), on diffusers' StableDiffusionPipeline.

The adapter runs once per sequence, in its own encoder space: it predicts the effect direction (for
retrieval and ordering) and the gates and bias (for the UNet). Only token spans, gates and bias reach the
UNet, as an argument of the pipeline call that its cross-attention processors read; the pipeline renders
all T frames in ONE batched call from the same initial latent, so the subject's identity comes from the
shared noise and prompt prefix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from diffusers import StableDiffusionPipeline

from causaldreamer.adapter import LINK_TYPES, AdapterOutput
from causaldreamer.diffusion.adapter_folder import AdapterFolder
from causaldreamer.diffusion.processor import (
    CrossAttentionIntervention,
    SequenceAttention,
    install_causal_processors,
)
from causaldreamer.diffusion.sequence_files import GeneratedSequence
from causaldreamer.diffusion.settings import DEFAULTS, GenerationSettings, check_cause
from causaldreamer.diffusion.spans import frame_prompts_and_spans
from causaldreamer.encoders import TextEncoder
from causaldreamer.errors import UserError
from causaldreamer.retrieval import RetrievedSequence, retrieve_sequence


@dataclass
class SequencePlan:
    """Everything decided before denoising: the adapter's outputs, the effects and prompts of the frames."""

    cause: str
    adapter_output: AdapterOutput  # batch of 1, on the CPU
    retrieved: RetrievedSequence
    effects: list[str]  # per frame, in temporal order
    prompts: list[str]  # per frame
    span_ids: torch.Tensor  # [T, tokenizer.model_max_length]


class CausalSequenceGenerator:
    """Reusable across causes: load the pipeline and adapter once, then call ``generate(cause, seed)``.

    ``settings`` are taken as they come: ``check_settings`` checks them once per run, before any model
    loads (``causaldreamer.methods.causaldreamer.build_causaldreamer`` does both). ``self.settings`` holds
    them as used: lambda and template filled in from the adapter, the size from the model.
    """

    def __init__(
        self,
        pipe: StableDiffusionPipeline,
        adapter_folder: AdapterFolder,
        encoder: TextEncoder,
        settings: GenerationSettings = DEFAULTS,
    ):
        bank, adapter = adapter_folder.bank, adapter_folder.adapter
        self.encoder_identity = encoder.identity  # a digest of the weights: computed once
        if bank.encoder != self.encoder_identity or adapter.dim != encoder.dim:
            raise UserError(
                f"the adapter's effect bank was encoded with {bank.encoder} (d={bank.dim}) but the encoder is "
                f"{self.encoder_identity} (d={encoder.dim}); choose the encoder the adapter was trained with"
            )
        self.pipe, self.folder, self.encoder = pipe, adapter_folder, encoder
        self.adapter, self.bank = adapter.eval(), bank
        default_size = pipe.unet.config.sample_size * pipe.vae_scale_factor
        self.provenance = settings.provenance(adapter)  # where lambda and the template came from
        self.settings = dataclasses.replace(
            settings.for_adapter(adapter),
            height=settings.height or default_size,
            width=settings.width or default_size,
        )
        install_causal_processors(pipe.unet, adapter.num_heads)

    @torch.inference_mode()
    def plan(self, cause: str) -> SequencePlan:
        """Adapter (once, on its device), retrieval and temporal order in the encoder space (on the CPU),
        prompts and their spans."""
        s, cause = self.settings, check_cause(cause)
        cause_embedding = self.encoder.encode([cause]).to(self.bank.embeddings.dtype).cpu()
        device = next(self.adapter.parameters()).device
        link = torch.tensor([LINK_TYPES.index(s.link_type)], device=device)
        output = self.adapter(cause_embedding.to(device), link)
        output = AdapterOutput(**{f.name: getattr(output, f.name).cpu() for f in dataclasses.fields(output)})
        retrieved = retrieve_sequence(
            cause_embedding[0], output.effect[0], self.bank.embeddings, s.num_frames, s.top_k, s.retrieval
        )
        effects = [self.bank.texts[i] for i in retrieved.bank_indices]
        prompts, span_ids = frame_prompts_and_spans(self.pipe.tokenizer, s.template, cause, effects)
        return SequencePlan(cause, output, retrieved, effects, prompts, span_ids)

    def intervention(self, plan: SequencePlan) -> CrossAttentionIntervention:
        """The conditional rows the processors use: one cause's gates and bias for every frame, each frame
        with its own spans and progression weight."""
        device, frames = self.pipe.unet.device, self.settings.num_frames
        output = plan.adapter_output
        return CrossAttentionIntervention(
            span_ids=plan.span_ids.to(device),
            q_gate=output.q_gate.expand(frames, -1).to(device),
            k_gate=output.k_gate.expand(frames, -1, -1).to(device),
            bias=output.bias.expand(frames, -1, -1).to(device),
            progress=torch.tensor(self.progress(plan), device=device),
            lam=self.settings.lam,
        )

    def attention(self, plan: SequencePlan) -> SequenceAttention:
        """What the processors read during this sequence's pipeline call (passed with the call)."""
        s = self.settings
        return SequenceAttention(s.num_frames, self.intervention(plan), s.share_first_frame)

    def progress(self, plan: SequencePlan) -> list[float]:
        """Progression weight a_f of each frame: (f+1)/T, or 1 everywhere with ``progression`` off."""
        s = self.settings
        return plan.retrieved.progress if s.progression else [1.0] * s.num_frames

    def initial_latents(self, seed: int) -> torch.Tensor:
        """One latent drawn from ``seed`` (on CPU, so it is the same on every device), repeated per frame;
        without a shared seed, frame f draws its own from ``seed + f``."""
        s, unet = self.settings, self.pipe.unet
        shape = (
            1,
            unet.config.in_channels,
            s.height // self.pipe.vae_scale_factor,
            s.width // self.pipe.vae_scale_factor,
        )
        seeds = [seed if s.shared_seed else seed + f for f in range(s.num_frames)]
        latents = [torch.randn(shape, generator=torch.Generator().manual_seed(one)) for one in seeds]
        return torch.cat(latents).to(unet.device, unet.dtype)

    def render(self, plan: SequencePlan, seed: int):
        """All frames in one batched pipeline call; the intervention travels with the call, so generators
        sharing the pipeline never see each other's."""
        s = self.settings
        return self.pipe(
            prompt=plan.prompts,
            height=s.height,
            width=s.width,
            num_inference_steps=s.num_inference_steps,
            guidance_scale=s.guidance_scale,
            latents=self.initial_latents(seed),
            generator=torch.Generator().manual_seed(seed),
            output_type="pil",
            cross_attention_kwargs={"sequence": self.attention(plan)},
        )

    def generate(self, cause: str, seed: int) -> GeneratedSequence:
        plan = self.plan(cause)
        output = self.render(plan, seed)
        return GeneratedSequence(list(output.images), self.record(plan, seed, output.nsfw_content_detected))

    def shared_record(self) -> dict:
        """What every sequence of this generator shares: its settings as used, its models and the adapter's
        checksums. A rerun reuses a folder whose record holds all of it."""
        return self.settings.record() | {
            "models": {
                "diffusion": self.pipe.name_or_path,
                "scheduler": type(self.pipe.scheduler).__name__,
                "encoder": self.encoder_identity,
                "adapter": str(self.folder.path),
            },
            "adapter_sha256": self.folder.adapter_sha256,
            "effect_bank_sha256": self.folder.bank_sha256,
        }

    def record(self, plan: SequencePlan, seed: int, nsfw: list[bool] | None) -> dict:
        """The JSON record of one sequence (DESIGN 6.5): cause, seed and each frame's effect, then the
        shared settings and where lambda and the template came from (provenance: a sequence made at the
        same values is reused whichever way they were chosen)."""
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
            for f in range(self.settings.num_frames)
        ]
        return {
            "cause": plan.cause,
            "seed": seed,
            "frames": frames,
            **self.shared_record(),
            **self.provenance,
            "nsfw_content_detected": nsfw,
        }

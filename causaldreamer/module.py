"""LightningModule: trains the causal adapter on cached text embeddings (DESIGN 4-7).

The frozen encoder never appears here: batches are cached tensors. Validation and test rank the gold
effect against the whole effect bank, for the adapter and for the zero-shot baseline (e_hat = c);
validation also scores e-CARE's free-form pairs, and logs ``val/selection``, the number checkpoints
and sweeps select on (docs/metrics.md).
"""

from __future__ import annotations

import math
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import WandbLogger
from torch import nn

from causaldreamer import losses
from causaldreamer.adapter import CausalAdapter
from causaldreamer.checkpoints import check_adapter_dim
from causaldreamer.data.datamodule import SOURCES
from causaldreamer.errors import UserError
from causaldreamer.metrics.retrieval import BankRetrieval, TwoChoiceAccuracy

DEFAULT_SELECTION = ("recall@5", "ecare/accuracy")


class CausalAdapterModule(L.LightningModule):
    def __init__(
        self,
        adapter: CausalAdapter,
        lam: float = 0.7,
        loss_weights: dict | None = None,
        margin: float = 0.2,
        temperature: float = 0.07,
        min_temperature: float = 0.01,
        negatives: str = "bank",
        bank_scope: Literal["joint", "per_source"] = "per_source",
        selection: list[str] | tuple[str, ...] = DEFAULT_SELECTION,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        warmup_steps: int = 500,
        min_lr: float = 1e-6,
        table_examples: int = 8,
    ):
        super().__init__()
        if negatives not in ("batch", "bank"):
            raise UserError(f"model.negatives must be 'batch' or 'bank', got {negatives!r}")
        if not 0 < min_temperature <= temperature:
            raise UserError(
                f"model.min_temperature must be in (0, model.temperature={temperature}], got {min_temperature}"
            )
        if not math.isfinite(float(lam)):
            raise UserError(f"model.lam must be a finite number, got {lam}")
        if bank_scope not in ("joint", "per_source"):
            raise UserError(f"model.bank_scope must be 'joint' or 'per_source', got {bank_scope!r}")
        if not selection:
            raise UserError("model.selection is empty; name at least one metric, e.g. [recall@5]")
        self.save_hyperparameters(ignore=["adapter"])
        self.adapter = adapter
        self.weights = {"delta": 1.0, "triplet": 0.5, "retrieval": 10.0, "gate": 1.0, **(loss_weights or {})}
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)))
        self.gate_logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)))
        self.max_logit_scale = math.log(1 / min_temperature)
        self.val_retrieval, self.val_zero_shot = BankRetrieval(), BankRetrieval()
        self.test_retrieval, self.test_zero_shot = BankRetrieval(), BankRetrieval()
        self.ecare_retrieval = BankRetrieval(by_seen=False)
        self.ecare_zero_shot = BankRetrieval(by_seen=False)
        self.ecare_choice, self.ecare_zero_shot_choice = TwoChoiceAccuracy(), TwoChoiceAccuracy()

    def setup(self, stage: str) -> None:
        self.attach_bank(self.trainer.datamodule)

    def attach_bank(self, datamodule) -> None:
        """Take the effect banks and the seen-in-training mask from the datamodule (buffers, not saved)."""
        self.register_buffer("bank", datamodule.bank.embeddings, persistent=False)
        self.register_buffer("seen_effects", datamodule.seen_effects, persistent=False)
        # The bank-softmax loss ranks against the effects seen in training only (of every source): a
        # sub-bank, each entry's source, and the map from effect index to its row (-1: never trained on).
        seen = datamodule.seen_effects
        self.register_buffer("train_bank", datamodule.effects.embeddings[seen], persistent=False)
        # The effect table lists each source's effects together, so each source owns one slice of the
        # sub-bank; with one source trained on, per_source is the joint bank softmax.
        per_source = torch.bincount(datamodule.effect_source[seen], minlength=len(SOURCES))
        self.source_bounds = [0, *per_source.cumsum(0).tolist()]
        self.sources_trained = int((per_source > 0).sum())
        train_row = torch.full((len(seen),), -1, dtype=torch.long)
        train_row[seen] = torch.arange(int(seen.sum()))
        self.register_buffer("train_bank_row", train_row, persistent=False)
        self.register_buffer("ecare_bank", datamodule.ecare_bank, persistent=False)
        self.bank_texts = datamodule.bank.texts
        if datamodule.bank.dim != self.adapter.dim:
            raise UserError(
                f"the encoder gives {datamodule.bank.dim}-d embeddings but the adapter is {self.adapter.dim}-d; "
                "train with the encoder the adapter was built for"
            )

    def contrastive_scale(self, log_scale: torch.Tensor) -> torch.Tensor:
        """1 / temperature from its learnable log (kept in range by ``optimizer_step``)."""
        return log_scale.exp()

    def optimizer_step(self, *args, **kwargs) -> None:
        """The step, then each log scale clamped in place so that T >= min_temperature, as CLIP does: a
        clamp inside the loss has zero gradient beyond it, and AdamW's momentum would pin T at the floor."""
        super().optimizer_step(*args, **kwargs)
        with torch.no_grad():
            for log_scale in (self.logit_scale, self.gate_logit_scale):
                log_scale.clamp_(max=self.max_logit_scale)

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        """Clipping by the global norm (``trainer.gradient_clip_val``) as ``clip_grad_norm_`` does: scaled
        by min(1, max / (norm + 1e-6)), the norm from one BLAS dot product a gradient, at about 0.6x the
        cost of Lightning's path through ``clip_grad_norm_`` on the adapter's 19 small tensors
        (docs/training.md, "Speed"). Clipping by value goes through Lightning's own."""
        if not gradient_clip_val or gradient_clip_algorithm not in (None, "norm"):
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            norm = torch.stack([torch.dot(g.reshape(-1), g.reshape(-1)) for g in grads]).sum().sqrt()
            torch._foreach_mul_(grads, (gradient_clip_val / (norm + 1e-6)).clamp(max=1.0))

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        """Batches are built on the CPU: on a CPU run, skip Lightning's walk over every tensor of each."""
        if device.type == "cpu":
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def total_loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum of ``loss_terms``."""
        return sum(self.weights[name] * value for name, value in terms.items())

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The DESIGN 6.1 losses of one batch, by name; a loss of weight 0 is not computed."""
        out = self.adapter(batch["cause"], batch["link_type"])
        w, terms = self.weights, {}
        same = losses.same_effect(batch["effect_id"])  # shared by the in-batch losses
        if w["delta"]:
            terms["delta"] = losses.delta_loss(out, batch["cause"], batch["effect"])
        if w["triplet"]:
            terms["triplet"] = losses.triplet_loss(
                out.effect, batch["effect"], batch["effect_id"], self.hparams.margin, same
            )
        if w["retrieval"]:
            scale = self.contrastive_scale(self.logit_scale)
            if self.hparams.negatives == "batch":
                terms["retrieval"] = losses.retrieval_loss(
                    out.effect, batch["effect"], batch["effect_id"], scale, same=same
                )
            elif self.hparams.bank_scope == "per_source" and self.sources_trained > 1:
                terms["retrieval"] = losses.per_source_bank_loss(
                    out.effect,
                    self.train_bank_row[batch["effect_id"]],
                    batch["source"],
                    scale,
                    self.train_bank,
                    self.source_bounds,
                )
            else:
                rows = self.train_bank_row[batch["effect_id"]]
                terms["retrieval"] = losses.retrieval_loss(
                    out.effect, batch["effect"], rows, scale, self.train_bank
                )
        if w["gate"]:
            terms["gate"] = losses.gate_loss(
                out,
                batch["token_states"],
                batch["token_spans"],
                batch["effect"],
                batch["effect_id"],
                self.hparams.lam,
                self.contrastive_scale(self.gate_logit_scale),
                same,
            )
        return terms

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        terms = self.loss_terms(batch)
        total = self.total_loss(terms)
        # Logging every step costs more than the step itself at this size: log only the steps Lightning
        # writes out (global_step + 1 a multiple of log_every_n_steps), so each value carries its own step.
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            values = {f"train/{name}": value.detach() for name, value in terms.items()}
            values["train/loss"] = total.detach()
            values["train/temperature"] = 1 / self.contrastive_scale(self.logit_scale.detach())
            self.log_dict(values, on_step=True, on_epoch=False)
        return total

    def _evaluate(self, batch, retrieval: BankRetrieval, zero_shot: BankRetrieval) -> torch.Tensor:
        out = self.adapter(batch["cause"], batch["link_type"])
        seen = self.seen_effects[batch["effect_id"]]
        retrieval.update(out.effect, self.bank, batch["effect_id"], seen, batch["row"])
        zero_shot.update(batch["cause"], self.bank, batch["effect_id"], seen, batch["row"])
        return out.effect

    def _evaluate_free_form(self, batch: dict[str, torch.Tensor]) -> None:
        """e-CARE: the right pair against the wrong one, scored cos(e_hat(cause), effect); and the gold
        effect's rank among all e-CARE validation effects."""
        effect_pred = self.adapter(batch["cause"], batch["link_type"]).effect
        wrong_pred = self.adapter(batch["wrong_cause"], batch["link_type"]).effect
        rows = batch["row"]
        for query, wrong_query, choice, retrieval in (
            (effect_pred, wrong_pred, self.ecare_choice, self.ecare_retrieval),
            (batch["cause"], batch["wrong_cause"], self.ecare_zero_shot_choice, self.ecare_zero_shot),
        ):
            right = (query * batch["effect"]).sum(-1)
            choice.update(right, (wrong_query * batch["wrong_effect"]).sum(-1), rows)
            retrieval.update(query, self.ecare_bank, batch["effect_id"], rows=rows)

    def validation_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if dataloader_idx == 1:  # the datamodule's second val loader: e-CARE
            self._evaluate_free_form(batch)
            return
        effect_pred = self._evaluate(batch, self.val_retrieval, self.val_zero_shot)
        if batch_idx == 0:
            self._log_examples(batch, effect_pred)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_retrieval, self.test_zero_shot)

    def _split_values(
        self, split: str, prefix: str, adapter: list, zero_shot: list
    ) -> dict[str, torch.Tensor]:
        """``{split}/{prefix}{metric}`` of the adapter's metrics and ``{split}/{prefix}zero_shot/{metric}``
        of the zero-shot ones; each metric is reset."""
        values = {}
        for name, metrics in ((prefix, adapter), (f"{prefix}zero_shot/", zero_shot)):
            for metric in metrics:
                values.update({f"{split}/{name}{k}": v for k, v in metric.compute().items()})
                metric.reset()
        return values

    def on_validation_epoch_end(self) -> None:
        values = self._split_values("val", "", [self.val_retrieval], [self.val_zero_shot])
        if self.ecare_bank is not None:
            values |= self._split_values(
                "val",
                "ecare/",
                [self.ecare_retrieval, self.ecare_choice],
                [self.ecare_zero_shot, self.ecare_zero_shot_choice],
            )
        values["val/selection"] = self.selection_score(values)
        self.log_dict(values)

    def selection_score(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """The mean, over the metrics named in ``model.selection``, of the adapter's gain over zero-shot:
        ``recall@5`` gains val/recall@5 - val/zero_shot/recall@5, ``ecare/accuracy`` gains
        val/ecare/accuracy - val/ecare/zero_shot/accuracy."""
        gains = []
        for name in self.hparams.selection:
            prefix = "ecare/" if name.startswith("ecare/") else ""
            adapter, zero_shot = f"val/{name}", f"val/{prefix}zero_shot/{name.removeprefix(prefix)}"
            if adapter not in values or zero_shot not in values:
                known = sorted(k.removeprefix("val/") for k in values if "zero_shot/" not in k)
                raise UserError(
                    f"model.selection names {name!r}, which validation does not log (e-CARE's needs "
                    f"data.ecare_dir); choose from {known}"
                )
            gains.append(values[adapter] - values[zero_shot])
        return torch.stack(gains).mean()

    def on_test_epoch_end(self) -> None:
        self.log_dict(self._split_values("test", "", [self.test_retrieval], [self.test_zero_shot]))

    def _log_examples(self, batch: dict[str, torch.Tensor], effect_pred: torch.Tensor) -> None:
        """A W&B table: a few causes with the gold effect and their top-8 retrieved effects."""
        wandb_logger = next((lg for lg in self.loggers if isinstance(lg, WandbLogger)), None)
        count = min(self.hparams.table_examples, len(effect_pred))
        if wandb_logger is None or count == 0 or self.trainer.sanity_checking:
            return
        top = torch.topk(effect_pred[:count] @ self.bank.T, 8, dim=-1).indices.tolist()
        rows = [
            [self.global_step, self.bank_texts[gold], " | ".join(self.bank_texts[i] for i in ranked)]
            for gold, ranked in zip(batch["effect_id"][:count].tolist(), top, strict=True)
        ]
        wandb_logger.log_table("val/examples", columns=["step", "gold effect", "top-8 retrieved"], data=rows)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay, fused=True
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(self.hparams.warmup_steps, total)
        floor = self.hparams.min_lr / self.hparams.lr

        def lr_factor(step: int) -> float:
            """Linear warmup from 1/warmup (never 0), then cosine to min_lr at the last step."""
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        check_adapter_dim(checkpoint, self.adapter.dim, "being loaded")

    def forward(self, cause: torch.Tensor, link_type: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.adapter(cause, link_type).effect, dim=-1)

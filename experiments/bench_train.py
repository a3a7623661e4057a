"""Per-epoch training wall time: cached embeddings (ours) vs the paper's loop that re-encodes every batch.

Same machine, same batch size, same adapter, losses and Lightning Trainer; the only difference is where
the text embeddings come from. The paper's loop runs the frozen encoder on 3 text batches per step
(causes, effects, composed prompts). Usage:

    python experiments/bench_train.py [--epochs 3] [--paper-steps 60] [--threads N]

Our epochs are timed whole; the paper's epoch is timed over ``--paper-steps`` steps (after one warm-up
step) and scaled to the epoch's step count, which the output says.
"""

from __future__ import annotations

import argparse
import os
import time
from statistics import median

import lightning as L
import torch
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from causaldreamer import losses
from causaldreamer.adapter import CausalAdapter
from causaldreamer.data.datamodule import CausalPairsDataModule, EpochShuffle
from causaldreamer.encoders import MiniLMEncoder
from causaldreamer.locations import dataset_dir
from causaldreamer.module import CausalAdapterModule
from causaldreamer.prompts import DEFAULT_TEMPLATE, compose


class EpochTimer(L.Callback):
    def __init__(self):
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, module):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        self.seconds.append(time.perf_counter() - self._start)


class TextRows(torch.utils.data.Dataset):
    """The paper's data: raw text per row, encoded inside the training step."""

    def __init__(self, datamodule: CausalPairsDataModule):
        self.effect_id = datamodule.datasets["train"].tensors["effect_id"]
        self.link_type = datamodule.datasets["train"].tensors["link_type"]
        # The same rows as our loop's (the first ones when the training split is limited).
        rows = datamodule.pairs.rows.iloc[datamodule.pairs.splits["train"][: len(self.effect_id)]]
        self.rows = list(zip(rows["cause"], rows["effect"], rows["link_type"], strict=True))

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i][0], self.rows[i][1], self.effect_id[i], self.link_type[i]


class ReencodingModule(CausalAdapterModule):
    """The paper's loop: the frozen encoder runs on every batch, then the same losses."""

    def __init__(self, datamodule: CausalPairsDataModule, **kwargs):
        super().__init__(**kwargs)
        self.datamodule, self.encoder = datamodule, datamodule.encoder

    def setup(self, stage: str) -> None:
        self.attach_bank(self.datamodule)

    def training_step(self, batch, batch_idx):
        causes, effects, effect_id, link_type = batch
        composed = [compose(DEFAULT_TEMPLATE, c, e) for c, e in zip(causes, effects, strict=True)]
        # The encoder runs in inference mode; clones are ordinary tensors the losses can use.
        cause, effect = self.encoder.encode(list(causes)).clone(), self.encoder.encode(list(effects)).clone()
        states, mask, spans = self.encoder.token_states([c[0] for c in composed], [c[1] for c in composed])
        states = states.clone()
        tensors = {
            "cause": cause,
            "effect": effect,
            "effect_id": effect_id,
            "link_type": link_type,
            "token_states": states,
            "token_spans": spans.masked_fill(~mask, -1),
        }
        return super().training_step(tensors, batch_idx)


def timed_trainer(timer: EpochTimer, **kwargs) -> L.Trainer:
    """The default run's Trainer settings, with nothing but training timed (no validation or logging)."""
    return L.Trainer(
        accelerator="cpu",
        gradient_clip_val=1.0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer],
        **kwargs,
    )


def time_ours(datamodule, epochs: int) -> list[float]:
    timer = EpochTimer()
    module = CausalAdapterModule(CausalAdapter(dim=datamodule.encoder.dim))
    timed_trainer(timer, max_epochs=epochs).fit(module, datamodule=datamodule)
    return timer.seconds


class BareModule(L.LightningModule):
    """One 384 -> 1 linear layer on the same batches: what Lightning's loop costs by itself per step."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = torch.nn.Linear(dim, 1)

    def training_step(self, batch, batch_idx):
        return self.linear(batch["cause"]).mean()

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), fused=True)


def time_loop_floor(datamodule, epochs: int) -> list[float]:
    timer = EpochTimer()
    timed_trainer(timer, max_epochs=epochs).fit(BareModule(datamodule.encoder.dim), datamodule=datamodule)
    return timer.seconds


def ms_per_call(run, batches: list[dict], warmup: int = 20) -> float:
    """Median over 3 passes of the mean milliseconds of ``run(batch)`` over ``batches``."""
    for batch in batches[:warmup]:
        run(batch)
    passes = []
    for _ in range(3):
        start = time.perf_counter()
        for batch in batches:
            run(batch)
        passes.append(1e3 * (time.perf_counter() - start) / len(batches))
    return median(passes)


def module_with_bank(datamodule) -> CausalAdapterModule:
    """A fresh default module with the effect bank attached, for the loops outside Lightning."""
    module = CausalAdapterModule(CausalAdapter(dim=datamodule.encoder.dim))
    module.attach_bank(datamodule)
    return module


def time_step_parts(datamodule, compile_losses: bool) -> dict[str, float]:
    """Milliseconds per step of the parts of a training step, in plain PyTorch loops (no Lightning)."""
    module = module_with_bank(datamodule)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, fused=True)
    loader = datamodule.train_dataloader()
    batches = list(loader) * max(1, 250 // len(loader))

    def adapter_forward_backward(batch):
        out = module.adapter(batch["cause"], batch["link_type"])
        sum(t.sum() for t in (out.effect, out.q_gate, out.k_gate, out.bias)).backward()

    def bank_softmax(batch):
        effect_pred = batch["cause"].clone().requires_grad_()
        rows = module.train_bank_row[batch["effect_id"]]
        losses.retrieval_loss(
            effect_pred,
            batch["effect"],
            rows,
            module.contrastive_scale(module.logit_scale),
            module.train_bank,
        ).backward()

    def full_step(loss_terms):
        def step(batch):
            terms = loss_terms(batch)
            optimizer.zero_grad()
            module.total_loss(terms).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()

        return step

    parts = {
        "adapter forward + backward": ms_per_call(adapter_forward_backward, batches),
        "bank softmax forward + backward": ms_per_call(bank_softmax, batches),
        "fused AdamW step": ms_per_call(lambda _: optimizer.step(), batches),
        "gradient clipping": ms_per_call(lambda _: torch.nn.utils.clip_grad_norm_(params, 1.0), batches),
        "all losses, clipping and AdamW": ms_per_call(full_step(module.loss_terms), batches),
    }
    if compile_losses:
        start = time.perf_counter()
        compiled = full_step(torch.compile(module.loss_terms))
        compiled(batches[0])
        parts[f"the same, losses compiled ({time.perf_counter() - start:.0f} s to compile)"] = ms_per_call(
            compiled, batches
        )
    return parts


def arithmetic_floor(datamodule) -> tuple[float, float]:
    """(MFLOP of one default training step, counted by torch's FLOP counter; GFLOP/s of this CPU on the
    adapter's largest matmul at this batch size). Their ratio is the step time with zero overhead."""
    module = module_with_bank(datamodule)
    batch = next(iter(datamodule.train_dataloader()))
    with FlopCounterMode(display=False) as counter:
        module.total_loss(module.loss_terms(batch)).backward()
    rows, hidden = len(batch["cause"]), module.adapter.context[1]
    x, w = torch.randn(rows, hidden.in_features), hidden.weight.detach().T.contiguous()
    reps = 2000
    ms = ms_per_call(lambda _: x @ w, [None] * reps, warmup=100)
    gflops = 2 * rows * hidden.in_features * hidden.out_features / (ms * 1e-3) / 1e9
    return counter.get_total_flops() / 1e6, gflops


def time_paper(datamodule, steps: int) -> tuple[float, int]:
    """Seconds per epoch of the re-encoding loop, from ``steps`` timed steps; and the epoch's step count."""
    dataset = TextRows(datamodule)
    loader = DataLoader(
        dataset, batch_size=datamodule.batch_size, sampler=EpochShuffle(dataset, 0), drop_last=True
    )
    timer = EpochTimer()
    module = ReencodingModule(datamodule, adapter=CausalAdapter(dim=datamodule.encoder.dim))
    timed_trainer(timer, max_epochs=1, limit_train_batches=steps + 1).fit(module, train_dataloaders=loader)
    return timer.seconds[0] * len(loader) / (steps + 1), len(loader)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs of our loop to time")
    parser.add_argument("--paper-steps", type=int, default=60, help="steps of the paper's loop to time")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--limit-train", type=int, default=None, help="the first N training rows only")
    parser.add_argument(
        "--ecare-batch-size",
        type=int,
        default=0,
        help="e-CARE rows added to each batch (data=causallite10k_ecare: 16)",
    )
    parser.add_argument("--compile", action="store_true", help="also time the step with torch.compile")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data_dir = os.environ.get("CAUSALDREAMER_DATA_DIR", "../shared/data/causallite10k")
    cache_dir = os.environ.get("CAUSALDREAMER_CACHE_DIR", ".cache/causaldreamer")
    datamodule = CausalPairsDataModule(
        data_dir,
        cache_dir,
        MiniLMEncoder(),
        batch_size=args.batch_size,
        limit_train=args.limit_train,
        ecare_dir=dataset_dir("ecare") if args.ecare_batch_size else None,
        ecare_batch_size=args.ecare_batch_size,
    )
    datamodule.prepare_data()
    datamodule.setup("fit")  # builds the embedding cache once, outside the timings
    ours = time_ours(datamodule, args.epochs)
    floor = median(time_loop_floor(datamodule, args.epochs))
    parts = time_step_parts(datamodule, args.compile)
    mflop, gflops = arithmetic_floor(datamodule)
    paper, steps = time_paper(datamodule, args.paper_steps)
    ours_epoch = median(ours)
    print(f"threads={args.threads} batch_size={args.batch_size} steps_per_epoch={steps}")
    print(
        f"ours (cached embeddings): {ours_epoch:.3f} s/epoch (median of {len(ours)}: {[round(s, 3) for s in ours]})"
    )
    print(f"paper (re-encode every batch): {paper:.2f} s/epoch (from {args.paper_steps} timed steps)")
    print(f"speed-up: {paper / ours_epoch:.1f}x")
    print(
        f"Lightning's loop alone (a 384->1 linear layer on the same batches): {floor:.3f} s/epoch, "
        f"{1e3 * floor / steps:.2f} ms/step, {200 * floor:.0f} s for 200 epochs"
    )
    print(f"default schedule (200 epochs) at our rate: {200 * ours_epoch:.0f} s of training")
    floor_ms = mflop / gflops
    print(
        f"arithmetic of one step: {mflop:.0f} MFLOP (torch's FLOP counter) at {gflops:.0f} GFLOP/s (this CPU, "
        f"the adapter's largest matmul at this batch size): {floor_ms:.2f} ms/step, "
        f"{floor_ms * steps * 200 / 1e3:.0f} s for 200 epochs with no overhead at all"
    )
    print("a step's parts, plain PyTorch loops over the same batches (no Lightning):")
    for name, ms in parts.items():
        print(f"  {name}: {ms:.2f} ms/step")


if __name__ == "__main__":
    main()

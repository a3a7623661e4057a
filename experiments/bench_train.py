"""Per-epoch training wall time: cached embeddings (ours) vs the paper's loop that re-encodes every batch.

Same machine, same batch size, same adapter, losses and Lightning Trainer; the only difference is where
the text embeddings come from. The paper's loop runs the frozen encoder on 3 text batches per step
(causes, effects, composed prompts). Usage:

    python experiments/bench_train.py [--epochs 3] [--paper-steps 60] [--threads N] [--also-threads M]
        [--ecare-batch-size 16] [--batch-size B] [--part-steps 250] [--device cuda] [--compile]
        [--encoder FOLDER]

Our epochs are timed whole; the paper's epoch is timed over ``--paper-steps`` steps (after one warm-up
step) and scaled to the epoch's step count, which the output says. Each epoch's CPU time is printed
beside its wall time: on a CPU shared with other jobs the wall time moves with their load, the CPU time
of a 1-thread run much less. With ``--ecare-batch-size`` the CausalLite10K-only epoch is timed too,
interleaved with the mixed one, and their ratio printed; ``--also-threads`` times our epochs at a second
thread count, interleaved with the first. ``--device cuda`` runs every loop on the GPU (timers
synchronise it); there ``--compile`` times the step compiled with and without CUDA graphs.
``--encoder`` takes a local folder of MiniLM's architecture (random weights time the same).
"""

from __future__ import annotations

import argparse
import os
import time
from statistics import median

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from causaldreamer import losses
from causaldreamer.adapter import AdapterOutput, CausalAdapter
from causaldreamer.data.datamodule import CausalPairsDataModule, EpochShuffle
from causaldreamer.data.embedding_cache import PAD_SPAN
from causaldreamer.encoders import MiniLMEncoder
from causaldreamer.intervention import SPAN_NONE, intervention_key_scale_and_bias, scaled_key_attention
from causaldreamer.locations import dataset_dir
from causaldreamer.module import CausalAdapterModule
from causaldreamer.prompts import DEFAULT_TEMPLATE, compose

DEVICE = torch.device("cpu")  # where every timed loop runs: --device


def synchronize() -> None:
    """Wait for the GPU's queued work, so that a clock read after it counts that work."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


class EpochTimer(L.Callback):
    """Wall seconds of each training epoch, and the process's CPU seconds in it (every thread's)."""

    def __init__(self):
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []

    def on_train_epoch_start(self, trainer, module):
        synchronize()
        self._start, self._cpu = time.perf_counter(), time.process_time()

    def on_train_epoch_end(self, trainer, module):
        synchronize()
        self.seconds.append(time.perf_counter() - self._start)
        self.cpu_seconds.append(time.process_time() - self._cpu)


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
        accelerator="gpu" if DEVICE.type == "cuda" else "cpu",
        devices=1,
        gradient_clip_val=1.0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer],
        **kwargs,
    )


def time_ours(datamodule, epochs: int) -> EpochTimer:
    timer = EpochTimer()
    module = CausalAdapterModule(CausalAdapter(dim=datamodule.encoder.dim))
    timed_trainer(timer, max_epochs=epochs).fit(module, datamodule=datamodule)
    return timer


def time_ours_interleaved(runs: dict[str, tuple], epochs: int) -> dict[str, EpochTimer]:
    """Our epochs for each (datamodule, threads) of ``runs``, one epoch of each in turn, so that a change
    in the machine's load falls on all of them alike."""
    if len(runs) == 1:
        ((name, (datamodule, threads)),) = runs.items()
        torch.set_num_threads(threads)
        return {name: time_ours(datamodule, epochs)}
    timers = {name: EpochTimer() for name in runs}
    for _ in range(epochs):
        for name, (datamodule, threads) in runs.items():
            torch.set_num_threads(threads)
            one = time_ours(datamodule, 1)
            timers[name].seconds += one.seconds
            timers[name].cpu_seconds += one.cpu_seconds
    return timers


class BareModule(L.LightningModule):
    """One 384 -> 1 linear layer on the same batches: what Lightning's loop costs by itself per step."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = torch.nn.Linear(dim, 1)

    def training_step(self, batch, batch_idx):
        return self.linear(batch["cause"]).mean()

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), fused=True)


def time_loop_floor(datamodule, epochs: int) -> EpochTimer:
    timer = EpochTimer()
    timed_trainer(timer, max_epochs=epochs).fit(BareModule(datamodule.encoder.dim), datamodule=datamodule)
    return timer


def ms_per_call(run, batches: list[dict], warmup: int = 20) -> float:
    """Median over 3 passes of the mean milliseconds of ``run(batch)`` over ``batches``."""
    for batch in batches[:warmup]:
        run(batch)
    passes = []
    for _ in range(3):
        synchronize()
        start = time.perf_counter()
        for batch in batches:
            run(batch)
        synchronize()
        passes.append(1e3 * (time.perf_counter() - start) / len(batches))
    return median(passes)


def module_with_bank(datamodule) -> CausalAdapterModule:
    """A fresh default module with the effect bank attached, for the loops outside Lightning."""
    module = CausalAdapterModule(CausalAdapter(dim=datamodule.encoder.dim))
    module.attach_bank(datamodule)
    return module.to(DEVICE)


def on_device(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.to(DEVICE) for name, tensor in batch.items()}


def sdpa_gate_readout(out, token_states, token_spans, lam):
    """The gate loss's read-out as it was before issue 16: the SDPA intervention on transposed views."""
    batch, length, dim = token_states.shape
    heads = out.q_gate.shape[1]
    query = out.effect.view(batch, 1, heads, dim // heads).transpose(1, 2)
    keys = token_states.view(batch, length, heads, dim // heads).transpose(1, 2)
    padding = token_spans == PAD_SPAN
    pad_mask = token_states.new_zeros(batch, 1, 1, length).masked_fill(
        padding[:, None, None, :], float("-inf")
    )
    spans = token_spans.masked_fill(padding, SPAN_NONE)
    # The UNet's form, gates folded into the keys (intervention_attention now takes the single-row one).
    key_scale, logit_bias = intervention_key_scale_and_bias(spans, out.q_gate, out.k_gate, out.bias, lam)
    z = scaled_key_attention(query, keys, keys, key_scale, logit_bias, pad_mask)
    return z.transpose(1, 2).reshape(batch, dim)


def time_step_parts(datamodule, compile_losses: bool, steps: int) -> dict[str, float]:
    """Milliseconds per step of the parts of a training step, in plain PyTorch loops (no Lightning),
    each over about ``steps`` batches (the epoch's, repeated or cut).

    Where issue 16 changed a part, the part as it was is timed beside it ("before")."""
    module = module_with_bank(datamodule)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, fused=True)
    loader = datamodule.train_dataloader()
    batches = [on_device(b) for b in loader]
    batches = (batches * max(1, steps // len(batches)))[: max(steps, 1)]
    with torch.no_grad():  # the adapter's outputs as leaves: each loss's own forward and backward
        outputs = [module.adapter(b["cause"], b["link_type"]) for b in batches]
    leaves = [
        (b, AdapterOutput(*(t.clone().requires_grad_() for t in vars(out).values())))
        for b, out in zip(batches, outputs, strict=True)
    ]

    def epoch_of_batches(_):
        for _batch in loader:
            pass

    def adapter_forward_backward(batch):
        out = module.adapter(batch["cause"], batch["link_type"])
        sum(t.sum() for t in (out.effect, out.q_gate, out.k_gate, out.bias)).backward()

    def bank_softmax(item):
        batch, out = item
        rows = module.train_bank_row[batch["effect_id"]]
        scale = module.contrastive_scale(module.logit_scale)
        if module.sources_trained > 1:
            loss = losses.per_source_bank_loss(
                out.effect, rows, batch["source"], scale, module.train_bank, module.source_bounds
            )
        else:
            loss = losses.retrieval_loss(out.effect, None, rows, scale, module.train_bank)
        loss.backward()

    def gate(readout):
        def run(item):
            batch, out = item
            z = F.normalize(readout(out, batch["token_states"], batch["token_spans"], 0.7), dim=-1)
            scale = module.contrastive_scale(module.gate_logit_scale)
            losses.multi_positive_info_nce(
                z, batch["effect"], losses.same_effect(batch["effect_id"]), scale
            ).backward()

        return run

    def full_step(loss_terms):
        def step(batch):
            terms = loss_terms(batch)
            optimizer.zero_grad()
            module.total_loss(terms).backward()
            module.configure_gradient_clipping(optimizer, 1.0)
            optimizer.step()

        return step

    parts = {
        "batch gathering (the DataLoader's batches)": ms_per_call(epoch_of_batches, [None] * 3, warmup=1)
        / len(loader),
        "adapter forward + backward": ms_per_call(adapter_forward_backward, batches),
        "bank softmax forward + backward": ms_per_call(bank_softmax, leaves),
        "gate loss forward + backward": ms_per_call(gate(losses.gate_readout), leaves),
        "gate loss forward + backward, through SDPA (before)": ms_per_call(gate(sdpa_gate_readout), leaves),
        "fused AdamW step": ms_per_call(lambda _: optimizer.step(), batches),
        "gradient clipping": ms_per_call(
            lambda _: module.configure_gradient_clipping(optimizer, 1.0), batches
        ),
        "gradient clipping, clip_grad_norm_ (before)": ms_per_call(
            lambda _: torch.nn.utils.clip_grad_norm_(params, 1.0), batches
        ),
        "all losses, clipping and AdamW": ms_per_call(full_step(module.loss_terms), batches),
    }
    if not compile_losses:
        return parts
    # CUDA graphs ("reduce-overhead") replay a whole step's kernels in one launch: a GPU's remedy for a
    # step of many small operations.
    modes = {"": "default", ", CUDA graphs": "reduce-overhead"} if DEVICE.type == "cuda" else {"": "default"}
    for label, mode in modes.items():
        start = time.perf_counter()
        compiled = full_step(torch.compile(module.loss_terms, mode=mode))
        for batch in batches[:3]:
            compiled(batch)
        synchronize()
        name = f"the same, losses compiled{label} ({time.perf_counter() - start:.0f} s to compile)"
        parts[name] = ms_per_call(compiled, batches)
    return parts


def arithmetic_floor(datamodule) -> tuple[float, float]:
    """(MFLOP of one default training step, counted by torch's FLOP counter; GFLOP/s of the device on the
    adapter's largest matmul at this batch size). Their ratio is the step time with zero overhead."""
    module = module_with_bank(datamodule)
    batch = on_device(next(iter(datamodule.train_dataloader())))
    with FlopCounterMode(display=False) as counter:
        module.total_loss(module.loss_terms(batch)).backward()
    rows, hidden = len(batch["cause"]), module.adapter.context[1]
    x = torch.randn(rows, hidden.in_features, device=DEVICE)
    w = hidden.weight.detach().T.contiguous()
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


def make_datamodule(args, ecare_batch_size: int) -> CausalPairsDataModule:
    data_dir = os.environ.get("CAUSALDREAMER_DATA_DIR", "../shared/data/causallite10k")
    cache_dir = os.environ.get("CAUSALDREAMER_CACHE_DIR", ".cache/causaldreamer")
    datamodule = CausalPairsDataModule(
        data_dir,
        cache_dir,
        MiniLMEncoder(args.encoder),
        batch_size=args.batch_size,
        limit_train=args.limit_train,
        ecare_dir=dataset_dir("ecare") if ecare_batch_size else None,
        ecare_batch_size=ecare_batch_size,
    )
    datamodule.prepare_data()
    datamodule.setup("fit")  # builds the embedding cache once, outside the timings
    return datamodule


def epoch_line(name: str, timer: EpochTimer, steps: int) -> str:
    wall, cpu = median(timer.seconds), median(timer.cpu_seconds)
    return (
        f"{name}: {wall:.3f} s/epoch (median of {len(timer.seconds)}: {[round(s, 3) for s in timer.seconds]}), "
        f"{1e3 * wall / steps:.2f} ms/step; CPU {cpu:.3f} s/epoch, {1e3 * cpu / steps:.2f} ms/step"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs of our loop to time")
    parser.add_argument("--paper-steps", type=int, default=60, help="steps of the paper's loop to time")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--also-threads",
        type=int,
        default=None,
        help="also time our epochs at this thread count, interleaved",
    )
    parser.add_argument("--limit-train", type=int, default=None, help="the first N training rows only")
    parser.add_argument(
        "--ecare-batch-size",
        type=int,
        default=0,
        help="e-CARE rows added to each batch (data=causallite10k_ecare: 16); the CausalLite10K-only "
        "epoch is then timed beside it",
    )
    parser.add_argument("--compile", action="store_true", help="also time the step with torch.compile")
    parser.add_argument(
        "--part-steps", type=int, default=250, help="batches each part of a step is timed over"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the loops run")
    parser.add_argument("--encoder", default=None, help="a local MiniLM folder (default: the packaged one)")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    datamodule = make_datamodule(args, args.ecare_batch_size)
    runs = {"ours (cached embeddings)": (datamodule, args.threads)}
    if args.also_threads:
        runs[f"ours at {args.also_threads} thread{'s' if args.also_threads != 1 else ''}"] = (
            datamodule,
            args.also_threads,
        )
    alone = make_datamodule(args, 0) if args.ecare_batch_size else datamodule
    if args.ecare_batch_size:
        runs["ours, CausalLite10K only"] = (alone, args.threads)
    timers = time_ours_interleaved(runs, args.epochs)
    torch.set_num_threads(args.threads)
    floor_timer = time_loop_floor(datamodule, args.epochs)
    parts = time_step_parts(datamodule, args.compile, args.part_steps)
    mflop, gflops = arithmetic_floor(datamodule)
    paper, steps = time_paper(alone, args.paper_steps)  # the paper's loop knows no e-CARE
    ours = timers["ours (cached embeddings)"]
    ours_epoch, floor = median(ours.seconds), median(floor_timer.seconds)
    rows = args.batch_size + args.ecare_batch_size
    print(
        f"device={DEVICE.type} threads={args.threads} batch_size={args.batch_size} "
        f"ecare_batch_size={args.ecare_batch_size} steps_per_epoch={steps}"
    )
    for name, timer in timers.items():
        print(epoch_line(name, timer, steps))
    if args.ecare_batch_size:
        alone_epoch = median(timers["ours, CausalLite10K only"].seconds)
        print(f"mixed / CausalLite10K only: {ours_epoch / alone_epoch:.2f}x")
    print(f"paper (re-encode every batch): {paper:.2f} s/epoch (from {args.paper_steps} timed steps)")
    print(f"speed-up: {paper / ours_epoch:.1f}x")
    print(
        f"Lightning's loop alone (a 384->1 linear layer on the same batches): {floor:.3f} s/epoch, "
        f"{1e3 * floor / steps:.2f} ms/step, {200 * floor:.0f} s for 200 epochs"
    )
    print(f"default schedule (200 epochs) at our rate: {200 * ours_epoch:.0f} s of training")
    floor_ms, processor = mflop / gflops, "GPU" if DEVICE.type == "cuda" else "CPU"
    print(
        f"arithmetic of one step: {mflop:.0f} MFLOP (torch's FLOP counter) at {gflops:.0f} GFLOP/s "
        f"(this {processor}, the adapter's largest matmul at this batch size): {floor_ms:.2f} ms/step, "
        f"{floor_ms * steps * 200 / 1e3:.0f} s for 200 epochs with no overhead at all"
    )
    step_floor = floor_ms + 1e3 * floor / steps
    print(
        f"floor (arithmetic + Lightning's loop): {step_floor:.2f} ms/step; ours {1e3 * ours_epoch / steps:.2f} "
        f"ms/step: {1e3 * ours_epoch / steps / step_floor:.2f}x the floor ({rows} rows a step)"
    )
    print("a step's parts, plain PyTorch loops over the same batches (no Lightning):")
    for name, ms in parts.items():
        print(f"  {name}: {ms:.2f} ms/step")


if __name__ == "__main__":
    main()

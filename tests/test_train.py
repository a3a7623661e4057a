"""The main job end to end: real Hydra composition and CLI, real Trainer, offline W&B, real files."""

import csv
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import bare_trainer, compose_config, run_module

from causaldreamer.adapter import CausalAdapter
from causaldreamer.bank import EffectBank
from causaldreamer.data.datamodule import CausalPairsDataModule, EpochShuffle
from causaldreamer.data.embedding_cache import PAD_SPAN, EmbeddingCache
from causaldreamer.errors import UserError
from causaldreamer.intervention import SPAN_NONE, intervention_key_scale_and_bias, scaled_key_attention
from causaldreamer.loggers import CSVLogger
from causaldreamer.module import CausalAdapterModule
from causaldreamer.train import train


def test_smoke_run_checkpoints_exports_and_logs(train_cfg, tmp_path):
    metrics = train(train_cfg())
    for split in ("val", "test"):
        for name in ("recall@1", "recall@5", "recall@10", "mrr", "unseen/recall@10", "zero_shot/recall@5"):
            assert 0.0 <= metrics[f"{split}/{name}"] <= 1.0, f"{split}/{name}"
    for name in ("accuracy", "recall@5", "mrr", "zero_shot/accuracy", "zero_shot/recall@10"):
        assert 0.0 <= metrics[f"val/ecare/{name}"] <= 1.0, name
    gains = (metrics["val/recall@5"] - metrics["val/zero_shot/recall@5"]) + (
        metrics["val/ecare/accuracy"] - metrics["val/ecare/zero_shot/accuracy"]
    )
    assert metrics["val/selection"] == pytest.approx(gains / 2, abs=1e-6)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert len(list((tmp_path / "checkpoints").glob("epoch_*.ckpt"))) == 1  # the best by val/selection
    adapter = CausalAdapter.from_pretrained(tmp_path / "adapter")
    assert adapter.num_parameters == 1_347_752 and adapter.dim == 384
    bank = EffectBank.load(tmp_path / "adapter")
    assert len(bank) == 5131 and bank.encoder == adapter.encoder_name
    record = yaml.safe_load((tmp_path / "run.yaml").read_text())
    assert len(record["git_sha"]) >= 7 and record["config"]["model"]["lam"] == 0.7
    assert list((tmp_path / "wandb").glob("offline-run-*")), "W&B offline run missing"
    assert "val/recall@5" in (tmp_path / "csv" / "metrics.csv").read_text()


def test_training_on_both_sources(train_cfg, tmp_path):
    """data=causallite10k_ecare with the per-source bank softmax: trains, validates on both sources, and
    exports CausalLite10K's effects alone as the generation bank."""
    metrics = train(
        train_cfg("data=causallite10k_ecare", "model.bank_scope=per_source", "trainer.max_epochs=1")
    )
    assert math.isfinite(metrics["val/selection"]) and 0.0 <= metrics["val/ecare/accuracy"] <= 1.0
    assert len(EffectBank.load(tmp_path / "adapter")) == 5131


def test_resume_from_last_checkpoint(train_cfg, tmp_path):
    first = tmp_path / "first"
    train(train_cfg("trainer.max_epochs=1", output_dir=first))
    resumed = tmp_path / "resumed"
    metrics = train(
        train_cfg("trainer.max_epochs=2", f"ckpt_path={first}/checkpoints/last.ckpt", output_dir=resumed)
    )
    checkpoint = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["global_step"] == 2 * (256 // 32)
    assert math.isfinite(metrics["val/recall@5"])


def test_checkpoint_from_another_encoder_dimension(train_cfg, tmp_path):
    first = tmp_path / "first"
    train(train_cfg("trainer.max_epochs=1", output_dir=first))
    ckpt = torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["state_dict"] = {
        k: (v[:, :-1] if k == "adapter.relation.weight" else v) for k, v in ckpt["state_dict"].items()
    }
    torch.save(ckpt, tmp_path / "other.ckpt")
    with pytest.raises(UserError, match="adapter is 383-d but the configured encoder gives 384-d"):
        train(train_cfg(f"ckpt_path={tmp_path / 'other.ckpt'}", output_dir=tmp_path / "second"))


def test_cli_overrides_and_multirun(cli_env, tmp_path):
    common = [
        "+experiment=smoke",
        "trainer.max_epochs=1",
        "logger=csv",
        "test=false",
    ]
    single = run_module(
        "causaldreamer.train", [*common, "model.lam=0.5", "data.batch_size=64"], cli_env, tmp_path
    )
    assert single.returncode == 0, single.stderr[-2000:]
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    config = yaml.safe_load((run_dir / "run.yaml").read_text())["config"]
    assert config["model"]["lam"] == 0.5 and config["data"]["batch_size"] == 64
    assert (run_dir / "adapter" / "model.safetensors").is_file()

    multi = run_module("causaldreamer.train", ["-m", *common, "model.lam=0.6,0.9"], cli_env, tmp_path)
    assert multi.returncode == 0, multi.stderr[-2000:]
    (sweep_dir,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    lams = sorted(
        yaml.safe_load((sweep_dir / job / "run.yaml").read_text())["config"]["model"]["lam"]
        for job in ("0", "1")
    )
    assert lams == [0.6, 0.9]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.lam=nan", "model.lam=nan is invalid: expected a finite number"),
        ("model.lam=abc", "model.lam='abc' is invalid"),
        ("data.batch_size=0", "data.batch_size=0 is invalid: expected an integer >= 1"),
        ("ckpt_path=/nonexistent/last.ckpt", "ckpt_path=/nonexistent/last.ckpt does not exist"),
    ],
)
def test_bad_overrides_exit_2_with_one_line(cli_env, tmp_path, override, message):
    result = run_module("causaldreamer.train", ["+experiment=smoke", override], cli_env, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {message}")
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("run.yaml"))


@pytest.fixture(scope="module")
def small_datamodule(data_dir, cache_dir, minilm) -> CausalPairsDataModule:
    datamodule = CausalPairsDataModule(data_dir, cache_dir, minilm, limit_train=128, limit_eval=32)
    datamodule.setup("fit")
    return datamodule


def bank_softmax_at(module: CausalAdapterModule, batch: dict, temperature: float) -> float:
    """The bank-softmax retrieval loss written out: cross-entropy of cos(e_hat, bank) / temperature."""
    effect_pred = module.adapter(batch["cause"], batch["link_type"]).effect
    rows = module.train_bank_row[batch["effect_id"]]
    return F.cross_entropy(effect_pred @ module.train_bank.T / temperature, rows).item()


def test_contrastive_losses_start_at_temperature_0_07(small_datamodule):
    """DESIGN 6.1: logits are cos / T with a learnable T initialised at 0.07 (exp of the log scale)."""
    module = CausalAdapterModule(CausalAdapter(), temperature=0.07).eval()
    module.attach_bank(small_datamodule)
    batch = next(iter(small_datamodule.train_dataloader()))
    terms = module.loss_terms(batch)
    assert terms["retrieval"].item() == pytest.approx(bank_softmax_at(module, batch, 0.07), rel=1e-5)


def test_temperature_is_clamped_on_its_parameter_after_each_step(small_datamodule):
    """A log scale pushed past ln(1/min_temperature) is brought back to it by the optimizer step, on the
    parameter itself (as CLIP does); the loss then runs at T = min_temperature and still has a gradient in
    the log scale, so the temperature can rise again (a clamp inside the loss had none)."""
    module = CausalAdapterModule(CausalAdapter(), min_temperature=0.05)
    module.attach_bank(small_datamodule)
    with torch.no_grad():
        module.logit_scale.fill_(math.log(1 / 0.001))
    trainer = bare_trainer(
        max_steps=1,
    )
    trainer.fit(module, datamodule=small_datamodule)
    assert module.logit_scale.item() == pytest.approx(math.log(20), abs=1e-6)  # 1 / 0.05
    assert module.gate_logit_scale.item() <= math.log(20) + 1e-6
    module.eval()
    batch = next(iter(small_datamodule.train_dataloader()))
    loss = module.loss_terms(batch)["retrieval"]
    assert loss.item() == pytest.approx(bank_softmax_at(module, batch, 0.05), rel=1e-5)
    loss.backward()
    assert module.logit_scale.grad.abs().item() > 0
    with pytest.raises(UserError, match="model.min_temperature must be in"):
        CausalAdapterModule(CausalAdapter(), temperature=0.07, min_temperature=0.1)


def test_seen_effects_are_those_of_the_rows_trained_on(small_datamodule):
    train = small_datamodule.pairs.rows.iloc[small_datamodule.pairs.splits["train"][:128]]
    seen = [small_datamodule.bank.texts[i] for i in small_datamodule.seen_effects.nonzero().flatten()]
    assert set(seen) == set(train["effect"])  # data.limit_train=128: not all 7,999 training rows


@pytest.fixture(scope="module")
def mixed_datamodule(data_dir, ecare_dir, cache_dir, minilm) -> CausalPairsDataModule:
    datamodule = CausalPairsDataModule(
        data_dir,
        cache_dir,
        minilm,
        free_cause_prob=1.0,
        limit_train=64,
        limit_eval=32,
        ecare_dir=ecare_dir,
        ecare_batch_size=8,
    )
    datamodule.setup("fit")
    return datamodule


def test_each_batch_mixes_in_ecare_rows(mixed_datamodule):
    """32 CausalLite10K rows then 8 e-CARE rows (link type causal, their effects after the bank's), the
    same draw on every pass over an epoch; the generation bank stays CausalLite10K's."""
    datamodule = mixed_datamodule
    first, again = (next(iter(datamodule.train_dataloader())) for _ in range(2))
    assert len(first["cause"]) == 40 and first["source"].tolist() == [0] * 32 + [1] * 8
    assert all(torch.equal(first[key], again[key]) for key in first)
    ecare = first["effect_id"][32:]
    assert (first["link_type"][32:] == 0).all() and (ecare >= len(datamodule.bank)).all()
    assert datamodule.seen_effects[ecare].all() and (datamodule.effect_source[ecare] == 1).all()
    assert len(datamodule.bank) == 5131 and len(datamodule.train_dataloader()) == 2  # no added steps


def test_gate_tokens_are_those_of_the_cause_the_row_used(mixed_datamodule, cache_dir, minilm):
    """free_cause_prob=1: every CausalLite10K row feeds its free-form phrasing, to the adapter and to the
    gate loss's composed prompt alike."""
    datamodule = mixed_datamodule
    batch = next(iter(datamodule.train_dataloader()))
    rows = datamodule.pairs.rows.iloc[datamodule.pairs.splits["train"][:64]]
    order = [int(i) for i in EpochShuffle(datamodule.datasets["train"], datamodule.seed)][:32]
    part = rows.iloc[order]
    cache = EmbeddingCache(cache_dir, minilm)
    torch.testing.assert_close(batch["cause"][:32], cache.sentences(part["free_cause"].tolist()))
    tokens = cache.prompt_tokens(
        datamodule.template, list(zip(part["free_cause"], part["effect"], strict=True))
    )
    length = tokens.states.shape[1]
    torch.testing.assert_close(batch["token_states"][:32, :length], tokens.states.float())
    assert torch.equal(batch["token_spans"][:32, :length], tokens.span_ids)
    assert (batch["token_spans"][:32, length:] == PAD_SPAN).all()


class StepLosses(L.Callback):
    def __init__(self):
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses[trainer.global_step - 1] = float(outputs["loss"])


def test_logged_training_loss_is_the_loss_of_its_step(small_datamodule, tmp_path):
    """Each logged train/loss carries the step it was computed at (Lightning writes at step+1 % n == 0)."""
    recorder, logger = StepLosses(), CSVLogger(tmp_path)
    trainer = bare_trainer(
        max_epochs=2,
        log_every_n_steps=3,
        logger=logger,
        callbacks=[recorder],
    )
    trainer.fit(CausalAdapterModule(CausalAdapter()), datamodule=small_datamodule)
    with open(f"{logger.log_dir}/metrics.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("train/loss")]
    assert [int(r["step"]) for r in rows] == [2, 5]  # 8 steps: written after steps 2 and 5
    for row in rows:
        assert float(row["train/loss"]) == pytest.approx(recorder.losses[int(row["step"])], rel=1e-6)


def reference_loss_terms(module: CausalAdapterModule, datamodule, batch: dict) -> dict[str, torch.Tensor]:
    """DESIGN 6.1 transcribed row by row, sharing nothing with losses.py: what the optimized step must equal.

    The bank softmax ranks each row against the effects seen in training (of its own source with
    ``bank_scope=per_source``), read from the datamodule, not the module's buffers; the gate read-out
    runs each row through the UNet's SDPA intervention with its padding dropped, not masked."""
    hp, weights = module.hparams, module.weights
    out = module.adapter(batch["cause"], batch["link_type"])
    e_hat, effect, ids = out.effect, batch["effect"], batch["effect_id"].tolist()
    rows = range(len(ids))
    terms = {"delta": ((out.delta - (effect - batch["cause"])) ** 2).mean()}

    def hardest_negative(i):
        negatives = [e_hat[i] @ effect[j] for j in rows if ids[j] != ids[i]]
        return torch.stack(negatives).max() if negatives else None

    triplet = [
        torch.relu(hp.margin - e_hat[i] @ effect[i] + hardest)
        for i in rows
        if (hardest := hardest_negative(i)) is not None
    ]
    terms["triplet"] = torch.stack(triplet).mean()

    def info_nce(query, keys, scale):  # every row sharing the effect text is a positive
        per_row = []
        for i in rows:
            logits = scale * (keys @ query[i])
            positives = torch.tensor([ids[j] == ids[i] for j in rows])
            per_row.append(torch.logsumexp(logits, 0) - torch.logsumexp(logits[positives], 0))
        return torch.stack(per_row).mean()

    scale = module.logit_scale.exp()
    if hp.negatives == "batch":
        terms["retrieval"] = info_nce(e_hat, effect, scale)
    else:
        per_row = []
        for i in rows:
            candidates = datamodule.seen_effects.clone()
            if hp.bank_scope == "per_source":
                candidates &= datamodule.effect_source == datamodule.effect_source[ids[i]]
            index = candidates.nonzero().flatten().tolist()
            logits = scale * (datamodule.effects.embeddings[index] @ e_hat[i])
            per_row.append(torch.logsumexp(logits, 0) - logits[index.index(ids[i])])
        terms["retrieval"] = torch.stack(per_row).mean()

    heads = module.adapter.num_heads
    dim_head = e_hat.shape[1] // heads
    readouts = []
    for i in rows:
        keep = batch["token_spans"][i] != PAD_SPAN
        states, spans = batch["token_states"][i][keep], batch["token_spans"][i][keep]
        query = e_hat[i].view(1, heads, 1, dim_head)
        keys = states.view(1, -1, heads, dim_head).transpose(1, 2)
        # The UNet's form (gates folded into the keys, one SDPA call), not the module's single-row one.
        key_scale, logit_bias = intervention_key_scale_and_bias(
            spans[None], out.q_gate[i : i + 1], out.k_gate[i : i + 1], out.bias[i : i + 1], hp.lam
        )
        z = scaled_key_attention(query, keys, keys, key_scale, logit_bias)
        readouts.append(z.reshape(-1))
    assert SPAN_NONE == 0 and all(
        s in (0, 1, 2) for s in batch["token_spans"][batch["token_spans"] != PAD_SPAN].tolist()
    )
    z = F.normalize(torch.stack(readouts), dim=-1)
    terms["gate"] = info_nce(z, effect, module.gate_logit_scale.exp())
    return {name: value for name, value in terms.items() if weights[name]}


def step_losses_and_gradients(module, loss_terms, batch):
    """The step's loss terms and every parameter's gradient of the weighted total (dropout seeded)."""
    module.zero_grad(set_to_none=True)
    torch.manual_seed(7)
    terms = loss_terms(batch)
    module.total_loss(terms).backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}
    return {name: value.detach() for name, value in terms.items()}, grads


@pytest.mark.parametrize(
    ("data", "overrides"),
    [
        ("small", {}),  # the default losses on CausalLite10K alone
        ("small", {"negatives": "batch"}),
        ("mixed", {}),  # data=causallite10k_ecare: the per-source bank softmax
        ("mixed", {"bank_scope": "joint"}),
    ],
)
def test_optimized_step_equals_the_reference(request, data, overrides):
    """The step's fused pieces (one host read at most, layouts chosen for speed, the single-query
    intervention) give DESIGN 6.1's losses and gradients on a real batch, to float rounding."""
    datamodule = request.getfixturevalue(f"{data}_datamodule")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        adapter = CausalAdapter()
        for head in (adapter.q_gate, adapter.k_gate, adapter.bias):  # gates and bias away from 1 and 0
            torch.nn.init.normal_(head.weight, std=0.3)
    module = CausalAdapterModule(adapter, **overrides).train()  # dropout on, seeded alike in both
    module.attach_bank(datamodule)
    batch = next(iter(datamodule.train_dataloader()))
    if data == "mixed":
        assert module.sources_trained == 2 and batch["source"].unique().tolist() == [0, 1]
    ours, our_grads = step_losses_and_gradients(module, module.loss_terms, batch)
    reference, grads = step_losses_and_gradients(
        module, lambda b: reference_loss_terms(module, datamodule, b), batch
    )
    assert ours.keys() == reference.keys() == {"delta", "triplet", "retrieval", "gate"}
    for name in reference:
        torch.testing.assert_close(ours[name], reference[name], rtol=1e-5, atol=1e-6, msg=name)
    assert our_grads.keys() == grads.keys() and len(grads) == len(list(module.parameters()))
    for name in grads:
        torch.testing.assert_close(our_grads[name], grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_gradient_clipping_is_clip_grad_norm(small_datamodule):
    """The module's clipping (one dot product a gradient) scales the gradients as clip_grad_norm_ does,
    below and above the threshold; in a real Trainer step by norm and by value (Lightning's own)."""
    module = CausalAdapterModule(CausalAdapter()).train()
    module.attach_bank(small_datamodule)
    batch = next(iter(small_datamodule.train_dataloader()))
    module.total_loss(module.loss_terms(batch)).backward()
    params = [p for p in module.parameters() if p.grad is not None]
    optimizer = torch.optim.AdamW(params)
    raw = [p.grad.clone() for p in params]
    for max_norm, clips in ((1e-3, True), (1e6, False)):
        copies = [torch.zeros_like(g, requires_grad=True) for g in raw]
        for p, copy, g in zip(params, copies, raw, strict=True):
            p.grad, copy.grad = g.clone(), g.clone()
        torch.nn.utils.clip_grad_norm_(copies, max_norm)
        module.configure_gradient_clipping(optimizer, max_norm, "norm")
        for p, copy in zip(params, copies, strict=True):
            torch.testing.assert_close(p.grad, copy.grad, rtol=1e-5, atol=1e-9)
        assert torch.equal(params[0].grad, raw[0]) is not clips

    for algorithm, bound in (("norm", 1e-3), ("value", 1e-4)):
        module = CausalAdapterModule(CausalAdapter())
        trainer = bare_trainer(max_steps=1, gradient_clip_val=bound, gradient_clip_algorithm=algorithm)
        trainer.fit(module, datamodule=small_datamodule)  # the step's clipped gradients stay on the params
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if algorithm == "norm":
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            assert norm.item() == pytest.approx(bound, rel=1e-4)
        else:
            assert max(g.abs().max().item() for g in grads) == pytest.approx(bound)


def test_large_batch_preset_composes_alone_and_with_a_study(tmp_path):
    """The measured large-batch preset (docs/training.md) sets the batch, the e-CARE rows, lr and warm-up,
    alone or after a study, which keeps its own budget and name."""
    for experiments, name in (("large_batch", "default"), ("[lambda_sweep,large_batch]", "lambda_sweep")):
        cfg = compose_config("train", [f"+experiment={experiments}"], tmp_path)
        assert (cfg.data.batch_size, cfg.data.ecare_batch_size) == (256, 128)
        assert (cfg.model.lr, cfg.model.warmup_steps) == (1e-2, 63)
        assert cfg.experiment_name == name
    assert cfg.trainer.max_epochs == 20  # the study's budget

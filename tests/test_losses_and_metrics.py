"""Losses (DESIGN 6.1), the LR schedule, the retrieval metrics and the selection rule on hand-computed values."""

import math

import pytest
import torch

from causaldreamer.adapter import CausalAdapter
from causaldreamer.errors import UserError
from causaldreamer.intervention import (
    intervention_attention,
    intervention_key_scale_and_bias,
    scaled_key_attention,
)
from causaldreamer.losses import multi_positive_info_nce, per_source_bank_loss, retrieval_loss, triplet_loss
from causaldreamer.metrics.retrieval import BankRetrieval, TwoChoiceAccuracy, gold_ranks
from causaldreamer.module import CausalAdapterModule


def test_info_nce_duplicates_are_positives_not_negatives():
    query = torch.tensor([[1.0, 0.0]])
    keys = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    scale = torch.tensor(1.0)
    both = multi_positive_info_nce(query, keys, torch.tensor([[True, True, False]]), scale)
    # -log((e + e) / (e + e + 1))
    assert math.isclose(both.item(), -math.log(2 * math.e / (2 * math.e + 1)), rel_tol=1e-6)
    one = multi_positive_info_nce(query, keys, torch.tensor([[True, False, False]]), scale)
    assert math.isclose(one.item(), -math.log(math.e / (2 * math.e + 1)), rel_tol=1e-6)


def test_bank_loss_is_softmax_over_the_bank():
    query = torch.tensor([[1.0, 0.0]])
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = retrieval_loss(query, None, torch.tensor([0]), torch.tensor(1.0), bank)
    assert math.isclose(loss.item(), -math.log(math.e / (math.e + 1)), rel_tol=1e-6)


def test_triplet_uses_hardest_other_text():
    pred = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    effect = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    loss = triplet_loss(pred, effect, torch.tensor([0, 1]), margin=0.2)
    # row 0: relu(0.2 - 1 + 0.6) = 0; row 1: relu(0.2 - 0.8 + 0) = 0 -> 0; then a violating case
    assert loss.item() == 0.0
    loss = triplet_loss(pred, torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 1]), margin=0.2)
    assert math.isclose(loss.item(), 1.2, rel_tol=1e-6)  # relu(0.2 - 0 + 1) for both rows
    same_text = triplet_loss(pred, effect, torch.tensor([3, 3]), margin=0.2)
    assert same_text.item() == 0.0  # no negative with other text in the batch


def test_bank_retrieval_recall_and_mrr():
    bank = torch.eye(4)
    query = torch.tensor([[1.0, 0.5, 0.2, 0.0], [0.1, 0.2, 0.3, 0.9], [0.9, 0.1, 0.0, 0.8]])
    metric = BankRetrieval(ks=(1, 2))
    metric.update(query[:2], bank, torch.tensor([0, 2]), torch.tensor([True, False]))
    metric.update(query[2:], bank, torch.tensor([3]), torch.tensor([True]))
    out = metric.compute()
    # ranks: row0 gold 0 -> 1; row1 gold 2 (0.3 < 0.9) -> 2; row2 gold 3 (0.8 < 0.9) -> 2
    assert math.isclose(out["recall@1"].item(), 1 / 3, rel_tol=1e-6)
    assert math.isclose(out["recall@2"].item(), 1.0)
    assert math.isclose(out["mrr"].item(), (1 + 0.5 + 0.5) / 3, rel_tol=1e-6)
    assert math.isclose(out["seen/mrr"].item(), 0.75) and math.isclose(out["unseen/recall@1"].item(), 0.0)


def test_ranks_are_pessimistic_on_ties():
    bank = torch.eye(3)
    query = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    # row 0: gold 0 ties with effect 1 -> rank 2; row 1: gold 2 scores 0, below both -> rank 3
    assert gold_ranks(query @ bank.T, torch.tensor([0, 2])).tolist() == [2, 3]


def test_non_finite_or_constant_predictions_rank_last():
    bank = torch.eye(4)
    for query in (torch.full((2, 4), math.nan), torch.zeros(2, 4), torch.ones(2, 4)):
        metric = BankRetrieval(ks=(1, 2))
        metric.update(query, bank, torch.tensor([0, 3]), torch.tensor([True, False]))
        out = metric.compute()
        assert out["recall@1"].item() == 0.0 and out["recall@2"].item() == 0.0
        assert math.isclose(out["mrr"].item(), 0.25)  # rank 4 of 4 for both rows
    # A NaN or infinite score of another effect ranks below a finite gold score, never above it.
    scores = torch.tensor([[0.2, math.nan, math.inf, 0.1]])
    assert gold_ranks(scores, torch.tensor([0])).tolist() == [1]


def test_rows_repeated_by_the_distributed_sampler_count_once():
    bank = torch.eye(2)
    metric = BankRetrieval(ks=(1,))
    query = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    metric.update(query, bank, torch.tensor([0, 1]), torch.tensor([True, True]), torch.tensor([0, 1]))
    metric.update(query[:1], bank, torch.tensor([1]), torch.tensor([True]), torch.tensor([1]))  # a repeat
    assert math.isclose(metric.compute()["recall@1"].item(), 0.5)  # rows 0 (rank 1) and 1 (rank 2)


def test_two_choice_accuracy_counts_ties_and_nan_as_wrong():
    metric = TwoChoiceAccuracy()
    right = torch.tensor([0.5, 0.2, 0.3, math.nan, 0.1])
    wrong = torch.tensor([0.1, 0.4, 0.3, 0.0, math.nan])
    metric.update(right, wrong, torch.tensor([0, 1, 2, 3, 4]))
    metric.update(right[:1], wrong[:1], torch.tensor([0]))  # a DDP repeat of row 0
    # correct: rows 0 and 4 (a NaN wrong answer ranks last); row 1 lower, row 2 a tie, row 3 NaN
    assert math.isclose(metric.compute()["accuracy"].item(), 2 / 5, rel_tol=1e-6)


def test_per_source_bank_loss_ranks_each_row_against_its_own_source():
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # source 0 owns rows 0-1, source 1 row 2
    loss = per_source_bank_loss(
        query, torch.tensor([0, 2]), torch.tensor([0, 1]), torch.tensor(1.0), bank, [0, 2, 3]
    )
    # row 0: -log(e / (e + 1)) over its own two effects; row 1: its source's only effect, -log(1) = 0
    assert math.isclose(loss.item(), -math.log(math.e / (math.e + 1)) / 2, rel_tol=1e-6)
    swapped = per_source_bank_loss(  # rows not grouped by source: the same loss
        query.flip(0), torch.tensor([2, 0]), torch.tensor([1, 0]), torch.tensor(1.0), bank, [0, 2, 3]
    )
    assert math.isclose(swapped.item(), loss.item(), rel_tol=1e-6)
    joint = retrieval_loss(query, None, torch.tensor([0, 2]), torch.tensor(1.0), bank)
    # the joint bank: row 0 as above with one more wrong effect, row 1 ties with row 1 of the bank
    expected = -math.log(math.e / (math.e + 2)) - math.log(math.e / (2 * math.e + 1))
    assert math.isclose(joint.item(), expected / 2, rel_tol=1e-6)


def test_selection_is_the_mean_gain_over_zero_shot():
    values = {
        "val/recall@5": torch.tensor(0.30),
        "val/zero_shot/recall@5": torch.tensor(0.10),
        "val/ecare/accuracy": torch.tensor(0.70),
        "val/ecare/zero_shot/accuracy": torch.tensor(0.66),
    }
    module = CausalAdapterModule(CausalAdapter())
    assert math.isclose(module.selection_score(values).item(), (0.20 + 0.04) / 2, rel_tol=1e-5)
    only_recall = CausalAdapterModule(CausalAdapter(), selection=["recall@5"])
    assert math.isclose(only_recall.selection_score(values).item(), 0.20, rel_tol=1e-5)
    del values["val/ecare/accuracy"]
    with pytest.raises(UserError, match="model.selection names 'ecare/accuracy'"):
        module.selection_score(values)


def test_single_row_intervention_equals_the_sdpa_intervention():
    """Training's single-query form (gates on the logits row) equals the UNet's (gates folded into the
    keys, one SDPA call), padding mask included: outputs and the gradients of every input."""
    g = torch.Generator().manual_seed(0)
    batch, heads, keys, dim = 4, 8, 9, 6
    tensors = [
        torch.randn(batch, heads, 1, dim, generator=g),
        torch.randn(batch, heads, keys, dim, generator=g),
        torch.randn(batch, heads, keys, dim, generator=g),
        1 + torch.tanh(torch.randn(batch, heads, generator=g)),
        1 + torch.tanh(torch.randn(batch, heads, 2, generator=g)),
        torch.randn(batch, heads, 2, generator=g),
    ]
    spans = torch.randint(0, 3, (batch, keys), generator=g)
    mask = torch.zeros(batch, 1, 1, keys)
    mask[:, :, :, -3:] = float("-inf")

    def fused(q, k, v, spans, q_gate, k_gate, bias, lam, attn_mask):
        """The UNet's form: gates folded into the keys, one SDPA call."""
        scale, logit_bias = intervention_key_scale_and_bias(spans, q_gate, k_gate, bias, lam)
        return scaled_key_attention(q, k, v, scale, logit_bias, attn_mask)

    results = []
    for attend in (fused, intervention_attention):
        q, k, v, q_gate, k_gate, bias = (t.clone().requires_grad_() for t in tensors)
        out = attend(q, k, v, spans, q_gate, k_gate, bias, 0.7, attn_mask=mask)
        (out * torch.arange(out.numel()).view_as(out).sin()).sum().backward()
        results.append([out.detach()] + [t.grad for t in (q, k, v, q_gate, k_gate, bias)])
    for fused, single in zip(*results, strict=True):
        torch.testing.assert_close(single, fused, rtol=1e-5, atol=1e-6)

"""Losses (DESIGN 6.1), the LR schedule and the bank retrieval metric on hand-computed values."""

import math

import torch

from causaldreamer.losses import multi_positive_info_nce, retrieval_loss, triplet_loss
from causaldreamer.metrics.retrieval import BankRetrieval


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

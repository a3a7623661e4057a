"""Counterfactual coverage: hand-computed embeddings, then the real 190 scenarios with MiniLM."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from causaldreamer.adapter import CausalAdapter
from causaldreamer.bank import EffectBank
from causaldreamer.data.embedding_cache import EmbeddingCache
from causaldreamer.encoders import MiniLMEncoder
from causaldreamer.errors import UserError
from causaldreamer.metrics.coverage import (
    CounterfactualCoverage,
    best_cosines,
    counterfactual_coverage,
    coverage_gain,
)

E1, E2, E3 = torch.eye(3)
DIAGONAL = (E1 + E2) / math.sqrt(2)  # cosine 1/sqrt(2) with E1 and with E2


def test_best_cosine_takes_the_nearest_retrieved_effect():
    references = torch.stack([E1, E2, E3])
    retrieved = torch.stack([2 * E1, DIAGONAL, -E3])  # norms do not matter; E3's best is 0 (E1), not -1
    torch.testing.assert_close(
        best_cosines(references, retrieved), torch.tensor([1.0, 1 / math.sqrt(2), 0.0])
    )


@pytest.mark.parametrize(("threshold", "share"), [(0.7, 2 / 3), (0.75, 1 / 3), (1.0, 1 / 3), (0.0, 1.0)])
def test_share_counts_references_at_or_above_the_threshold(threshold, share):
    metric = CounterfactualCoverage(threshold=threshold)
    metric.update(torch.stack([E1, E2, E3]), torch.stack([E1, DIAGONAL, -E3]))
    result = metric.compute()
    assert result["mean"].item() == pytest.approx((1 + 1 / math.sqrt(2) + 0) / 3, abs=1e-6)
    assert result["share"].item() == pytest.approx(share)


def test_mean_is_over_reference_pairs_not_causes():
    metric = CounterfactualCoverage()
    metric.update(E1[None], E1[None])  # one reference, covered exactly
    metric.update(torch.stack([E2, E2, E2]), E3[None])  # three references, orthogonal
    result = metric.compute()
    assert result["mean"].item() == pytest.approx(0.25)  # a mean over causes would say 0.5
    assert result["share"].item() == pytest.approx(0.25)


def test_merged_states_equal_one_metric_over_all_causes():
    causes = [(torch.randn(8, 16), torch.randn(8, 16)) for _ in range(5)]
    rank0, rank1, everything = (
        CounterfactualCoverage(0.2),
        CounterfactualCoverage(0.2),
        CounterfactualCoverage(0.2),
    )
    for i, (references, retrieved) in enumerate(causes):
        (rank0 if i < 2 else rank1).update(references, retrieved)
        everything.update(references, retrieved)
    rank0.merge_state(rank1)
    for key, value in everything.compute().items():
        torch.testing.assert_close(rank0.compute()[key], value)


# --- real data ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder(minilm) -> MiniLMEncoder:
    return minilm


@pytest.fixture(scope="module")
def scenarios(data_dir) -> pd.DataFrame:
    return pd.read_csv(data_dir / "test_counterfactual.csv")


def _bank(encoder: MiniLMEncoder, texts: list[str]) -> EffectBank:
    batches = [encoder.encode(texts[i : i + 256]) for i in range(0, len(texts), 256)]
    return EffectBank(texts, torch.cat(batches), encoder.identity)


@pytest.fixture(scope="module")
def full_bank(encoder, data_dir, cache_dir) -> EffectBank:
    """The 5,131 unique effects of CausalLite10K, from the session's embedding cache."""
    effects = sorted(pd.read_csv(data_dir / "CausalLite10K.csv")["effect"].unique())
    assert len(effects) == 5131
    return EffectBank(effects, EmbeddingCache(cache_dir, encoder).sentences(effects), encoder.identity)


def _per_cause(means: list[float], references: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {"cause": [f"c{i}" for i in range(len(means))], "references": references, "mean": means}
    )


def test_gain_is_the_paired_difference_with_its_standard_error_over_causes():
    adapter, zero_shot = _per_cause([0.6, 0.5, 0.4], [8] * 3), _per_cause([0.5, 0.5, 0.2], [8] * 3)
    gain = coverage_gain(adapter, zero_shot)
    # differences 0.1, 0, 0.2: mean 0.1, sample std 0.1, so SE 0.1 / sqrt(3)
    assert gain["gain"] == pytest.approx(0.1)
    assert gain["gain_se"] == pytest.approx(0.1 / math.sqrt(3))
    assert (gain["wins"], gain["losses"]) == (2, 0)


def test_gain_weighs_causes_by_their_references_like_the_pair_mean():
    adapter, zero_shot = _per_cause([1.0, 0.0], [1, 3]), _per_cause([0.0, 0.0], [1, 3])
    gain = coverage_gain(adapter, zero_shot)
    assert gain["gain"] == pytest.approx(0.25)  # pair means 1/4 and 0
    # sqrt(2/1 * (1^2 * 0.75^2 + 3^2 * 0.25^2)) / 4
    assert gain["gain_se"] == pytest.approx(math.sqrt(2 * (0.75**2 + 9 * 0.25**2)) / 4)
    with pytest.raises(ValueError, match="same scenarios"):
        coverage_gain(adapter, zero_shot.iloc[::-1])


@pytest.fixture(scope="module")
def zero_shot(encoder, full_bank, scenarios) -> dict:
    return counterfactual_coverage(None, encoder, full_bank, scenarios)


def test_zero_shot_coverage_matches_the_measured_baseline(zero_shot, scenarios):
    # DESIGN 7 measured zero-shot MiniLM retrieval at 0.496 mean, 14.1% share
    assert zero_shot["mean"] == pytest.approx(0.496, abs=5e-4)
    assert zero_shot["share"] == pytest.approx(0.141, abs=5e-4)
    per_cause = zero_shot["per_cause"]
    assert per_cause["cause"].tolist() == scenarios["cause"].tolist()
    assert (per_cause["references"] == 8).all()
    assert all(len(set(texts)) == 8 for texts in per_cause["retrieved"])
    # every scenario has 8 references, so the pair mean is also the mean of per-cause means
    assert per_cause["mean"].mean() == pytest.approx(zero_shot["mean"], abs=1e-5)
    assert per_cause["share"].mean() == pytest.approx(zero_shot["share"], abs=1e-5)


def test_zero_shot_path_retrieval_equals_top_k(encoder, full_bank, scenarios, zero_shot):
    """With e_hat = c every path query is c itself, so the path walk picks the top_k effects."""
    subset = scenarios.head(20)
    path = counterfactual_coverage(None, encoder, full_bank, subset, mode="path")
    top_k = zero_shot["per_cause"].head(20)
    assert [sorted(t) for t in path["per_cause"]["retrieved"]] == [sorted(t) for t in top_k["retrieved"]]
    assert path["mean"] == pytest.approx(top_k["mean"].mean(), abs=1e-5)


def test_untrained_adapter_coverage_is_valid_and_differs_from_zero_shot(
    encoder, full_bank, scenarios, zero_shot
):
    """On 40 scenarios, to keep the test short; the full bank is searched."""
    torch.manual_seed(0)
    adapter = CausalAdapter().train()
    subset = scenarios.head(40)
    result = counterfactual_coverage(adapter, encoder, full_bank, subset)
    assert adapter.training  # evaluated in eval mode, then its mode is restored
    again = counterfactual_coverage(adapter, encoder, full_bank, subset)
    assert again["mean"] == result["mean"]  # dropout was off: the same e_hat both times
    assert len(result["per_cause"]) == 40
    assert -1 <= result["mean"] <= 1 and 0 <= result["share"] <= 1
    # the random delta head moves e_hat away from c, so retrieval (and coverage) change
    zero_shot_subset = zero_shot["per_cause"].head(40)
    assert result["per_cause"]["retrieved"].tolist() != zero_shot_subset["retrieved"].tolist()
    assert result["mean"] != pytest.approx(zero_shot_subset["mean"].mean(), abs=1e-3)


@pytest.mark.parametrize("mode", ["topk", "path"])
def test_a_bank_of_the_reference_effects_covers_them_fully(encoder, scenarios, mode):
    scenario = scenarios.head(1)
    references = scenario.filter(like="effect").iloc[0].tolist()
    result = counterfactual_coverage(None, encoder, _bank(encoder, references), scenario, mode=mode)
    assert result["mean"] == pytest.approx(1.0, abs=1e-5)
    assert result["share"] == 1.0
    assert sorted(result["per_cause"]["retrieved"][0]) == sorted(references)


def test_bad_scenario_table_or_mismatched_bank_raise_user_errors(encoder, scenarios):
    bank = EffectBank(["x"], torch.ones(1, 384) / math.sqrt(384), "some-encoder")
    with pytest.raises(UserError, match="effect1..effectN"):
        counterfactual_coverage(None, encoder, bank, scenarios.rename(columns={"cause": "prompt"}))
    small_bank = EffectBank(["x"], torch.ones(1, 8), "other-encoder")
    with pytest.raises(UserError, match="bank dim 8"):
        counterfactual_coverage(None, encoder, small_bank, scenarios)
    with pytest.raises(UserError, match="top_k=8 but the effect bank holds 1"):
        counterfactual_coverage(None, encoder, bank, scenarios)

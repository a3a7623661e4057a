"""Where a trained adapter stands against zero-shot retrieval on free-form causes, and why (DESIGN 7).

Prints, for one exported adapter folder (e.g. ``logs/train/runs/<run>/adapter``):

1. Counterfactual coverage of test_counterfactual's causes, both retrieval modes beside zero-shot, with
   the paired gain, its standard error over causes, and the causes won and lost.
2. Geometry of those causes: how close they are to the training causes, |D|, cos(c, e_hat), the cosine of c and of e_hat to the centroid of
   each cause's reference effects (which of the two is the better query for them).
3. The same question on val, where the answers are known: each val row's free-form cause (the prompt's
   first clause) retrieves 8 effects (path mode); the score is the gold effect's best cosine to them,
   adapter minus zero-shot, by how close the cause is to its nearest training cause. If the adapter
   only lost on causes unlike its training data, the low bins would show it.
4. Fit against coverage: linear predictors of the residual e - c fitted to the training pairs (ridge
   regression on the training causes, terse and free-form), from no fit at all (the constant mean
   residual, ridge strength infinite) to a close fit, beside zero-shot and the adapter: val recall@5 of
   the terse causes against the bank, and counterfactual coverage (path retrieval). It shows whether
   the benchmark rewards fitting the training pairs.

Usage:

    python experiments/coverage_gap.py ADAPTER_DIR [--data-dir DIR] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import itertools
import os

import pandas as pd
import torch
import torch.nn.functional as F

from causaldreamer.adapter import LINK_TYPES
from causaldreamer.data.embedding_cache import CachedSentences, EmbeddingCache
from causaldreamer.data.files import CausalPairs, load_dataset
from causaldreamer.diffusion.adapter_folder import load_adapter_folder
from causaldreamer.encoders import MiniLMEncoder
from causaldreamer.metrics.coverage import coverage_against_zero_shot, coverage_of_predictions
from causaldreamer.metrics.retrieval import BankRetrieval

SIMILARITY_BINS = (0.0, 0.6, 0.7, 0.8, 0.9, 1.01)
RIDGE_STRENGTHS = (float("inf"), 1000.0, 100.0, 10.0, 1.0)


def report_coverage(folder, texts: CachedSentences, scenarios: pd.DataFrame) -> None:
    results = coverage_against_zero_shot(folder.adapter, texts, folder.bank, scenarios, ("path", "topk"))
    zero_shot = results.pop("zero_shot")
    print(f"zero-shot: coverage {zero_shot['mean']:.4f}, share {zero_shot['share']:.1%}")
    for mode, adapter in results.items():
        print(
            f"adapter, {mode}: coverage {adapter['mean']:.4f}, share {adapter['share']:.1%}, "
            f"gain {adapter['gain']:+.4f} ± {adapter['gain_se']:.4f} (SE), "
            f"{adapter['wins']} causes won, {adapter['losses']} lost"
        )


def report_geometry(
    adapter, cache: EmbeddingCache, scenarios: pd.DataFrame, trained_on: torch.Tensor
) -> None:
    causes = cache.sentences(scenarios["cause"].tolist())
    print(f"median cosine to the nearest training cause: {(causes @ trained_on.T).amax(-1).median():.3f}")
    references = scenarios.filter(regex=r"^effect\d+$")
    centroid = F.normalize(
        torch.stack([cache.sentences(references[c].tolist()) for c in references]).mean(0), dim=-1
    )
    out = predict(adapter, causes, ["causal"] * len(causes))
    print(
        f"|D| {out.delta.norm(dim=-1).mean():.2f}, cos(c, e_hat) {(causes * out.effect).sum(-1).mean():.3f}; "
        f"cosine to the reference centroid: c {(causes * centroid).sum(-1).mean():.3f}, "
        f"e_hat {(out.effect * centroid).sum(-1).mean():.3f}"
    )


def training_causes(cache: EmbeddingCache, pairs: CausalPairs) -> torch.Tensor:
    """Every cause text the adapter trained on, terse and free-form."""
    train = pairs.rows.iloc[pairs.splits["train"]]
    return cache.sentences(list(dict.fromkeys(train["cause"].tolist() + train["free_cause"].tolist())))


def val_by_similarity(folder, cache: EmbeddingCache, pairs: CausalPairs, trained_on: torch.Tensor) -> None:
    val = pairs.rows.iloc[pairs.splits["val"]]
    causes, gold = cache.sentences(val["free_cause"].tolist()), cache.sentences(val["effect"].tolist())
    similarity = (causes @ trained_on.T).amax(-1)
    print(f"val free-form causes: median cosine to the nearest training cause {similarity.median():.3f}")
    effect_pred = predict(folder.adapter, causes, val["link_type"].tolist()).effect
    bank = folder.bank.embeddings.float()

    def gold_best(queries: torch.Tensor) -> torch.Tensor:
        """Per row, the gold effect's best cosine to the 8 effects retrieved: coverage of one reference."""
        result = coverage_of_predictions(causes, queries, gold[:, None], bank, mode="path")
        return torch.tensor([row["mean"] for row in result["per_cause"]])

    adapter, zero_shot = gold_best(effect_pred), gold_best(causes)
    print(
        f"val free-form causes ({len(val)}): gold best cosine, adapter {adapter.mean():.4f}, zero-shot "
        f"{zero_shot.mean():.4f}"
    )
    print("nearest training cause | rows | adapter - zero-shot (± SE)")
    for low, high in itertools.pairwise(SIMILARITY_BINS):
        diff = (adapter - zero_shot)[(similarity >= low) & (similarity < high)]
        if len(diff) > 1:
            print(
                f"[{low:.1f}, {min(high, 1.0):.1f}) | {len(diff)} | {diff.mean():+.4f} ± {diff.std() / len(diff) ** 0.5:.4f}"
            )


def ridge_residual(causes: torch.Tensor, effects: torch.Tensor, strength: float):
    """e_hat = normalize(c + mean residual + (c - mean cause) W), W the ridge fit of the centred residual;
    strength inf fits nothing of the cause (the constant mean residual)."""
    mean_cause, residual = causes.mean(0), (effects - causes).double()
    mean_residual = residual.mean(0)
    x = (causes - mean_cause).double()
    weight = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
    if strength != float("inf"):
        gram = x.T @ x + strength * torch.eye(x.shape[1], dtype=torch.float64)
        weight = torch.linalg.solve(gram, x.T @ (residual - mean_residual))

    def predictor(query: torch.Tensor) -> torch.Tensor:
        shift = mean_residual + (query - mean_cause).double() @ weight
        return F.normalize(query + shift.to(query.dtype), dim=-1)

    return predictor


def report_fit_versus_coverage(folder, cache: EmbeddingCache, pairs: CausalPairs, scenarios) -> None:
    train, val = (pairs.rows.iloc[pairs.splits[s]] for s in ("train", "val"))
    causes = cache.sentences(train["cause"].tolist() + train["free_cause"].tolist())
    effects = cache.sentences(train["effect"].tolist() * 2)
    bank, index = folder.bank.embeddings.float(), {t: i for i, t in enumerate(folder.bank.texts)}
    val = val[val["effect"].isin(index)]  # a bank built from other data may lack some gold effects
    val_causes, gold = cache.sentences(val["cause"].tolist()), torch.tensor(val["effect"].map(index).tolist())
    test_causes = cache.sentences(scenarios["cause"].tolist())
    texts = [
        [t for t in row if isinstance(t, str)]
        for row in scenarios.filter(regex=r"^effect\d+$").itertuples(index=False)
    ]
    references = cache.sentences([t for row in texts for t in row]).split([len(row) for row in texts])
    # Each predictor's e_hat for (val's terse causes, the benchmark's causes).
    predictions = {"zero-shot (e_hat = c)": (val_causes, test_causes)}
    for strength in RIDGE_STRENGTHS:
        name = "constant mean residual" if strength == float("inf") else f"ridge, strength {strength:g}"
        fit = ridge_residual(causes, effects, strength)
        predictions[name] = (fit(val_causes), fit(test_causes))
    predictions["adapter"] = (
        predict(folder.adapter, val_causes, val["link_type"].tolist()).effect,
        predict(folder.adapter, test_causes, ["causal"] * len(test_causes)).effect,
    )
    print("predictor | val recall@5 | coverage (path)")
    for name, (val_pred, test_pred) in predictions.items():
        recall = BankRetrieval(ks=(5,))
        recall.update(val_pred, bank, gold, torch.ones_like(gold))
        coverage = coverage_of_predictions(test_causes, test_pred, references, bank, mode="path")
        print(f"{name} | {recall.compute()['recall@5']:.1%} | {coverage['mean']:.4f}")


@torch.no_grad()
def predict(adapter, causes: torch.Tensor, link_types: list[str]):
    link = torch.tensor([LINK_TYPES.index(t) for t in link_types])
    return adapter.eval()(causes, link)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("adapter_dir")
    parser.add_argument(
        "--data-dir", default=os.environ.get("CAUSALDREAMER_DATA_DIR", "../shared/data/causallite10k")
    )
    parser.add_argument(
        "--cache-dir", default=os.environ.get("CAUSALDREAMER_CACHE_DIR", ".cache/causaldreamer")
    )
    args = parser.parse_args()
    folder = load_adapter_folder(args.adapter_dir)
    encoder = MiniLMEncoder()
    cache = EmbeddingCache(args.cache_dir, encoder)
    scenarios = pd.read_csv(os.path.join(args.data_dir, "test_counterfactual.csv"))
    report_coverage(folder, CachedSentences(encoder, args.cache_dir), scenarios)
    pairs = load_dataset(args.data_dir)
    trained_on = training_causes(cache, pairs)
    report_geometry(folder.adapter, cache, scenarios, trained_on)
    val_by_similarity(folder, cache, pairs, trained_on)
    report_fit_versus_coverage(folder, cache, pairs, scenarios)


if __name__ == "__main__":
    main()

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
from causaldreamer.metrics.coverage import coverage_against_zero_shot
from causaldreamer.retrieval import retrieve_sequence

SIMILARITY_BINS = (0.0, 0.6, 0.7, 0.8, 0.9, 1.01)


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
        picked = [
            retrieve_sequence(c, q, bank, 8, 8, "path").bank_indices
            for c, q in zip(causes, queries, strict=True)
        ]
        return torch.stack([(bank[p] @ g).max() for p, g in zip(picked, gold, strict=True)])

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


if __name__ == "__main__":
    main()

"""The six sequence metrics on hand-computed features, and the tiny DINOv2/CLIP extractors end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.modeling_outputs import BaseModelOutputWithPooling

from causaldreamer.errors import UserError
from causaldreamer.metrics.features import ClipFeatures, DinoFeatures, _projected, sequence_features
from causaldreamer.metrics.sequence import (
    CausalConsistency,
    CausalProgression,
    DinoTemporalConsistency,
    EffectAlignment,
    EventTransitionCoherence,
    SemanticDiversity,
    frame_order_correlation,
    sequence_metrics,
    transition_scores,
)


def at_angles(*degrees: float, scale: float = 1.0) -> torch.Tensor:
    """2-d features at the given angles: the cosine of two of them is the cosine of their difference."""
    radians = torch.tensor(degrees, dtype=torch.float64).deg2rad()
    return (scale * torch.stack([radians.cos(), radians.sin()], dim=-1)).float()


def value(metric, *inputs) -> float:
    metric.update(*inputs)
    return metric.compute().item()


# --- DINO-TCS -------------------------------------------------------------------------------------


def test_dino_tcs_of_identical_frames_is_one():
    frames = torch.randn(1, 32).expand(8, 32)
    assert value(DinoTemporalConsistency(), frames) == pytest.approx(1.0, abs=1e-6)


def test_dino_tcs_is_the_mean_consecutive_cosine_whatever_the_norms():
    # consecutive angle steps 60 and 90 degrees: cosines 0.5 and 0 -> 0.25; the far pair (150) is ignored
    assert value(DinoTemporalConsistency(), at_angles(0, 60, 150, scale=3.0)) == pytest.approx(0.25, abs=1e-6)


# --- SDS ------------------------------------------------------------------------------------------


def test_sds_of_identical_frames_is_zero():
    frames = torch.randn(1, 16).expand(6, 16)
    assert value(SemanticDiversity(), frames) == pytest.approx(0.0, abs=1e-6)


def test_sds_averages_over_all_frame_pairs():
    # pairs (0,90): 1-0, (0,180): 1+1, (90,180): 1-0 -> mean 4/3; consecutive pairs alone would give 1
    assert value(SemanticDiversity(), at_angles(0, 90, 180)) == pytest.approx(4 / 3, abs=1e-6)


# --- CLIP -----------------------------------------------------------------------------------------


def test_clip_is_the_mean_cosine_of_each_frame_with_its_own_effect():
    images = at_angles(0, 0, 90)
    effects = at_angles(60, 0, 0)  # cosines 0.5, 1, 0 -> 0.5
    assert value(EffectAlignment(), images, effects) == pytest.approx(0.5, abs=1e-6)


# --- CCS and CPS ----------------------------------------------------------------------------------

CAUSE, EFFECT = at_angles(0)[0], at_angles(90)[0]
PROGRESSING = at_angles(0, 10, 30, 45, 70, 90)  # p_f = sin - cos rises from -1 to 1


def test_ccs_of_a_strictly_progressing_sequence_is_one_and_reversed_minus_one():
    effects = EFFECT.expand(6, 2)
    assert value(CausalConsistency(), PROGRESSING, effects, CAUSE) == pytest.approx(1.0, abs=1e-6)
    assert value(CausalConsistency(), PROGRESSING.flip(0), effects, CAUSE) == pytest.approx(-1.0, abs=1e-6)


def test_ccs_uses_ranks_not_values():
    # monotone but far from linear: Spearman 1, where a Pearson correlation would be below 1
    assert frame_order_correlation(torch.tensor([[0.0, 0.01, 0.02, 5.0]])).item() == pytest.approx(1.0)
    # ties take their average rank: ranks [1, 2.5, 2.5, 4] against [1, 2, 3, 4] -> 4.5 / sqrt(4.5 * 5)
    tied = frame_order_correlation(torch.tensor([[0.0, 1.0, 1.0, 2.0]])).item()
    assert tied == pytest.approx(4.5 / math.sqrt(22.5), abs=1e-6)


def test_ccs_of_a_constant_progress_sequence_is_zero():
    frames = at_angles(45).expand(5, 2)  # every frame identical: p constant, Spearman undefined
    assert value(CausalConsistency(), frames, EFFECT.expand(5, 2), CAUSE) == 0.0


def test_cps_is_last_minus_first_progress():
    # p_first = sin 0 - cos 0 = -1, p_last = sin 90 - cos 90 = 1
    effects = EFFECT.expand(6, 2)
    assert value(CausalProgression(), PROGRESSING, effects, CAUSE) == pytest.approx(2.0, abs=1e-6)
    # per-frame effects count: the last frame's own effect is the cause direction, so p_last = 0
    effects = torch.cat([EFFECT.expand(5, 2), CAUSE[None]])
    assert value(CausalProgression(), PROGRESSING, effects, CAUSE) == pytest.approx(1.0, abs=1e-6)


# --- ETC ------------------------------------------------------------------------------------------


def test_etc_band_scores_and_boundaries():
    sims = torch.tensor([0.3, 0.59, 0.6, 0.7, 0.85, 0.86, 1.0, -0.3])
    expected = torch.tensor([0.5, 0.59 / 0.6, 1.0, 1.0, 1.0, 0.5, 0.5, -0.5])
    torch.testing.assert_close(transition_scores(sims), expected)


def test_etc_averages_one_transition_in_each_band():
    step_in, step_above, step_below = (math.degrees(math.acos(c)) for c in (0.7, 0.95, 0.3))
    frames = at_angles(0, step_in, step_in + step_above, step_in + step_above + step_below)
    # scores 1 (0.7 inside), 0.5 (0.95 above), 0.3 / 0.6 = 0.5 (below) -> 2/3
    assert value(EventTransitionCoherence(), frames) == pytest.approx(2 / 3, abs=1e-5)
    # a wider band [0.25, 0.96] takes all three transitions as coherent
    assert value(EventTransitionCoherence(low=0.25, high=0.96), frames) == pytest.approx(1.0, abs=1e-5)


# --- averaging and DDP ----------------------------------------------------------------------------


def test_updates_average_per_sequence_values_not_frames():
    metric = DinoTemporalConsistency()
    metric.update(at_angles(0, 60, 120))  # 2 transitions of cosine 0.5 -> 0.5
    metric.update(at_angles(0, 0, 0, 0, 0))  # 4 transitions of cosine 1 -> 1
    # mean over sequences 0.75; a mean over the 6 transitions would give 5/6
    assert metric.compute().item() == pytest.approx(0.75, abs=1e-6)


def test_a_batch_update_equals_one_update_per_sequence():
    sequences = torch.randn(4, 6, 8), torch.randn(4, 6, 8), torch.randn(4, 8)
    batched, single = sequence_metrics(), sequence_metrics()
    names = ("image_features", "effect_features", "cause_features")
    batched.update(dino_features=sequences[0], **dict(zip(names, sequences, strict=True)))
    for b in range(4):
        parts = {name: tensor[b] for name, tensor in zip(names, sequences, strict=True)}
        single.update(dino_features=sequences[0][b], **parts)
    for name, result in batched.compute().items():
        torch.testing.assert_close(result, single.compute()[name], msg=name)


def _random_inputs(batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 8, 16, generator=generator), torch.randn(batch, 8, 16, generator=generator)


@pytest.mark.parametrize("metric_cls", [CausalConsistency, CausalProgression])
def test_merged_states_equal_one_metric_over_all_sequences(metric_cls):
    (img_a, eff_a), (img_b, eff_b) = _random_inputs(3, 0), _random_inputs(5, 1)
    cause_a, cause_b = torch.randn(3, 16), torch.randn(5, 16)
    rank0, rank1, everything = metric_cls(), metric_cls(), metric_cls()
    rank0.update(img_a, eff_a, cause_a)
    rank1.update(img_b, eff_b, cause_b)
    everything.update(torch.cat([img_a, img_b]), torch.cat([eff_a, eff_b]), torch.cat([cause_a, cause_b]))
    rank0.merge_state(rank1)
    torch.testing.assert_close(rank0.compute(), everything.compute())


@pytest.mark.parametrize("metric_cls", [DinoTemporalConsistency, SemanticDiversity, EventTransitionCoherence])
def test_torchmetrics_sync_equals_one_metric_over_all_sequences(metric_cls):
    """compute() syncs through dist_sync_fn as under DDP; a fake gather plays the second process."""
    (frames_a, _), (frames_b, _) = _random_inputs(2, 2), _random_inputs(6, 3)
    other = metric_cls()
    other.update(frames_b)
    other_states = iter(other.metric_state.values())

    def gather(tensor, group=None):
        return [tensor, next(other_states)]

    synced = metric_cls(dist_sync_fn=gather, distributed_available_fn=lambda: True)
    synced.update(frames_a)
    everything = metric_cls()
    everything.update(torch.cat([frames_a, frames_b]))
    torch.testing.assert_close(synced.compute(), everything.compute())
    assert synced.count.item() == 2  # local state is restored after the sync


def test_sequences_need_two_frames():
    with pytest.raises(ValueError, match="at least 2 frames"):
        DinoTemporalConsistency().update(torch.randn(1, 1, 8))


# --- extractors -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def extractors() -> tuple[DinoFeatures, ClipFeatures]:
    return DinoFeatures.tiny(), ClipFeatures.tiny()


def _random_frames(count: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)) for _ in range(count)]


def test_end_to_end_tiny_extractors_give_finite_metrics(extractors):
    dino, clip = extractors
    metrics = sequence_metrics()
    for seed, cause in enumerate(["a dog jumping over a log", "a glass tipping over"]):
        effects = ["paws extended", "dog in mid-air", "dog landing", "tail wagging"]
        features = sequence_features(_random_frames(4, seed), cause, effects, dino, clip)
        assert features["dino_features"].shape == (1, 4, 32)
        assert features["image_features"].shape == features["effect_features"].shape == (1, 4, 24)
        metrics.update(**features)
    results = metrics.compute()
    assert set(results) == {"dino_tcs", "sds", "clip", "ccs", "cps", "etc"}
    assert all(torch.isfinite(v) for v in results.values()), results
    assert -1 <= results["ccs"] <= 1 and 0 <= results["sds"] <= 2


def test_pil_and_tensor_frames_give_the_same_features(extractors):
    dino, clip = extractors
    frames = _random_frames(3, 7)
    as_uint8 = torch.stack([torch.from_numpy(np.array(f)).permute(2, 0, 1) for f in frames])
    for extractor in extractors:
        torch.testing.assert_close(extractor.images(frames), extractor.images(as_uint8))
        torch.testing.assert_close(extractor.images(frames), extractor.images(as_uint8.float() / 255))
    assert torch.allclose(dino.images(frames).norm(dim=-1), torch.ones(3))


def test_clip_features_are_the_projected_embeddings(extractors):
    _, clip = extractors
    pixels = torch.rand(2, 3, 32, 32)
    expected = clip.model.visual_projection(clip.model.vision_model(pixel_values=pixels).pooler_output)
    torch.testing.assert_close(clip._image_features(pixels), expected)
    # the transformers 4 / 5 difference is handled in one place: a tensor or an output object
    tensor = torch.randn(2, 4)
    assert _projected(tensor) is tensor
    assert _projected(BaseModelOutputWithPooling(pooler_output=tensor)) is tensor


def test_clip_text_features_tell_texts_apart(extractors):
    _, clip = extractors
    features = clip.texts(["dog landing", "dog landing", "glass shatters on the floor"])
    assert features.shape == (3, 24)
    torch.testing.assert_close(features[0], features[1])
    assert not torch.allclose(features[0], features[2])


def test_extractors_load_from_a_local_folder(extractors, tmp_path):
    dino, clip = extractors
    dino.model.save_pretrained(tmp_path / "dino")
    dino.image_processor.save_pretrained(tmp_path / "dino")
    for part in (clip.model, clip.image_processor, clip.tokenizer):
        part.save_pretrained(tmp_path / "clip")
    frames, texts = _random_frames(2, 3), ["a dog", "a glass tipping over"]
    loaded_dino = DinoFeatures.from_pretrained(str(tmp_path / "dino"))
    loaded_clip = ClipFeatures.from_pretrained(str(tmp_path / "clip"))
    torch.testing.assert_close(loaded_dino.images(frames), dino.images(frames))
    torch.testing.assert_close(loaded_clip.images(frames), clip.images(frames))
    torch.testing.assert_close(loaded_clip.texts(texts), clip.texts(texts))


@pytest.mark.parametrize(
    ("loader", "setting"), [(DinoFeatures, "metrics.dino_model"), (ClipFeatures, "metrics.clip_model")]
)
def test_missing_weights_raise_a_user_error_naming_the_setting(loader, setting, tmp_path):
    with pytest.raises(UserError, match=setting) as err:
        loader.from_pretrained(str(tmp_path))
    assert "\n" not in str(err.value)

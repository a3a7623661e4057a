"""The baselines of DESIGN 8, built with tiny random weights, run end to end on the CPU."""

from __future__ import annotations

import kornia
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionInstructPix2PixPipeline, StableDiffusionPipeline
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.utils import instantiate
from PIL import Image

from causaldreamer.cli import CONFIG_DIR
from causaldreamer.errors import UserError
from causaldreamer.methods import SequenceMethod
from causaldreamer.methods.animatediff import build_animatediff
from causaldreamer.methods.controlnet import build_controlnet
from causaldreamer.methods.instruct_pix2pix import build_instruct_pix2pix
from causaldreamer.methods.loading import TINY_MODEL_ID, runtime
from causaldreamer.methods.text_to_image import build_sd15, build_sdxl
from causaldreamer.methods.tiny import tiny_controlnet, tiny_motion_adapter, tiny_sd15_components

CONF_DIR = CONFIG_DIR
BASELINES = ["sd15", "sd15_shared_seed", "sdxl", "controlnet", "instruct_pix2pix", "animatediff"]
CAUSE = "a dog jumps over a log"
EFFECTS = ["the dog lifts off", "the dog is above the log", "the dog lands on the grass"]
FRAME_SIZE = (32, 32)  # tiny latents are 16x16, the tiny VAE doubles them
STEPS = 2


def pixels(frames: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(frame, dtype=np.int16) for frame in frames])


@pytest.fixture(scope="module")
def tiny() -> dict[str, SequenceMethod]:
    return {
        "sd15": build_sd15(tiny=True, num_inference_steps=STEPS),
        "sd15_shared_seed": build_sd15(shared_seed=True, tiny=True, num_inference_steps=STEPS),
        "sdxl": build_sdxl(tiny=True, num_inference_steps=STEPS),
        "controlnet": build_controlnet(tiny=True, num_inference_steps=STEPS),
        "instruct_pix2pix": build_instruct_pix2pix(tiny=True, num_inference_steps=STEPS),
        "animatediff": build_animatediff(tiny=True, num_inference_steps=STEPS),
    }


@pytest.fixture(scope="module")
def sequences(tiny) -> dict[str, list[Image.Image]]:
    return {name: method.generate(CAUSE, EFFECTS, seed=0) for name, method in tiny.items()}


@pytest.mark.parametrize("name", BASELINES)
def test_each_baseline_draws_one_frame_per_effect(tiny, sequences, name):
    method, frames = tiny[name], sequences[name]
    assert len(frames) == len(EFFECTS)
    assert all(isinstance(frame, Image.Image) and frame.size == FRAME_SIZE for frame in frames)
    assert not np.array_equal(pixels(frames[:1]), pixels(frames[-1:]))  # frames are drawn, not copied
    assert method.name == name
    assert set(method.record()["model_ids"].values()) == {TINY_MODEL_ID}


@pytest.mark.parametrize("name", BASELINES)
def test_each_baseline_goes_into_the_prediction_module_frozen(tiny, name):
    """The loop of generate and evaluate holds every torch module a baseline draws with, each once."""
    from causaldreamer.generation.module import SequencePrediction

    module = SequencePrediction(tiny[name])
    parameters = list(module.parameters())
    assert "unet" in module.frozen and "vae" in module.frozen
    assert len({id(p) for p in parameters}) == len(parameters)
    assert parameters and not any(p.requires_grad for p in parameters)
    assert not any(m.training for m in module.frozen.modules())


def test_own_seeds_give_each_frame_its_latent_and_a_shared_seed_one_latent(tiny):
    same_effects = [EFFECTS[0]] * 3  # identical prompts: only the starting latent can tell frames apart
    own = pixels(tiny["sd15"].generate(CAUSE, same_effects, seed=5))
    shared = pixels(tiny["sd15_shared_seed"].generate(CAUSE, same_effects, seed=5))
    assert np.abs(shared - shared[:1]).max() <= 1  # same latent, same prompt: same frame (up to rounding)
    assert min(np.abs(own[i] - own[j]).mean() for i, j in [(0, 1), (0, 2), (1, 2)]) > 1
    sd15 = tiny["sd15"]
    alone = sd15.pipe(
        prompt=sd15.prompt(CAUSE, same_effects[0]),
        generator=torch.Generator().manual_seed(5 + 2),
        **sd15.sampling,
    ).images
    assert np.abs(pixels(alone)[0] - own[2]).max() <= 1  # frame f is a lone draw from seed + f


def test_controlnet_conditions_later_frames_on_the_canny_edges_of_frame_0(tiny, sequences):
    method = tiny["controlnet"]
    conditions = []
    hook = method.pipe.controlnet.register_forward_pre_hook(
        lambda module, args, kwargs: conditions.append(kwargs["controlnet_cond"].clone()), with_kwargs=True
    )
    try:
        frames = method.generate(CAUSE, EFFECTS, seed=0)
    finally:
        hook.remove()
    first = torch.from_numpy(np.array(frames[0])).permute(2, 0, 1)[None].float() / 255
    _, edges = kornia.filters.canny(first, 0.1, 0.2)
    assert 0 < edges.mean() < 1  # real edges, neither blank nor everywhere
    assert len(conditions) == STEPS  # every denoising step of frames 1..T-1 sees the control image
    for condition in conditions:
        assert condition.shape[0] == 2 * (len(EFFECTS) - 1)  # both CFG halves of every later frame
        assert torch.equal(condition, edges.expand_as(condition))
    plain_first = pixels(sequences["sd15"][:1])  # same tiny weights, seed and prompt
    assert np.abs(pixels(frames[:1]) - plain_first).max() <= 1  # frame 0 is plain SD 1.5


def test_instruct_pix2pix_edits_the_previous_frame(tiny):
    method = tiny["instruct_pix2pix"]
    inputs = []
    hook = method.edit_pipe.vae.encoder.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
    try:
        frames = method.generate(CAUSE, EFFECTS, seed=2)
    finally:
        hook.remove()
    assert len(inputs) == len(EFFECTS) - 1  # one edit per later frame
    for f, image in enumerate(inputs, start=1):
        previous = torch.from_numpy(np.array(frames[f - 1])).permute(2, 0, 1)[None].float() / 127.5 - 1
        torch.testing.assert_close(image, previous)


def test_animatediff_prompt_names_the_cause_then_the_effects_in_order(tiny):
    prompt = tiny["animatediff"].clip_prompt(CAUSE, EFFECTS)
    assert prompt == f"{CAUSE}. Therefore, {EFFECTS[0]}, then {EFFECTS[1]}, then {EFFECTS[2]}"


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, str]:
    """Tiny weights saved as diffusers folders, to load through the same code path as real weights."""
    root = tmp_path_factory.mktemp("weights")
    parts = tiny_sd15_components()
    StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None).save_pretrained(
        root / "sd15"
    )
    tiny_controlnet(parts["unet"]).save_pretrained(root / "controlnet")
    tiny_motion_adapter(parts["unet"]).save_pretrained(root / "motion_adapter")
    StableDiffusionInstructPix2PixPipeline(
        **tiny_sd15_components(unet_in_channels=8), safety_checker=None, feature_extractor=None
    ).save_pretrained(root / "instruct_pix2pix")
    build_sdxl(tiny=True).pipe.save_pretrained(root / "sdxl")
    return {
        name: str(root / name)
        for name in ["sd15", "controlnet", "motion_adapter", "instruct_pix2pix", "sdxl"]
    }


def test_every_baseline_loads_weights_from_local_folders(saved):
    methods = [
        build_sd15(model=saved["sd15"], num_inference_steps=STEPS),
        build_sdxl(model=saved["sdxl"], num_inference_steps=STEPS),
        build_controlnet(model=saved["sd15"], controlnet=saved["controlnet"], num_inference_steps=STEPS),
        build_instruct_pix2pix(
            model=saved["instruct_pix2pix"], first_frame_model=saved["sd15"], num_inference_steps=STEPS
        ),
        build_animatediff(
            model=saved["sd15"], motion_adapter=saved["motion_adapter"], num_inference_steps=STEPS
        ),
    ]
    for method in methods:
        assert TINY_MODEL_ID not in method.record()["model_ids"].values()
        frames = method.generate(CAUSE, EFFECTS[:2], seed=0)
        assert [frame.size for frame in frames] == [FRAME_SIZE] * 2
    animatediff_scheduler = methods[-1].pipe.scheduler
    assert isinstance(animatediff_scheduler, DDIMScheduler)
    assert animatediff_scheduler.config.beta_schedule == "linear"


@pytest.mark.parametrize(
    ("build", "setting", "found"),
    [
        (build_sd15, "model", {}),
        (build_sdxl, "model", {}),
        (build_controlnet, "controlnet", {}),
        (build_controlnet, "model", {"controlnet": "controlnet"}),
        (build_instruct_pix2pix, "first_frame_model", {}),
        (build_instruct_pix2pix, "model", {"first_frame_model": "sd15"}),
        (build_animatediff, "motion_adapter", {}),
        (build_animatediff, "model", {"motion_adapter": "motion_adapter"}),
    ],
)
def test_missing_weights_give_one_line_naming_the_setting(build, setting, found, saved, tmp_path):
    present = {key: saved[folder] for key, folder in found.items()}
    with pytest.raises(UserError, match=rf"^could not load .* set method\.{setting} to ") as error:
        build(**{setting: str(tmp_path / "missing")}, **present)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("settings", "name"),
    [({"scheduler": "euler"}, "method.scheduler"), ({"template": "{effect} only"}, "template")],
)
def test_bad_settings_fail_before_loading(settings, name, tmp_path):
    with pytest.raises(UserError, match=name):
        build_sd15(model=str(tmp_path / "missing"), **settings)


def test_runtime_is_fp16_on_cuda_except_for_tiny_models(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime(None, tiny=False) == (torch.device("cuda"), torch.float16)
    assert runtime(None, tiny=True) == (torch.device("cuda"), torch.float32)
    assert runtime("cpu", tiny=False) == (torch.device("cpu"), torch.float32)


ConfigStore.instance().store(name="baselines_test", node={"defaults": [{"method": "sd15"}, "_self_"]})


@pytest.mark.parametrize("name", BASELINES)
def test_each_method_config_instantiates_in_tiny_mode(name):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="baselines_test",
            overrides=[f"method={name}", "method.tiny=true", f"method.num_inference_steps={STEPS}"],
        )
    method = instantiate(cfg.method)
    assert isinstance(method, SequenceMethod)
    assert method.name == name
    assert method.num_inference_steps == STEPS

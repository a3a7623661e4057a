"""Sequence generation end to end: span location, the batched intervention pipeline, the Hydra CLI.

Real parts throughout: MiniLM, an adapter folder as the trainer exports it, diffusers' pipeline with tiny
random weights, Hydra in a subprocess. The adapter's gate and bias heads get random weights (an untrained
adapter starts neutral), so that the intervention visibly reaches the frames.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import inspect
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import write_adapter_folder
from diffusers import DDIMScheduler, PNDMScheduler
from hydra import compose, initialize_config_dir
from PIL import Image
from transformers import CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from causaldreamer.bank import EffectBank
from causaldreamer.cli import CONFIG_DIR
from causaldreamer.diffusion import processor
from causaldreamer.diffusion.adapter_folder import load_adapter_folder
from causaldreamer.diffusion.pipeline import CausalSequenceGenerator
from causaldreamer.diffusion.sd15 import load_stable_diffusion
from causaldreamer.diffusion.sequence_files import image_grid, sequence_folder_name, write_sequence
from causaldreamer.diffusion.settings import GenerationSettings, check_settings
from causaldreamer.diffusion.spans import frame_prompts_and_spans
from causaldreamer.diffusion.tiny import TINY_MODEL_ID, build_tiny_pipeline
from causaldreamer.encoders import MiniLMEncoder
from causaldreamer.errors import EXIT_USER_ERROR, UserError
from causaldreamer.generate import generate
from causaldreamer.intervention import SPAN_CAUSE, SPAN_EFFECT, SPAN_NONE, intervention_key_scale_and_bias
from causaldreamer.io import atomic_path
from causaldreamer.prompts import DEFAULT_TEMPLATE

ROOT = Path(__file__).resolve().parent.parent
BANK_SIZE, FRAMES, STEPS = 300, 4, 2
CAUSE = "a dog running in a park"


@pytest.fixture(scope="module")
def encoder(minilm) -> MiniLMEncoder:
    """The session's MiniLM (conftest), loaded once for every test that needs it."""
    return minilm


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, encoder, data_dir) -> Path:
    return write_adapter_folder(tmp_path_factory.mktemp("adapter"), encoder, data_dir, BANK_SIZE)


@pytest.fixture(scope="module")
def generator(adapter_dir, encoder) -> CausalSequenceGenerator:
    settings = GenerationSettings(num_frames=FRAMES, top_k=FRAMES, num_inference_steps=STEPS)
    return CausalSequenceGenerator(build_tiny_pipeline(), load_adapter_folder(adapter_dir), encoder, settings)


def span_letters(tokenizer, ids: torch.Tensor, span_ids: torch.Tensor, span: int) -> str:
    """The span's tokens decoded, without spaces (CLIP's decode spaces out punctuation)."""
    return tokenizer.decode(ids[span_ids == span].tolist()).replace(" ", "")


def test_spans_cover_exactly_the_cause_and_effect_tokens(generator):
    tokenizer = generator.pipe.tokenizer
    effects = ["the dog's tongue hangs out", "mud splashes, everywhere!"]
    prompts, span_ids = frame_prompts_and_spans(tokenizer, DEFAULT_TEMPLATE, "A Dog runs", effects)
    assert prompts == [f"A Dog runs. Therefore, {effect}" for effect in effects]
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True)
    ids = torch.tensor(ids["input_ids"])
    assert span_ids.shape == ids.shape == (2, tokenizer.model_max_length)
    for row, effect in enumerate(effects):
        assert span_letters(tokenizer, ids[row], span_ids[row], SPAN_CAUSE) == "adogruns"
        assert span_letters(tokenizer, ids[row], span_ids[row], SPAN_EFFECT) == effect.replace(" ", "")
        assert span_ids[row, 0] == SPAN_NONE and span_ids[row, -1] == SPAN_NONE  # start and padding


def test_an_effect_lost_to_truncation_is_reported(generator, caplog):
    long_cause = " ".join(["an extremely long and winding cause"] * 12)
    _, span_ids = frame_prompts_and_spans(generator.pipe.tokenizer, DEFAULT_TEMPLATE, long_cause, ["it ends"])
    assert not (span_ids == SPAN_EFFECT).any()
    assert "lose their whole effect" in caplog.text


def clip_tokenizer_from_merges(merges_gz: Path) -> CLIPTokenizer:
    """SD 1.5's CLIP tokenizer rebuilt from open_clip's merges (DESIGN 10): byte symbols, the same with
    </w>, the 48,894 joined merges, then the two specials."""
    import gzip

    with gzip.open(merges_gz, "rt", encoding="utf-8") as handle:
        merges = [tuple(line.split()) for line in handle.read().split("\n")[1 : 49152 - 256 - 2 + 1]]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, model_max_length=77)


@pytest.fixture(scope="module")
def real_clip_tokenizer() -> CLIPTokenizer:
    """From the open_clip_torch wheel (fetched once into the temp dir with pip); skipped when unreachable."""
    folder = Path(tempfile.gettempdir()) / "causaldreamer-open-clip"
    merges = folder / "bpe_simple_vocab_16e6.txt.gz"
    if not merges.is_file():
        folder.mkdir(exist_ok=True)
        try:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "-q",
                    "open_clip_torch",
                    "-d",
                    str(folder),
                ],
                check=True,
                capture_output=True,
                timeout=120,
            )
            wheel = max(folder.glob("open_clip_torch-*.whl"))
            with zipfile.ZipFile(wheel) as archive, atomic_path(merges) as tmp:
                tmp.write_bytes(archive.read("open_clip/bpe_simple_vocab_16e6.txt.gz"))
        except (OSError, ValueError, KeyError, subprocess.SubprocessError, zipfile.BadZipFile) as err:
            pytest.skip(f"open_clip's BPE vocabulary is not obtainable here ({type(err).__name__})")
    return clip_tokenizer_from_merges(merges)


def test_spans_on_the_real_clip_word_pieces(real_clip_tokenizer):
    tokenizer = real_clip_tokenizer
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    cause, effect = "A skateboarder's wheel hits a pebble", "the skateboarder tumbles forward"
    prompts, span_ids = frame_prompts_and_spans(tokenizer, DEFAULT_TEMPLATE, cause, [effect])
    ids = torch.tensor(tokenizer(prompts, padding="max_length", max_length=77, truncation=True)["input_ids"])
    pieces = tokenizer.convert_ids_to_tokens(ids[0].tolist())
    cause_pieces = [p for p, s in zip(pieces, span_ids[0].tolist(), strict=True) if s == SPAN_CAUSE]
    effect_pieces = [p for p, s in zip(pieces, span_ids[0].tolist(), strict=True) if s == SPAN_EFFECT]
    assert "".join(cause_pieces).replace("</w>", " ").strip() == "a skateboarder 's wheel hits a pebble"
    assert "".join(effect_pieces).replace("</w>", " ").strip() == "the skateboarder tumbles forward"
    assert len(cause_pieces) > len(cause.split())  # real sub-word pieces, not whole words
    outside = [p for p, s in zip(pieces, span_ids[0].tolist(), strict=True) if s == SPAN_NONE]
    assert outside[:4] == ["<|startoftext|>", ".</w>", "therefore</w>", ",</w>"]


class CallCounter:
    """A forward hook that counts calls (and keeps the first input), on the real modules."""

    def __init__(self, modules):
        self.calls, self.first_input = 0, None
        self.handles = [m.register_forward_pre_hook(self) for m in modules]

    def __call__(self, module, args):
        self.calls += 1
        if self.first_input is None:
            self.first_input = args[0].detach().clone()

    def remove(self):
        for handle in self.handles:
            handle.remove()


def test_one_batched_call_from_one_latent_with_the_adapter_run_once(generator, adapter_dir, monkeypatch):
    key_scale_builds = []

    def counted(*args, **kwargs):
        key_scale_builds.append(1)
        return intervention_key_scale_and_bias(*args, **kwargs)

    monkeypatch.setattr(processor, "intervention_key_scale_and_bias", counted)
    unet = generator.pipe.unet
    cross_attention = [m for name, m in unet.named_modules() if name.endswith("attn2")]
    adapter_calls, unet_calls = CallCounter([generator.adapter]), CallCounter([unet])
    attn2_calls = CallCounter(cross_attention)
    try:
        sequence = generator.generate(CAUSE, seed=42)
    finally:
        for counter in (adapter_calls, unet_calls, attn2_calls):
            counter.remove()
    assert adapter_calls.calls == 1
    assert unet_calls.calls == STEPS  # all frames in one batch per step, not one call per frame
    assert attn2_calls.calls == STEPS * len(cross_attention)
    assert len(key_scale_builds) == 1  # the intervention's key scale and bias: once for all layers and steps
    first_latents = unet_calls.first_input
    assert first_latents.shape[0] == 2 * FRAMES  # [uncond; cond] under guidance
    assert (first_latents == first_latents[:1]).all()  # the same initial latent for every frame

    assert len(sequence.frames) == FRAMES
    assert all(isinstance(f, Image.Image) and f.size == (32, 32) for f in sequence.frames)
    record = sequence.record
    bank = EffectBank.load(adapter_dir)
    assert record["cause"] == CAUSE and record["seed"] == 42 and record["lambda"] == 0.7
    assert [f["effect"] for f in record["frames"]] == [bank.texts[f["bank_index"]] for f in record["frames"]]
    positions = [f["t_k"] for f in record["frames"]]
    assert positions == sorted(positions)  # ordered along the causal direction
    assert [f["progress"] for f in record["frames"]] == [(f + 1) / FRAMES for f in range(FRAMES)]
    assert record["models"]["diffusion"] == TINY_MODEL_ID
    assert (
        record["adapter_sha256"]
        == hashlib.sha256((adapter_dir / "model.safetensors").read_bytes()).hexdigest()
    )


def test_same_seed_same_frames_and_lambda_reaches_the_frames(generator):
    settings = generator.settings
    generator.settings = dataclasses.replace(settings, num_inference_steps=1)
    try:
        first = generator.generate(CAUSE, seed=7).frames
        again = generator.generate(CAUSE, seed=7).frames
        generator.settings = dataclasses.replace(generator.settings, lam=3.0)
        stronger = generator.generate(CAUSE, seed=7).frames
    finally:
        generator.settings = settings
    assert all(a.tobytes() == b.tobytes() for a, b in zip(first, again, strict=True))
    assert any(a.tobytes() != b.tobytes() for a, b in zip(first, stronger, strict=True))


def test_path_retrieval_with_shared_first_frame(adapter_dir, encoder):
    settings = GenerationSettings(
        num_frames=3, top_k=3, num_inference_steps=1, retrieval="path", share_first_frame=True
    )
    generator = CausalSequenceGenerator(
        build_tiny_pipeline(), load_adapter_folder(adapter_dir), encoder, settings
    )
    sequence = generator.generate(CAUSE, seed=0)
    indices = [f["bank_index"] for f in sequence.record["frames"]]
    assert len(sequence.frames) == 3 and len(set(indices)) == 3  # path retrieval never repeats an effect
    assert sequence.record["share_first_frame"] is True


def test_top_k_is_the_number_of_effects_shown_in_both_retrieval_modes(generator):
    """K effects, held over neighbouring frames when K < T: what coverage scores is what the frames show."""
    settings = generator.settings
    try:
        for retrieval in ("topk", "path"):
            shown = {}
            for top_k in (1, 2, FRAMES):
                generator.settings = dataclasses.replace(settings, top_k=top_k, retrieval=retrieval)
                indices = generator.plan(CAUSE).retrieved.bank_indices
                assert len(indices) == FRAMES and len(set(indices)) == top_k, (retrieval, top_k)
                assert indices == sorted(indices, key=indices.index)  # each effect on consecutive frames
                shown[top_k] = indices
            assert len({tuple(indices) for indices in shown.values()}) == 3
    finally:
        generator.settings = settings


def test_generators_sharing_a_pipeline_interleaved_draw_what_each_draws_alone(adapter_dir, encoder):
    """The intervention travels with each pipeline call, so one generator's calls cannot change another's."""
    folder = load_adapter_folder(adapter_dir)
    settings = (
        {"num_frames": 3, "top_k": 3, "share_first_frame": True},
        {"num_frames": 2, "top_k": 2, "lam": 1.5},
    )

    def frames(generator) -> list[bytes]:
        return [image.tobytes() for image in generator.generate(CAUSE, seed=0).frames]

    def make(pipe, kwargs) -> CausalSequenceGenerator:
        settings = GenerationSettings(num_inference_steps=STEPS, **kwargs)
        return CausalSequenceGenerator(pipe, folder, encoder, settings)

    alone = [frames(make(build_tiny_pipeline(), kwargs)) for kwargs in settings]
    pipe = build_tiny_pipeline()
    first, second = (make(pipe, kwargs) for kwargs in settings)
    interleaved = [frames(first), frames(second), frames(first), frames(second)]
    assert interleaved == [alone[0], alone[1], alone[0], alone[1]]


def test_ablations_own_seed_per_frame_and_no_progression(adapter_dir, encoder, generator):
    settings = GenerationSettings(num_frames=FRAMES, top_k=FRAMES, progression=False, shared_seed=False)
    ablated = CausalSequenceGenerator(
        build_tiny_pipeline(), load_adapter_folder(adapter_dir), encoder, settings
    )
    latents, shared = ablated.initial_latents(seed=5), generator.initial_latents(seed=5)
    assert torch.equal(latents[0], shared[0])  # frame f starts from seed + f
    assert all(not torch.equal(latents[f], latents[0]) for f in range(1, FRAMES))
    plan = ablated.plan(CAUSE)
    assert ablated.intervention(plan).progress.tolist() == [1.0] * FRAMES
    assert generator.intervention(plan).progress.tolist() == [(f + 1) / FRAMES for f in range(FRAMES)]


def test_sd15_loader_reads_a_local_folder_and_uses_ddim(tmp_path):
    saved = build_tiny_pipeline()
    saved.scheduler = PNDMScheduler.from_config(saved.scheduler.config)  # SD 1.5 ships PNDM
    saved.save_pretrained(tmp_path / "sd")
    pipe = load_stable_diffusion(str(tmp_path / "sd"), device="cpu")
    assert isinstance(pipe.scheduler, DDIMScheduler) and pipe.unet.dtype == torch.float32
    torch.testing.assert_close(pipe.unet.state_dict(), saved.unet.state_dict())


def test_missing_sd_weights_are_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="diffusion.pipeline.name_or_path") as error:
        load_stable_diffusion(str(tmp_path / "no-such-model"), device="cpu")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"num_frames": 1}, "num_frames"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": BANK_SIZE + 1}, "top_k"),
        ({"lam": float("nan")}, "lam"),
        ({"lam": float("inf")}, "lam"),
        ({"retrieval": "nearest"}, "retrieval"),
        ({"template": "{cause} then"}, "template"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
    ],
)
def test_bad_settings_are_refused(override, message):
    settings = GenerationSettings(**{"num_frames": 8, "top_k": 8, "lam": 0.7, **override})
    with pytest.raises(UserError, match=message):
        check_settings(settings, BANK_SIZE)


def compose_generate(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("generate", overrides=["diffusion=tiny", *overrides])


@pytest.mark.parametrize(
    "overrides",
    [
        ["cause=''"],
        ["cause='   '"],
        ["generation.num_frames=1"],
        ["generation.top_k=0"],
        [f"generation.top_k={BANK_SIZE + 1}"],
        ["generation.lam=nan"],
        ["adapter=/nonexistent/adapter"],
        ["causes_file=/nonexistent/causes.csv", "cause=null"],
    ],
    ids=["empty", "blank", "one-frame", "top_k-0", "top_k-over-bank", "lam-nan", "no-adapter", "no-file"],
)
def test_bad_input_writes_nothing(adapter_dir, tmp_path, overrides):
    output_dir = tmp_path / "out"
    cfg = compose_generate(
        [f"cause={CAUSE!r}", f"adapter={adapter_dir}", f"output_dir={output_dir}", *overrides]
    )
    with pytest.raises(UserError):
        generate(cfg)
    assert not output_dir.exists()


def test_complete_sequences_are_skipped_without_loading_models(adapter_dir, tmp_path):
    folder = tmp_path / sequence_folder_name(0, CAUSE)
    write_sequence(folder, [Image.new("RGB", (8, 8))] * 2, {"cause": CAUSE})
    before = sorted(p.name for p in folder.iterdir())
    cfg = compose_generate([f"cause={CAUSE!r}", f"adapter={adapter_dir}", f"output_dir={tmp_path}"])
    cfg.encoder.name_or_path = "/nonexistent/encoder"  # would fail if anything were loaded
    assert generate(cfg) == [folder]
    assert sorted(p.name for p in folder.iterdir()) == before


def run_cli(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "causaldreamer.generate", "diffusion=tiny", *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_writes_each_sequence_of_a_causes_file(adapter_dir, data_dir, tmp_path):
    output_dir = tmp_path / "out"
    result = run_cli(
        f"causes_file={data_dir / 'test_counterfactual.csv'}",
        "limit=2",
        "generation.num_frames=3",
        "generation.top_k=5",
        "generation.num_inference_steps=1",
        f"adapter={adapter_dir}",
        f"output_dir={output_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "images are noise" in result.stdout + result.stderr
    with open(data_dir / "test_counterfactual.csv", newline="", encoding="utf-8") as handle:
        causes = [row["cause"] for row in csv.DictReader(handle)][:2]
    folders = sorted(p for p in output_dir.iterdir() if p.is_dir())
    assert [p.name for p in folders] == [sequence_folder_name(i, c) for i, c in enumerate(causes)]
    for folder, cause in zip(folders, causes, strict=True):
        names = {"frame_00.png", "frame_01.png", "frame_02.png", "grid.png", "sequence.gif", "record.json"}
        assert {p.name for p in folder.iterdir()} == names
        record = json.loads((folder / "record.json").read_text())
        assert record["cause"] == cause and record["top_k"] == 5 and len(record["frames"]) == 3
        assert all({"effect", "score", "t_k"} <= set(f) for f in record["frames"])
        frames = [Image.open(folder / f"frame_{f:02d}.png") for f in range(3)]
        effects = [frame["effect"] for frame in record["frames"]]
        assert Image.open(folder / "grid.png").tobytes() == image_grid(frames, effects).tobytes()
        assert Image.open(folder / "sequence.gif").n_frames == 3
    assert not [p for p in output_dir.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(adapter_dir, tmp_path):
    output_dir = tmp_path / "out"
    result = run_cli(
        f"cause={CAUSE!r}",
        f"generation.top_k={BANK_SIZE + 1}",
        f"adapter={adapter_dir}",
        f"output_dir={output_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == EXIT_USER_ERROR
    assert result.stderr.strip().splitlines()[-1].startswith("error: top_k=")
    assert "Traceback" not in result.stderr
    assert not output_dir.exists()


# -- one settings object for every entry point ------------------------------------------------------------

ENTRY_POINTS = [("generate", []), ("evaluate", []), ("train", ["+experiment=study"])]


def compose_entry(config: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config, overrides=overrides)


@pytest.mark.parametrize(("config", "overrides"), ENTRY_POINTS)
def test_the_library_defaults_are_the_command_lines(config, overrides):
    from hydra.utils import instantiate

    from causaldreamer.metrics.coverage import counterfactual_coverage, coverage_of_predictions
    from causaldreamer.retrieval import retrieve_effects, retrieve_sequence

    cfg = compose_entry(config, overrides)
    defaults = GenerationSettings()
    assert instantiate(cfg.generation) == defaults
    for function in (retrieve_effects, retrieve_sequence, counterfactual_coverage, coverage_of_predictions):
        parameters = inspect.signature(function).parameters
        assert parameters["mode"].default == defaults.retrieval, function.__name__
        assert parameters["top_k"].default == defaults.top_k, function.__name__
    assert inspect.signature(CausalSequenceGenerator).parameters["settings"].default == defaults
    assert inspect.signature(load_stable_diffusion).parameters["safety_checker"].default is False
    if config == "evaluate":
        assert cfg.method.settings == cfg.generation  # CausalDreamer's method reads the same node


@pytest.mark.parametrize(
    ("ablation", "setting", "value"),
    [
        ("no_progression", "progression", False),
        ("no_shared_seed", "shared_seed", False),
        ("shared_attention", "share_first_frame", True),
    ],
)
@pytest.mark.parametrize(("config", "overrides"), ENTRY_POINTS)
def test_a_generation_ablation_sets_the_same_key_in_every_entry_point(
    config, overrides, ablation, setting, value
):
    from hydra.utils import instantiate

    cfg = compose_entry(config, [*overrides, f"+ablation={ablation}"])
    assert getattr(instantiate(cfg.generation), setting) == value


def test_the_safety_checker_is_one_setting_and_every_record_says_it(generator, adapter_dir, tmp_path):
    from omegaconf import OmegaConf

    from causaldreamer.methods.causaldreamer import build_causaldreamer
    from causaldreamer.methods.text_to_image import build_sd15

    assert generator.shared_record()["safety_checker"] is False
    assert build_sd15(tiny=True, num_inference_steps=1).record()["safety_checker"] is False
    saved = build_tiny_pipeline()
    saved.save_pretrained(tmp_path / "sd")
    loader = {
        "_target_": "causaldreamer.diffusion.sd15.load_stable_diffusion",
        "name_or_path": str(tmp_path / "sd"),
    }
    encoder = OmegaConf.create({"_target_": "causaldreamer.encoders.MiniLMEncoder"})
    method = build_causaldreamer(str(adapter_dir), OmegaConf.create(loader | {"device": "cpu"}), encoder)
    assert method.generator.pipe.safety_checker is None and method.record()["safety_checker"] is False
    tiny = OmegaConf.create({"_target_": "causaldreamer.diffusion.tiny.build_tiny_pipeline"})
    with pytest.raises(UserError, match="builds no safety checker"):
        build_causaldreamer(str(adapter_dir), tiny, encoder, GenerationSettings(safety_checker=True))
    assert compose_generate([]).generation.safety_checker is False  # generate: the same node and default


def test_cli_under_ddp_with_fewer_causes_than_processes(adapter_dir, tmp_path):
    """One cause, two gloo processes: the one with no share gets an empty batch and still finishes."""
    output_dir = tmp_path / "out"
    result = run_cli(
        f"cause={CAUSE!r}",
        "generation.num_frames=2",
        "generation.num_inference_steps=1",
        f"adapter={adapter_dir}",
        f"output_dir={output_dir}",
        "trainer=ddp_cpu",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "MEMBER: 2/2" in result.stdout + result.stderr
    (folder,) = (p for p in output_dir.iterdir() if p.is_dir())
    assert folder.name == sequence_folder_name(0, CAUSE) and (folder / "record.json").is_file()

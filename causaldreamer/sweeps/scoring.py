"""After training, score the exported adapter the way the studies compare runs (DESIGN 7).

Recall alone rewards an adapter that overfits the terse training causes, so every scored run also
reports counterfactual coverage on the free-form causes of ``test_counterfactual.csv``, beside the
zero-shot baseline (text side, seconds on a CPU). When a diffusion model is configured
(``diffusion=sd15``, or ``diffusion=tiny`` for tests), it also generates sequences for the first
scenarios with the run's top_k and the adapter's own lambda and template (the run's, unless
``scoring.generation`` overrides them), writes them under ``<run>/sequences`` and reports the six image
metrics. Enabled by the ``scoring`` key (``+experiment=study`` and every sweep experiment).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import lightning as L
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig

from causaldreamer.data.embedding_cache import CachedSentences
from causaldreamer.diffusion.adapter_folder import AdapterFolder, load_adapter_folder
from causaldreamer.diffusion.settings import RETRIEVAL_MODES, check_settings
from causaldreamer.encoders import TextEncoder
from causaldreamer.errors import UserError
from causaldreamer.metrics.coverage import coverage_against_zero_shot

log = logging.getLogger(__name__)

FEATURES = ("pretrained", "tiny")


class RunScorer:
    """Built before training, so bad scoring settings fail in seconds, not after the run."""

    def __init__(self, cfg: DictConfig):
        self.scoring, self.diffusion = cfg.scoring, cfg.get("diffusion")
        if "scenarios" not in self.scoring:  # e.g. +ablation=no_progression without a scored experiment
            raise UserError(
                "scoring settings are incomplete; generation ablations need a scored run with a diffusion "
                "model, e.g. +experiment=study diffusion=sd15 +ablation=no_progression"
            )
        self.cache_dir, self.output_dir = cfg.paths.cache_dir, Path(cfg.paths.output_dir)
        if not cfg.get("export_dir"):
            raise UserError(
                "scoring needs the exported adapter; set export_dir (e.g. export_dir=${paths.output_dir}/adapter)"
            )
        self.scenarios_file = Path(self.scoring.scenarios)
        if not self.scenarios_file.is_file():
            raise UserError(
                f"scoring.scenarios={self.scenarios_file} not found; point it at test_counterfactual.csv"
            )
        if self.scoring.retrieval not in RETRIEVAL_MODES:
            raise UserError(
                f"scoring.retrieval={self.scoring.retrieval!r}: use one of {', '.join(RETRIEVAL_MODES)}"
            )
        if not _positive_int(self.scoring.top_k):
            raise UserError(f"scoring.top_k={self.scoring.top_k!r}: must be an integer >= 1")
        if self.scoring.limit is not None and not _positive_int(self.scoring.limit):
            raise UserError(
                f"scoring.limit={self.scoring.limit!r}: must be null (all scenarios) or an integer >= 1"
            )
        if self.diffusion:
            self._check_generation()

    def _check_generation(self) -> None:
        gen = self.scoring.generation
        if not _positive_int(gen.num_scenarios):
            raise UserError(
                f"scoring.generation.num_scenarios={gen.num_scenarios!r}: must be an integer >= 1"
            )
        if gen.features not in FEATURES:
            raise UserError(f"scoring.generation.features={gen.features!r}: use one of {', '.join(FEATURES)}")
        check_settings(  # the bank's size is known only after training; the generator checks it again
            num_frames=gen.num_frames,
            top_k=self.scoring.top_k,
            lam=gen.lam,
            bank_size=sys.maxsize,
            retrieval=self.scoring.retrieval,
            template=gen.template,
            guidance_scale=self.diffusion.guidance_scale,
            num_inference_steps=self.diffusion.num_inference_steps,
        )

    def score(self, adapter_dir: Path, encoder: TextEncoder, trainer: L.Trainer) -> dict[str, float]:
        """Coverage (and image metrics), logged to the run's loggers and returned."""
        folder = load_adapter_folder(adapter_dir)
        scenarios = pd.read_csv(self.scenarios_file)
        if self.scoring.limit is not None:
            scenarios = scenarios.head(self.scoring.limit)
        metrics = self.coverage(folder, encoder, scenarios)
        if self.diffusion:
            metrics.update(self.generation(folder, encoder, scenarios, self.output_dir / "sequences"))
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            logger.save()
        for name, value in metrics.items():
            log.info("%s = %.4f", name, value)
        return metrics

    def coverage(
        self, folder: AdapterFolder, encoder: TextEncoder, scenarios: pd.DataFrame
    ) -> dict[str, float]:
        mode = self.scoring.retrieval
        results = coverage_against_zero_shot(
            folder.adapter,
            CachedSentences(encoder, self.cache_dir),
            folder.bank,
            scenarios,
            (mode,),
            self.scoring.top_k,
            self.scoring.threshold,
        )
        adapter, zero_shot = results[mode], results["zero_shot"]
        return {
            "coverage/mean": adapter["mean"],
            "coverage/share": adapter["share"],
            "coverage/zero_shot/mean": zero_shot["mean"],
            "coverage/zero_shot/share": zero_shot["share"],
            "coverage/gain": adapter["gain"],
            "coverage/gain_se": adapter["gain_se"],
        }

    def generator(self, folder: AdapterFolder, encoder: TextEncoder):
        """The sequence generator this run's scoring config describes (the ablation switches included)."""
        # Imported only here: diffusers takes seconds to import.
        from causaldreamer.diffusion.pipeline import CausalSequenceGenerator

        gen, diffusion = self.scoring.generation, self.diffusion
        generator = CausalSequenceGenerator(
            instantiate(diffusion.pipeline),
            folder,
            encoder,
            num_frames=gen.num_frames,
            top_k=self.scoring.top_k,
            guidance_scale=diffusion.guidance_scale,
            num_inference_steps=diffusion.num_inference_steps,
            retrieval=self.scoring.retrieval,
            share_first_frame=gen.share_first_frame,
            progression=gen.progression,
            shared_seed=gen.shared_seed,
            height=diffusion.height,
            width=diffusion.width,
            **folder.generation_settings(gen.lam, gen.template),
        )
        generator.pipe.set_progress_bar_config(disable=True)
        return generator

    def generation(
        self, folder: AdapterFolder, encoder: TextEncoder, scenarios: pd.DataFrame, output_dir: Path
    ) -> dict[str, float]:
        """Generate the first num_scenarios sequences into ``output_dir`` and score them."""
        from causaldreamer.diffusion.sequence_files import sequence_folder_name, write_sequence
        from causaldreamer.evaluation.sequences import score_sequences
        from causaldreamer.metrics.features import ClipFeatures, DinoFeatures

        gen = self.scoring.generation
        generator = self.generator(folder, encoder)
        if gen.features == "tiny":
            dino, clip = DinoFeatures.tiny(), ClipFeatures.tiny()
        else:
            dino, clip = (
                DinoFeatures.from_pretrained(gen.dino_model),
                ClipFeatures.from_pretrained(gen.clip_model),
            )
        dino, clip = dino.to(generator.pipe.device), clip.to(generator.pipe.device)
        chosen, folders = folder.settings_record(gen.lam, gen.template), []
        for i, cause in enumerate(scenarios["cause"].head(gen.num_scenarios)):
            sequence = generator.generate(cause, gen.seed)
            record = sequence.record | chosen
            folders.append(
                write_sequence(output_dir / sequence_folder_name(i, cause), sequence.frames, record)
            )
        _, means = score_sequences(folders, dino, clip)  # the same scoring as causaldreamer.evaluate
        return {f"gen/{name}": value for name, value in means.items()}


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1

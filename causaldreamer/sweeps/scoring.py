"""After training, score the exported adapter the way the studies compare runs (DESIGN 7).

Recall alone rewards an adapter that overfits the terse training causes, so every scored run also
reports counterfactual coverage on the free-form causes of ``test_counterfactual.csv``, beside the
zero-shot baseline (text side, seconds on a CPU), retrieving as the ``generation`` settings say (top_k,
retrieval). When a diffusion model is configured (``diffusion=sd15``, or ``diffusion=tiny`` for tests),
it also generates sequences for the first scenarios with those settings (the adapter's own lambda and
template unless they say otherwise), writes them under ``<run>/sequences`` and reports the six image
metrics. Enabled by the ``scoring`` key (``+experiment=study`` and every sweep experiment).

``scoring.sweep`` scores generation-time settings one after another from the same adapter (they do not
enter training, so one training serves them all): each combination in ``<run>/sweep/<i>/`` with its
``metrics.json`` and sequences, as a multirun's jobs, and the summary of them all in ``<run>/sweep/``;
the run's own metrics then hold its coverage only.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
from pathlib import Path

import lightning as L
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from causaldreamer.cli import CONFIG_DIR
from causaldreamer.config import write_run_record
from causaldreamer.data.embedding_cache import CachedSentences
from causaldreamer.diffusion.adapter_folder import AdapterFolder, load_adapter_folder
from causaldreamer.diffusion.settings import GenerationSettings, check_settings
from causaldreamer.encoders import TextEncoder
from causaldreamer.errors import UserError
from causaldreamer.metrics.coverage import coverage_against_zero_shot
from causaldreamer.sweeps.records import job_overrides, write_run_metrics
from causaldreamer.sweeps.summary import write_summary

log = logging.getLogger(__name__)

FEATURES = ("pretrained", "tiny")
SWEEP_DIR = "sweep"
ABLATION_DIR = CONFIG_DIR / "ablation"


def run_scorer(cfg: DictConfig) -> RunScorer | None:
    """The run's scorer, if it is scored. Generation settings that nothing would use (an ablation such as
    +ablation=no_progression without a scored run or a diffusion model for the previews) are refused."""
    if cfg.get("scoring") or (cfg.get("generation") and not cfg.get("diffusion")):
        return RunScorer(cfg)
    return None


class RunScorer:
    """Built before training, so bad scoring settings fail in seconds, not after the run."""

    def __init__(self, cfg: DictConfig):
        self.cfg, self.scoring, self.diffusion = cfg, cfg.get("scoring") or {}, cfg.get("diffusion")
        if "scenarios" not in self.scoring:  # e.g. +ablation=no_progression without a scored experiment
            raise UserError(
                "scoring settings are incomplete; generation ablations need a scored run with a diffusion "
                "model, e.g. +experiment=study diffusion=sd15 +ablation=no_progression"
            )
        self.output_dir = Path(cfg.paths.output_dir)
        if not cfg.get("export_dir"):
            raise UserError(
                "scoring needs the exported adapter; set export_dir (e.g. export_dir=${paths.output_dir}/adapter)"
            )
        self.scenarios_file = Path(self.scoring.scenarios)
        if not self.scenarios_file.is_file():
            raise UserError(
                f"scoring.scenarios={self.scenarios_file} not found; point it at test_counterfactual.csv"
            )
        if self.scoring.limit is not None and not _positive_int(self.scoring.limit):
            raise UserError(
                f"scoring.limit={self.scoring.limit!r}: must be null (all scenarios) or an integer >= 1"
            )
        self.settings = instantiate(cfg.generation)
        self.variants = sweep_variants(self.scoring.sweep, self.settings)
        for settings in {self.settings, *(settings for _, settings in self.variants)}:
            check_settings(settings)  # the bank's size is known after training: retrieval checks it
        if self.diffusion:
            if not _positive_int(self.scoring.num_scenarios):
                raise UserError(
                    f"scoring.num_scenarios={self.scoring.num_scenarios!r}: must be an integer >= 1"
                )
            if self.scoring.features not in FEATURES:
                raise UserError(
                    f"scoring.features={self.scoring.features!r}: use one of {', '.join(FEATURES)}"
                )

    def score(self, adapter_dir: Path, encoder: TextEncoder, trainer: L.Trainer) -> dict[str, float]:
        """The run's settings scored (coverage, and image metrics), logged to the run's loggers and
        returned; then each combination of ``scoring.sweep``."""
        folder = load_adapter_folder(adapter_dir)
        scenarios = pd.read_csv(self.scenarios_file)
        if self.scoring.limit is not None:
            scenarios = scenarios.head(self.scoring.limit)
        if self.variants:  # the images of each combination land in its own folder
            metrics = self.coverage(self.settings, folder, encoder, scenarios)
        else:
            metrics = self.metrics(self.settings, folder, encoder, scenarios, self.output_dir / "sequences")
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            logger.save()
        for name, value in metrics.items():
            log.info("%s = %.4f", name, value)
        if self.variants:
            self.sweep(folder, encoder, scenarios)
        return metrics

    def metrics(
        self,
        settings: GenerationSettings,
        folder: AdapterFolder,
        encoder: TextEncoder,
        scenarios: pd.DataFrame,
        sequences_dir: Path,
    ) -> dict[str, float]:
        metrics = self.coverage(settings, folder, encoder, scenarios)
        if self.diffusion:
            metrics.update(self.generation(settings, folder, encoder, scenarios, sequences_dir))
        return metrics

    def sweep(self, folder: AdapterFolder, encoder: TextEncoder, scenarios: pd.DataFrame) -> None:
        """Each combination of ``scoring.sweep`` in its own folder, as a multirun's job (its config, and the
        run's overrides with its own), then their summary."""
        sweep_dir = self.output_dir / SWEEP_DIR
        for number, (overrides, settings) in enumerate(self.variants):
            job = sweep_dir / str(number)
            config = copy.deepcopy(self.cfg)
            with open_dict(config):
                config.generation = OmegaConf.merge(config.generation, _changed(self.settings, settings))
            write_run_record(config, job)
            metrics = self.metrics(settings, folder, encoder, scenarios, job / "sequences")
            write_run_metrics(job, metrics, [*job_overrides(), *overrides])
            log.info("scored %s: coverage/mean = %.4f", " ".join(overrides), metrics["coverage/mean"])
        write_summary(sweep_dir)

    def coverage(
        self,
        settings: GenerationSettings,
        folder: AdapterFolder,
        encoder: TextEncoder,
        scenarios: pd.DataFrame,
    ) -> dict[str, float]:
        """The adapter's top_k effects (as generation retrieves them) beside zero-shot retrieval."""
        mode = settings.retrieval
        results = coverage_against_zero_shot(
            folder.adapter,
            CachedSentences(encoder, self.cfg.paths.cache_dir),
            folder.bank,
            scenarios,
            (mode,),
            settings.top_k,
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

    def method(self, settings: GenerationSettings, folder: AdapterFolder, encoder: TextEncoder):
        """The CausalDreamer method these settings describe, from the one factory evaluate uses too."""
        # Imported only here: diffusers takes seconds to import.
        from causaldreamer.methods.causaldreamer import causaldreamer_method

        return causaldreamer_method(folder, settings, self.diffusion.pipeline, encoder)

    def generation(
        self,
        settings: GenerationSettings,
        folder: AdapterFolder,
        encoder: TextEncoder,
        scenarios: pd.DataFrame,
        output_dir: Path,
    ) -> dict[str, float]:
        """Generate the first num_scenarios sequences into ``output_dir`` and score them, through the
        predict loop of generate and evaluate (one device)."""
        from causaldreamer.generation.run import draw_sequences, score_sequences
        from causaldreamer.generation.scenarios import scenarios_in
        from causaldreamer.metrics.features import ClipFeatures, DinoFeatures

        if self.scoring.features == "tiny":
            dino, clip = DinoFeatures.tiny(), ClipFeatures.tiny()
        else:
            dino = DinoFeatures.from_pretrained(self.scoring.dino_model)
            clip = ClipFeatures.from_pretrained(self.scoring.clip_model)
        causes = scenarios["cause"].head(self.scoring.num_scenarios).tolist()
        planned = scenarios_in(output_dir, causes, self.scoring.seed)
        draw_sequences(self.method(settings, folder, encoder), planned)
        _, means = score_sequences(planned, dino, clip)  # the same scoring as causaldreamer.evaluate
        return {f"gen/{name}": value for name, value in means.items()}


def sweep_variants(sweep, settings: GenerationSettings) -> list[tuple[list[str], GenerationSettings]]:
    """Every combination of ``scoring.sweep``'s values (as Hydra's sweeper combines its params), each with
    the overrides that name it: ``{top_k: [2, 8]}`` gives ``generation.top_k=2`` and ``=8``; ``{ablation:
    [full, no_progression]}`` the settings of those files of conf/ablation."""
    names = [f.name for f in dataclasses.fields(GenerationSettings)]
    axes = []
    for key, values in (sweep or {}).items():
        if not OmegaConf.is_list(values) and not isinstance(values, list):
            raise UserError(f"scoring.sweep.{key}={values!r}: give a list of values, e.g. [2, 4, 8]")
        if key == "ablation":
            axes.append([(f"+ablation={name}", ablation_settings(name)) for name in values])
        elif key in names:
            axes.append([(f"generation.{key}={_text(value)}", {key: value}) for value in values])
        else:
            raise UserError(
                f"scoring.sweep.{key}: sweep a key of the generation group ({', '.join(names)}) or ablation"
            )
    variants = []
    for combination in itertools.product(*axes) if axes else []:
        changes = {k: v for _, change in combination for k, v in change.items()}
        variants.append(([override for override, _ in combination], dataclasses.replace(settings, **changes)))
    return variants


def ablation_settings(name: str) -> dict:
    """The generation settings a file of conf/ablation sets (none for ``full``); a training-side one is
    refused, since it needs a training run of its own (``+experiment=ablations``)."""
    path = ABLATION_DIR / f"{name}.yaml"
    if not path.is_file():
        options = sorted(p.stem for p in ABLATION_DIR.glob("*.yaml"))
        raise UserError(
            f"scoring.sweep.ablation: {name!r} is not a file of conf/ablation ({', '.join(options)})"
        )
    content = OmegaConf.to_container(OmegaConf.load(path))
    if set(content) - {"generation"}:
        raise UserError(
            f"scoring.sweep.ablation: {name} is a training-side ablation; sweep it with +experiment=ablations"
        )
    return content.get("generation", {})


def _changed(base: GenerationSettings, settings: GenerationSettings) -> dict:
    return {k: v for k, v in dataclasses.asdict(settings).items() if getattr(base, k) != v}


def _text(value) -> str:
    """A value as an override writes it (``true``, ``null``, ``0.5``)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1

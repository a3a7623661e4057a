"""The entry points' front door: every job's config is composed and checked before Hydra runs anything.

``hydra_app(config_name, check)`` is ``hydra.main`` preceded by a dry composition of each job the
command line describes (one, or every job of a basic multirun, swept values expanded as Hydra's sweeper
does). Composition errors (an unknown key or group option, a malformed override) and schema errors
(``causaldreamer.schema``) become the project's one-line error with exit code 2 before Hydra creates a
run or sweep folder, so bad input leaves nothing on disk. Errors only a job can find (a file's contents)
are still one line; the job then removes its run folder if it holds nothing but Hydra's own record.
"""

from __future__ import annotations

import difflib
import functools
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf, open_dict

from causaldreamer import schema
from causaldreamer.config import register_resolvers
from causaldreamer.errors import UserError, exit_on_user_error
from causaldreamer.threads import configure_threads

CONFIG_DIR = Path(__file__).resolve().parent / "conf"
# Flags with which Hydra prints or does something other than running the jobs: left to Hydra alone.
PASSTHROUGH_FLAGS = ("help", "hydra_help", "cfg", "info", "shell_completion", "config_path", "config_dir")

Check = Callable[[DictConfig], None]


def hydra_app(config_name: str, check: Check | None = None) -> Callable:
    """Decorate an entry point's task function ``fn(cfg)``: checks first, then ``hydra.main``."""

    def decorate(task: Callable[[DictConfig], object]) -> Callable[[], object]:
        @functools.wraps(task)
        def job(cfg: DictConfig):
            configure_threads(cfg)
            try:
                return task(cfg)
            except Exception:
                _remove_stub_run_folder()
                raise

        run = hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)(
            exit_on_user_error(job)
        )

        @functools.wraps(task)
        def main():
            register_resolvers()
            exit_on_user_error(precheck)(config_name, sys.argv[1:], check)
            return run()

        return main

    return decorate


def precheck(config_name: str, argv: list[str], check: Check | None = None) -> None:
    """Compose and check every job of this command line; a UserError for the first bad one."""
    args = get_args_parser().parse_args(argv)
    if any(getattr(args, flag, None) for flag in PASSTHROUGH_FLAGS) or args.config_name:
        return
    try:
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except OverrideParseException as err:
        raise UserError(f"cannot parse the overrides: {_first_line(err)}") from None
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        plain = [o.input_line for o in overrides if not o.is_sweep_override()]
        base = _compose(config_name, plain, plain)
        sweeper = str(OmegaConf.select(base, "hydra.sweeper._target_", default=""))
        multirun = args.multirun or str(base.hydra.mode) == "RunMode.MULTIRUN"
        if not multirun or not sweeper.endswith("BasicSweeper"):
            # One job; or a search (Optuna) whose values come from its own ranges: its base config.
            _check_job(base, overrides, check)
            return
        params = [f"{k}={v}" for k, v in (base.hydra.sweeper.params or {}).items()]
        swept = OverridesParser.create().parse_overrides(params + list(args.overrides))
        for batch in BasicSweeper.split_arguments(swept, None)[0]:
            job = _compose(config_name, batch, args.overrides)
            job_overrides = OverridesParser.create().parse_overrides(batch)
            _check_job(job, job_overrides, check)


def _check_job(cfg: DictConfig, overrides: list[Override], check: Check | None) -> None:
    """Schema checks, then the entry point's own, with Hydra's config set as it is inside a job (the run
    folder named, not created)."""
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(Path(cfg.hydra.run.dir).absolute())
    HydraConfig.instance().set_config(cfg)
    schema.check_added_keys(cfg, overrides)
    schema.check_values(cfg, overrides)
    with open_dict(cfg):
        del cfg.hydra
    if check is not None:
        check(cfg)


def _compose(config_name: str, overrides: list[str], typed: list[str]) -> DictConfig:
    """``compose`` with its errors as UserErrors naming the override and the nearest valid choice."""
    try:
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    except MissingConfigException as err:
        raise UserError(_missing_option_message(err)) from None
    except ConfigCompositionException as err:
        raise UserError(_composition_message(err, config_name, typed)) from None


def _missing_option_message(err: MissingConfigException) -> str:
    missing = str(err.missing_cfg_file or "")
    group, _, option = missing.rpartition("/")
    options = sorted(err.options or [])
    if not group or not options:
        return _first_line(err)
    return (
        f"{group}={option} is not an option of the config group {group!r}"
        f"{_did_you_mean(option, options)}; choose one of: {', '.join(options)}"
    )


def _composition_message(err: ConfigCompositionException, config_name: str, typed: list[str]) -> str:
    """Hydra's multi-line composition error as one line: the key, what is wrong, the fix."""
    text = str(err)
    cause = str(err.__cause__ or "")
    not_in_struct = re.search(r"Could not override '([^']+)'", text)
    if not_in_struct and "not in struct" in cause:
        key = not_in_struct.group(1)
        return schema.unknown_key_message(key, _known_keys(config_name, key, typed))
    append = re.search(r"Could not append to config\. An item is already at '([^']+)'", text)
    if append:
        return f"+{append.group(1)}=... adds a key that exists; drop the '+': {append.group(1)}=..."
    conversion = re.search(r"full_key: (\S+)", cause)
    if conversion:
        key = conversion.group(1)
        value = next((t.partition("=")[2] for t in typed if t.lstrip("+~").startswith(f"{key}=")), "?")
        return f"{key}={value} is invalid: {_first_line(cause)}; fix the override {key}=..."
    return f"{_first_line(err)} {_first_line(cause)}".strip()


def _known_keys(config_name: str, key: str, typed: list[str]) -> list[str]:
    """The keys beside ``key`` in the config composed without the override that named it."""
    others = [t for t in typed if not t.lstrip("+~").startswith(f"{key}=")]
    try:
        cfg = compose(config_name=config_name, overrides=others)
    except Exception:  # the other overrides have their own error; report this one plainly
        return []
    return schema.known_keys_near(cfg, key)


def _did_you_mean(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _first_line(err: BaseException | str) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _remove_stub_run_folder() -> None:
    """A job that failed before writing anything of its own leaves no run folder behind."""
    if not HydraConfig.initialized():
        return
    folder = Path(HydraConfig.get().runtime.output_dir)
    own = [p for p in folder.iterdir() if p.name != ".hydra" and not p.name.endswith(".log")]
    if own:
        return
    shutil.rmtree(folder, ignore_errors=True)
    cwd = Path.cwd()
    for parent in folder.parents:  # logs/generate/runs/, if this run made them
        if parent == cwd or cwd not in parent.parents or any(parent.iterdir()):
            break
        parent.rmdir()

"""The config schema: what a key may be called, and what values it may hold.

Names and types come from where they are used: a node with a ``_target_`` accepts its target's
parameters, typed by their annotations (a constructor is the one place its settings are declared).
Ranges are the table ``RANGES`` below, one line per key. ``causaldreamer.cli`` applies both to every
job's composed config before Hydra runs it.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import types
import typing
from collections.abc import Callable
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.types import Override
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from causaldreamer.errors import UserError


def _number(check: Callable[[float], bool]) -> Callable[[object], bool]:
    return lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and check(v)


def _integer(check: Callable[[int], bool]) -> Callable[[object], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and check(v)


def _optional(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda v: v is None or check(v)


FINITE = (_number(lambda v: True), "a finite number (e.g. 0.7)")
POSITIVE = (_number(lambda v: v > 0), "a positive number")
NON_NEGATIVE = (_number(lambda v: v >= 0), "a number >= 0")
PROBABILITY = (_number(lambda v: 0 <= v <= 1), "a number in [0, 1]")
COUNT = (_integer(lambda v: v >= 1), "an integer >= 1")
OPTIONAL_COUNT = (_optional(_integer(lambda v: v >= 1)), "null or an integer >= 1")
NON_NEGATIVE_INTEGER = (_integer(lambda v: v >= 0), "an integer >= 0")

# key -> (check, what it expects). A key missing from a config is not checked; "*" matches any one key.
RANGES: dict[str, tuple[Callable[[object], bool], str]] = {
    "seed": NON_NEGATIVE_INTEGER,
    "cpu_threads": OPTIONAL_COUNT,
    "model.lam": FINITE,
    "model.lr": POSITIVE,
    "model.min_lr": NON_NEGATIVE,
    "model.weight_decay": NON_NEGATIVE,
    "model.warmup_steps": NON_NEGATIVE_INTEGER,
    "model.margin": NON_NEGATIVE,
    "model.temperature": POSITIVE,
    "model.min_temperature": POSITIVE,
    "model.loss_weights.*": NON_NEGATIVE,
    "model.adapter.hidden_dim": COUNT,
    "model.adapter.num_heads": COUNT,
    "model.adapter.dropout": (_number(lambda v: 0 <= v < 1), "a number in [0, 1)"),
    "data.batch_size": COUNT,
    "data.eval_batch_size": COUNT,
    "data.free_cause_prob": PROBABILITY,
    "data.limit_train": OPTIONAL_COUNT,
    "data.limit_eval": OPTIONAL_COUNT,
    "data.ecare_val_fraction": (_number(lambda v: 0 < v < 1), "a number in (0, 1)"),
    "data.ecare_batch_size": NON_NEGATIVE_INTEGER,
    "data.ecare_split_seed": NON_NEGATIVE_INTEGER,
    "trainer.max_epochs": COUNT,
    "trainer.check_val_every_n_epoch": COUNT,
    "encoder.batch_size": COUNT,
    "encoder.max_length": COUNT,
    "scoring.limit": OPTIONAL_COUNT,
    "scoring.threshold": (_number(lambda v: -1 <= v <= 1), "a cosine in [-1, 1]"),
}
HYDRA_KEYS = ("_target_", "_recursive_", "_convert_", "_partial_", "_args_")


def check_added_keys(cfg: DictConfig, overrides: list[Override]) -> None:
    """``+key=value`` may add only what the node's target accepts (``+trainer.profiler=simple``);
    anything else is a typo of a declared key (``+model.lamda=0.5``) and would fail much later."""
    loader = GlobalHydra.instance().config_loader()
    for override in overrides:
        key = override.key_or_group
        if not (override.is_add() or override.is_force_add()) or key.split(".")[0] == "hydra":
            continue
        if "." not in key and loader.get_group_options(key):
            continue  # +experiment=smoke adds a config group, not a key
        parts = key.split(".")
        for depth in range(len(parts) - 1, 0, -1):
            node = OmegaConf.select(cfg, ".".join(parts[:depth]))
            if isinstance(node, DictConfig) and "_target_" in node:
                params = target_parameters(node._target_)
                if params is None or parts[depth] in params:
                    break
                prefix = ".".join(parts[:depth])
                raise UserError(unknown_key_message(key, [f"{prefix}.{p}" for p in params]))
        else:
            raise UserError(unknown_key_message(key, known_keys_near(cfg, key)))


def check_values(cfg: DictConfig, overrides: list[Override]) -> None:
    """Ranges first (their messages say the most), then every project target's parameter types, and
    those of third-party targets (the Trainer) whose keys the command line sets."""
    for pattern, (check, expected) in RANGES.items():
        for key in _expand(cfg, pattern):
            value = _value(cfg, key)
            if value is not _UNRESOLVED and not check(value):
                raise UserError(
                    f"{key}={value!r} is invalid: expected {expected}; fix the override {key}=..."
                )
    touched = {o.key_or_group for o in overrides}
    for path, node in _target_nodes(cfg):
        ours = str(node._target_).startswith("causaldreamer.")
        if ours or any(t.startswith(f"{path}.") for t in touched):
            _check_node(path, node)


def target_parameters(target: str) -> dict[str, inspect.Parameter] | None:
    """The parameters a ``_target_`` accepts by name; None if it takes any (``**kwargs``)."""
    return _parameters(target)[0]


def known_keys_near(cfg: DictConfig, key: str) -> list[str]:
    """The full keys beside ``key`` in ``cfg``; where its parent declares nothing else (absent, as
    ``scoring`` is without a study experiment, or a plain value, or made by a ``+`` override), the
    keys beside that parent, and so on up."""
    parts = key.split(".")
    for depth in range(len(parts) - 1, -1, -1):
        parent = ".".join(parts[:depth])
        node = OmegaConf.select(cfg, parent) if parent else cfg
        names = (
            [str(k) for k in node if k not in (parts[depth], "hydra")] if isinstance(node, DictConfig) else []
        )
        if names:
            return [f"{parent}.{k}" if parent else k for k in names]
    return []


def unknown_key_message(key: str, known: list[str]) -> str:
    """One line: the nearest of ``known``, else some of them. Where ``known`` lie above the key's own
    level (``known_keys_near``), it names the parent under which the config declares nothing."""
    level = known[0].count(".") + 1 if known else key.count(".") + 1
    parent = ".".join(key.split(".")[:level])  # the key itself, or its first undeclared parent
    close = difflib.get_close_matches(parent, known, n=1, cutoff=0.6)
    undeclared = "" if parent == key else f"this config declares nothing under {parent}; "
    if close:
        hint = f"did you mean {close[0] + key[len(parent) :]}?"
    else:
        hint = f"known keys there: {', '.join(sorted(known)[:12])}"
    return f"unknown key {key}: {undeclared}{hint} (check the spelling of the override)"


@functools.cache
def _parameters(target: str) -> tuple[dict[str, inspect.Parameter] | None, dict[str, object]]:
    try:
        obj = get_object(target)
    except Exception as err:
        raise UserError(
            f"_target_ {target} cannot be imported ({err}); check the config's _target_"
        ) from None
    function = obj.__init__ if inspect.isclass(obj) else obj
    signature = inspect.signature(function)
    params = {n: p for n, p in signature.parameters.items() if n != "self"}
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # annotations that do not evaluate here: names are still checked
        hints = {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None, hints
    return {n: p for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL}, hints


def _check_node(path: str, node: DictConfig) -> None:
    params, hints = _parameters(str(node._target_))
    for name in node:
        name = str(name)
        key = f"{path}.{name}" if path else name
        if name in HYDRA_KEYS:
            continue
        if params is not None and name not in params:
            raise UserError(unknown_key_message(key, [f"{path}.{p}" for p in params]))
        value = _value(node, name)
        # null means "not set": the target says itself what it needs instead (e.g. "no adapter given").
        if name in hints and value not in (_UNRESOLVED, None) and _matches(value, hints[name]) is False:
            raise UserError(
                f"{key}={value!r} is invalid: expected {_describe(hints[name])}; fix the override {key}=..."
            )


def _target_nodes(cfg: DictConfig, path: str = ""):
    """(path, node) of every node with a ``_target_``, outside Hydra's own config."""
    if "_target_" in cfg:
        yield path, cfg
    for key in cfg:
        if path == "" and key == "hydra":
            continue
        child = cfg._get_node(key)
        if isinstance(child, DictConfig) and not child._is_interpolation():
            yield from _target_nodes(child, f"{path}.{key}" if path else str(key))


def _expand(cfg: DictConfig, pattern: str) -> list[str]:
    head, star, _ = pattern.partition(".*")
    if not star:
        return [pattern] if OmegaConf.select(cfg, pattern, default=_UNRESOLVED) is not _UNRESOLVED else []
    node = OmegaConf.select(cfg, head)
    return [f"{head}.{k}" for k in node] if isinstance(node, DictConfig) else []


class _Unresolved:
    """A value that needs Hydra's job (e.g. ``${hydra:runtime.output_dir}``): checked by the job itself."""


_UNRESOLVED = _Unresolved()


def _value(node: DictConfig, key: str):
    try:
        value = OmegaConf.select(node, key, throw_on_missing=True)
    except Exception:
        return _UNRESOLVED
    return (
        OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig | ListConfig) else value
    )


def _matches(value, hint) -> bool | None:
    """Whether ``value`` fits the annotation; None where the annotation is beyond this simple check."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return _matches(value, args[0])
    if origin in (typing.Union, types.UnionType):
        results = [_matches(value, a) for a in args]
        return True if True in results else (None if None in results else False)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint in (str, Path):
        return isinstance(value, str)
    return None


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))

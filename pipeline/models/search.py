"""Random hyper-parameter search over model configs, with an equal budget per core kind.

Ecker et al. (2019) compared the rotation-equivariant core with a CNN after a random search of 32
models each.  :func:`draw_configs` draws ``budget`` settings of the searched hyper-parameters once
and applies the same draws to every core kind's base config, so both kinds get the same number of
models and the same hyper-parameter values (a paired design: a kind cannot win by luckier draws).
:func:`best_candidate` picks a winner from validation scores only; test scores are for reporting.

A search space maps a dotted path into :class:`~pipeline.models.encoder.ModelConfig` (e.g.
``"core.gamma_laplace"``) to ``["log_uniform", low, high]``, ``["uniform", low, high]`` or
``["choice", value, ...]``.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping, Sequence

import numpy as np

from pipeline.config import ConfigError, canonical
from pipeline.models.encoder import ModelConfig

DEFAULT_SPACE: dict[str, list] = {
    # Regularisation strengths around the paper's values (0.025, 0.015, 0.017), a decade each way
    # where the paper's sweep spanned one: these are what the paper tuned per core.
    "core.gamma_laplace": ["log_uniform", 0.005, 0.1],
    "core.gamma_sparsity": ["log_uniform", 0.003, 0.06],
    "readout.gamma_readout": ["log_uniform", 0.005, 0.05],
}
DISTRIBUTIONS = ("log_uniform", "uniform", "choice")


def check_space(space: Mapping[str, Sequence]) -> dict[str, list]:
    """The space in canonical form; ConfigError naming the entry for anything malformed."""
    if not space:
        raise ConfigError("search space: no hyper-parameters to search")
    out = {}
    for path, given in space.items():
        spec = list(given) if isinstance(given, (list, tuple)) else None
        if not spec or spec[0] not in DISTRIBUTIONS:
            raise ConfigError(
                f"search space {path!r}: expected [distribution, ...] with distribution one of "
                f"{list(DISTRIBUTIONS)}, got {space[path]!r}"
            )
        if spec[0] == "choice":
            if len(spec) < 2:
                raise ConfigError(f"search space {path!r}: 'choice' needs at least one value")
        else:
            if len(spec) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in spec[1:]):
                raise ConfigError(f"search space {path!r}: expected [{spec[0]!r}, low, high], got {spec!r}")
            if not spec[1] <= spec[2] or (spec[0] == "log_uniform" and spec[1] <= 0):
                raise ConfigError(
                    f"search space {path!r}: need {'0 < ' if spec[0] == 'log_uniform' else ''}"
                    f"low <= high, got {spec[1:]}"
                )
        out[str(path)] = canonical(spec)
    return out


def _set(config: dict, path: str, value: Any) -> None:
    node = config
    *parents, leaf = path.split(".")
    for name in parents:
        node = node.setdefault(name, {})
        if not isinstance(node, dict):
            raise ConfigError(f"search space {path!r}: {name!r} is not a nested config")
    node[leaf] = value


def draw_values(space: Mapping[str, Sequence], budget: int, seed: int) -> list[dict[str, Any]]:
    """``budget`` draws, each ``{path: value}``; deterministic for a seed."""
    space = check_space(space)
    if budget < 1:
        raise ConfigError(f"search budget must be >= 1, got {budget}")
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(budget):
        values = {}
        for path in sorted(space):  # sorted: the draws do not depend on the space's key order
            kind, *args = space[path]
            if kind == "choice":
                values[path] = canonical(args[int(rng.integers(len(args)))])
            elif kind == "uniform":
                values[path] = float(rng.uniform(args[0], args[1]))
            else:
                values[path] = float(np.exp(rng.uniform(np.log(args[0]), np.log(args[1]))))
        draws.append(values)
    return draws


def draw_configs(
    bases: Mapping[str, Mapping], space: Mapping[str, Sequence], budget: int, seed: int
) -> dict[str, list[ModelConfig]]:
    """Per base (e.g. ``{"rotation": ..., "cnn": ...}``, model-config dicts), ``budget`` validated
    configs: the base with each draw of :func:`draw_values` applied, the same draws for every base."""
    if not bases:
        raise ConfigError("search: no base model configs")
    draws = draw_values(space, budget, seed)
    out = {}
    for name, base in bases.items():
        configs = []
        for values in draws:
            config = copy.deepcopy(dict(ModelConfig.from_dict(base).to_dict()))
            for path, value in values.items():
                _set(config, path, value)
            configs.append(ModelConfig.from_dict(config))
        out[name] = configs
    return out


def best_candidate(validation_scores: Sequence[float]) -> int:
    """Index of the highest validation score (the first on ties); ValueError when none is finite."""
    scores = np.asarray(validation_scores, dtype=np.float64)
    if not len(scores) or not np.isfinite(scores).any():
        raise ValueError(f"best_candidate: no finite validation score among {len(scores)} candidates")
    return int(np.nanargmax(np.where(np.isfinite(scores), scores, np.nan)))

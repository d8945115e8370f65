"""Constructor arguments of a scraped nn.Module, guessed paritybench-style."""

from __future__ import annotations

import inspect
from typing import Any

from scraper.suite.phases import describe

INIT_INT_GUESSES = (4, 16, 1, 64)
FLOAT_PARAM_HINTS = ("drop", "eps", "rate", "ratio", "prob", "alpha", "beta", "gamma", "scale", "temperature")


def instantiate(cls) -> tuple[Any, list, dict]:
    """Build `cls` with no arguments, else with guesses for its required parameters (ints by name, floats for
    names like dropout/eps); returns (model, args, kwargs) of the first guess that constructs."""
    required = required_params(cls.__init__)
    errors = []
    for guess in INIT_INT_GUESSES:
        kwargs = {name: guess_value(name, guess) for name in required}
        try:
            return cls(**kwargs), [], kwargs
        except Exception as exc:
            errors.append(describe(exc))
            if not required:
                break
    raise RuntimeError(f"could not construct {cls.__name__}({', '.join(required)}): {errors[0]}")


def required_params(function) -> list[str]:
    """Names of the parameters without a default (self, *args and **kwargs excluded)."""
    try:
        params = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
             inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params[1:] if p.kind in kinds and p.default is inspect.Parameter.empty]


def guess_value(name: str, integer: int):
    """A plausible value for a constructor parameter called `name`."""
    lowered = name.lower()
    if any(hint in lowered for hint in FLOAT_PARAM_HINTS):
        return 0.1
    if lowered.startswith(("use_", "is_", "with_", "has_")) or lowered in ("bias", "inplace", "affine"):
        return False
    return integer

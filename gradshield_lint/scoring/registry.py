"""The scoring strategies by name: how FIHS is computed per row (`scoring.method`) and which proxy harmfulness
score H it follows (`scoring.proxy`).

Each strategy is declared here once, with what the rest of the tool needs to know about it (whether a method gives
the gradient norms that normalized scores need), and implemented in its home module (`fihs.py`, `proxy.py`), which
registers the implementation with `@METHODS.implements(name)` / `@PROXIES.implements(name)`. The CLI's choices come
from `names()`; the configuration schema's enums are tested equal to them. Nothing here imports torch, so the CLI
can build its options without loading it.

The one rule that ties the two settings together lives here too: normalized scores (the cosine) need a method that
gives gradient norms (`check_normalize`), a `ConfigError` (exit 2) wherever the settings come from.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from gradshield_lint.errors import ConfigError


@dataclass(frozen=True)
class Method:
    """A way to compute FIHS per row. `norms`: it can give normalized scores (it yields each row's gradient norm,
    or, for `auto`, picks a method that does). `resolves`: a name that picks another method (`auto`)."""

    name: str
    summary: str
    norms: bool
    resolves: bool = False


@dataclass(frozen=True)
class Proxy:
    """A proxy harmfulness score H(θ) on the probing set; FIHS follows its gradient."""

    name: str
    summary: str


S = TypeVar("S", Method, Proxy)


class Registry(Generic[S]):
    """Strategies of one kind, in a fixed order, each implemented in module `home`."""

    def __init__(self, key: str, home: str, strategies: tuple[S, ...]) -> None:
        self.key = key  # the configuration key that names one, for messages
        self.home = home
        self._strategies: dict[str, S] = {s.name: s for s in strategies}
        self._impls: dict[str, Callable[..., Any]] = {}

    def names(self) -> tuple[str, ...]:
        return tuple(self._strategies)

    def __iter__(self) -> Iterator[str]:
        """The names, in order (as a mapping iterates its keys)."""
        return iter(self._strategies)

    def strategies(self) -> tuple[S, ...]:
        return tuple(self._strategies.values())

    def __contains__(self, name: object) -> bool:
        return name in self._strategies

    def __getitem__(self, name: str) -> S:
        try:
            return self._strategies[name]
        except KeyError:
            raise ConfigError(f"{self.key}: {name!r} is not one of {', '.join(self._strategies)}") from None

    def implements(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator for the implementation of strategy `name` (in the home module)."""
        if name not in self._strategies:
            raise KeyError(f"{name!r} is not a declared {self.key} strategy")

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self._impls[name] = fn
            return fn

        return register

    def implementation(self, name: str) -> Callable[..., Any]:
        """The registered implementation of `name` (its home module imported on first use)."""
        self[name]  # unknown names: ConfigError
        if name not in self._impls:
            importlib.import_module(self.home)
        return self._impls[name]

    def implemented(self) -> tuple[str, ...]:
        """Names with a registered implementation (after importing the home module)."""
        importlib.import_module(self.home)
        return tuple(n for n in self._strategies if n in self._impls)


METHODS: Registry[Method] = Registry(
    "scoring.method",
    "gradshield_lint.scoring.fihs",
    (
        Method(
            "auto", "the fastest accurate method for the dtype; persample when normalized", norms=True, resolves=True
        ),
        Method("jvp", "forward-mode AD along ∇H (raw scores only)", norms=False),
        Method("fd", "central finite differences along ∇H, float32 (raw scores only)", norms=False),
        Method("exact", "one backward pass per row: the reference", norms=True),
        Method("persample", "one batched backward with per-sample hooks (gives gradient norms)", norms=True),
    ),
)

PROXIES: Registry[Proxy] = Registry(
    "scoring.proxy",
    "gradshield_lint.scoring.proxy",
    (
        Proxy("margin", "NLL of the refusal minus NLL of the compliance opening"),
        Proxy("first-token", "logit of the first compliance token minus that of the first refusal token"),
        Proxy("refusal-nll", "NLL of the refusal alone"),
    ),
)


def with_norms() -> tuple[str, ...]:
    """The methods that can give normalized scores."""
    return tuple(m.name for m in METHODS.strategies() if m.norms)


def normalize_problem(method: str, normalize: bool) -> str | None:
    """The rule that ties `scoring.method` to `scoring.normalize`, written once: normalized scores (the cosine)
    need a method that gives gradient norms. The message when `method` breaks it, else None."""
    if not normalize or METHODS[method].norms:
        return None
    choices = with_norms()
    return (
        f"{method!r} gives raw scores only (a directional derivative, no gradient norms), but normalized scores are "
        "asked for (scoring.normalize: true, the default): set scoring.normalize: false (--raw) for raw scores, or "
        f"use a method with norms ({', '.join(choices[:-1])} or {choices[-1]}) for normalized ones"
    )


def check_normalize(method: str, normalize: bool) -> None:
    """`normalize_problem` as a `ConfigError` (exit 2), for settings that did not come through `Config`."""
    problem = normalize_problem(method, normalize)
    if problem:
        raise ConfigError(f"{METHODS.key}: {problem}")


def resolve_method(method: str, normalize: bool, *, float32: bool) -> str:
    """The method that runs for `method` (`auto` resolved): per-sample hooks when norms are needed; else finite
    differences in float32 (two plain forward passes, the cheapest on a CPU) and forward-mode AD in half
    precision, where a finite step drowns in rounding."""
    check_normalize(method, normalize)
    if not METHODS[method].resolves:
        return method
    if normalize:
        return "persample"
    return "fd" if float32 else "jvp"


__all__ = [
    "METHODS",
    "PROXIES",
    "Method",
    "Proxy",
    "Registry",
    "check_normalize",
    "normalize_problem",
    "resolve_method",
    "with_norms",
]

"""Progress meters: report how far a solve has got, from inside compiled code."""

import abc
from typing import Any

import equinox as eqx
from jaxtyping import Array, Float


class AbstractProgressMeter(eqx.Module):
    """Reports the progress of a solve.

    The contract: `init() -> state`; `step(state, progress) -> state` is called
    after every step with `progress` in `[0, 1]` (the fraction of `[t0, t1]`
    covered); `close(state)` once at the end. Implementations use host callbacks,
    so they work under `jit` and `vmap`.
    """

    @abc.abstractmethod
    def init(self) -> Any:
        """The initial state."""

    @abc.abstractmethod
    def step(self, state: Any, progress: Float[Array, ""]) -> Any:
        """Report `progress`; return the new state."""

    @abc.abstractmethod
    def close(self, state: Any) -> None:
        """Finish reporting."""


class NoProgressMeter(AbstractProgressMeter):
    """Reports nothing (the default; costs nothing)."""

    def init(self):
        return None

    def step(self, state, progress):
        del progress
        return state

    def close(self, state):
        del state

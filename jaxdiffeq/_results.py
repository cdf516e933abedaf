"""Result codes of a solve: `RESULTS`, `is_successful`, `is_okay`."""

from typing import ClassVar, TypeVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Int, PyTree

_MESSAGES: list[tuple[str, str]] = [
    ("successful", ""),
    (
        "max_steps_reached",
        "The maximum number of solver steps was reached. Try increasing `max_steps`, "
        "or loosening the tolerances; if the problem is stiff, explicit solvers need "
        "very many steps.",
    ),
    (
        "dt_min_reached",
        "The step size fell below the minimum (`dtmin`, or too small to advance the "
        "time at all). Common causes: the vector field returns NaN or inf, the "
        "solution blows up in finite time, or the problem is stiff.",
    ),
    (
        "event_occurred",
        "The solve stopped because an event occurred.",
    ),
    (
        "nonfinite_value",
        "The solution became non-finite (NaN or inf) on an accepted step. Check the "
        "vector field for NaN/inf output, or use an adaptive step-size controller "
        "(`PIDController`), which rejects such steps.",
    ),
    (
        "internal_error",
        "An internal error occurred in jaxdiffeq. This is a bug: please report it "
        "with a short example that reproduces it.",
    ),
    (
        "nonlinear_max_steps_reached",
        "An implicit solver's stage equation did not converge within "
        "`root_find_max_steps` iterations, and the step could not be retried with a "
        "smaller one (constant steps, or `dtmin`). Use an adaptive step-size "
        "controller (`PIDController`), a smaller step, or more root-finding steps.",
    ),
    (
        "nonlinear_divergence",
        "An implicit solver's stage equation diverged (the Newton/chord iterations "
        "grew), and the step could not be retried with a smaller one. Use an "
        "adaptive step-size controller (`PIDController`) or a smaller step.",
    ),
    (
        "singular",
        "An implicit solver's linear system was singular (I - h gamma J cannot be "
        "solved), and the step could not be retried with a smaller one. Check the "
        "vector field's Jacobian, or use an adaptive step-size controller.",
    ),
]

_T = TypeVar("_T", bound=PyTree)


class RESULTS(eqx.Module):
    """The outcome of a solve: a small integer code with a message.

    Compare against the class attributes, for example
    `sol.result == jaxdiffeq.RESULTS.successful` (an array of booleans under `vmap`).
    `RESULTS.message(code)` gives the text of a concrete code.

    Codes: `successful`, `max_steps_reached`, `dt_min_reached`, `event_occurred`,
    `nonfinite_value`, `internal_error`, and from implicit solvers
    `nonlinear_max_steps_reached`, `nonlinear_divergence` and `singular` (each
    only where the step cannot be retried with a smaller one: an adaptive
    controller rejects the step instead).
    """

    _value: Int[ArrayLike, "..."]

    successful: ClassVar["RESULTS"]
    max_steps_reached: ClassVar["RESULTS"]
    dt_min_reached: ClassVar["RESULTS"]
    event_occurred: ClassVar["RESULTS"]
    nonfinite_value: ClassVar["RESULTS"]
    internal_error: ClassVar["RESULTS"]
    nonlinear_max_steps_reached: ClassVar["RESULTS"]
    nonlinear_divergence: ClassVar["RESULTS"]
    singular: ClassVar["RESULTS"]

    def __eq__(self, other) -> Bool[Array, "..."]:  # pyright: ignore[reportIncompatibleMethodOverride]
        if not isinstance(other, RESULTS):
            return NotImplemented
        return jnp.asarray(self._value) == jnp.asarray(other._value)

    def __ne__(self, other) -> Bool[Array, "..."]:  # pyright: ignore[reportIncompatibleMethodOverride]
        if not isinstance(other, RESULTS):
            return NotImplemented
        return jnp.asarray(self._value) != jnp.asarray(other._value)

    @property
    def value(self) -> Int[Array, "..."]:
        """The integer code(s) as an array."""
        return jnp.asarray(self._value)

    @staticmethod
    def where(pred: Bool[ArrayLike, "..."], a: "RESULTS", b: "RESULTS") -> "RESULTS":
        """Elementwise choice between two results, like `jnp.where`."""
        return RESULTS(jnp.where(pred, jnp.asarray(a._value), jnp.asarray(b._value)))

    @staticmethod
    def message(result: "RESULTS | int") -> str:
        """The message of a concrete (not traced) result code."""
        code = result._value if isinstance(result, RESULTS) else result
        return _MESSAGES[int(np.asarray(code))][1]

    @staticmethod
    def names() -> tuple[str, ...]:
        """The names of all codes, in code order."""
        return tuple(name for name, _ in _MESSAGES)

    def raise_if_failed(self, x: _T) -> _T:
        """Return `x` unchanged, raising a runtime error (under `jit` too) if this
        result is not `successful` or `event_occurred`. One check whatever the
        code, to keep compilation cheap."""
        value = jnp.asarray(self._value)
        okay = (value == RESULTS.successful._value) | (
            value == RESULTS.event_occurred._value
        )
        messages = [message or "(no error)" for _, message in _MESSAGES]
        return eqx.branched_error_if(x, ~okay, value, messages)


def _define_codes() -> None:
    for code, (name, _) in enumerate(_MESSAGES):
        setattr(RESULTS, name, RESULTS(np.int32(code)))


_define_codes()


def is_successful(result: RESULTS) -> Bool[Array, "..."]:
    """Whether the solve finished without failure and without an event."""
    return result == RESULTS.successful


def is_event(result: RESULTS) -> Bool[Array, "..."]:
    """Whether the solve stopped because an event occurred."""
    return result == RESULTS.event_occurred


def is_okay(result: RESULTS) -> Bool[Array, "..."]:
    """Whether the solve finished without failure (an event counts as okay)."""
    return is_successful(result) | (result == RESULTS.event_occurred)


def update_result(old: RESULTS, new: RESULTS) -> RESULTS:
    """Keep the first failure: `new` replaces `old` only while `old` is okay."""
    return RESULTS.where(is_okay(old), new, old)

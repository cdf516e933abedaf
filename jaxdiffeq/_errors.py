"""The exception for invalid input values found before compiling."""

import equinox as eqx


class InvalidValueError(ValueError, eqx.EquinoxRuntimeError):
    """An input whose value is invalid (e.g. `dt0` pointing away from `t1`, or
    `SaveAt(ts)` outside `[t0, t1]`), found while tracing because the value was
    known.

    Diffrax checks these values with `equinox.error_if` and raises an
    `equinox.EquinoxRuntimeError` (a `RuntimeError`); when the values are traced,
    jaxdiffeq does the same. When they are known, jaxdiffeq raises this class
    before compiling, which is both a `ValueError` and an
    `equinox.EquinoxRuntimeError`, so code that catches either works.
    """

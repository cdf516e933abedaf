"""Exception classes that are also the classes Diffrax raises in the same
situations, so that Diffrax code catching an error still catches ours."""

import equinox as eqx


class InvalidValueError(ValueError, eqx.EquinoxRuntimeError, eqx.EquinoxTracetimeError):
    """An input whose value is invalid (e.g. `dt0` pointing away from `t1`, or
    `SaveAt(ts)` outside `[t0, t1]`), found before compiling because the value
    was known.

    Diffrax checks these values with `equinox.error_if`, which raises an
    `equinox.EquinoxTracetimeError` when the value is known while tracing (e.g.
    a Python number) and an `equinox.EquinoxRuntimeError` when it is not (e.g.
    an array, which Diffrax's `filter_jit` traces). This class is both, and a
    `ValueError`. When the values are traced, jaxdiffeq checks them at run time
    with `equinox.error_if` as well.
    """


class UnsupportedError(ValueError, NotImplementedError):
    """A combination of options that a component does not support (e.g.
    `BacksolveAdjoint` with `SaveAt(steps=True)`), found before compiling. Both a
    `ValueError` and, as Diffrax raises in these cases, a `NotImplementedError`."""

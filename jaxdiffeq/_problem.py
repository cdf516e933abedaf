"""`Problem`: an initial value problem with its reference solution, the entries of
`jaxdiffeq.problems`."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float


class Problem(eqx.Module):
    """An initial value problem `dy/dt = f(t, y, args)`, `y(t0) = y0`, on `[t0, t1]`.

    **Fields:**

    - `name`, `description`: a short key and one line about the problem.
    - `f`: the vector field `f(t, y, args)`, written with `jax.numpy`.
    - `initial_values`, `t0`, `t1`, `args`: the problem; `y0` is `initial_values` as
      an array.
    - `rtol`, `atol`: suggested tolerances for an adaptive solve.
    - `labels`: a name for each component of the state, for plots.
    - `phase_portraits`: pairs of component indices to plot against each other (for
      example the x-z plane of the Lorenz attractor); empty if none is useful.
    - `reference_values`: the solution at `t1` (for the default `t0`, `t1`, `args`),
      or `None`; `reference` is it as an array. `reference_source` says where it
      comes from.
    - `stiff`: whether the problem is stiff (an explicit solver takes a step size
      bounded by stability, not accuracy: use an implicit or Rosenbrock solver).

    All fields are static, so a `Problem` can be closed over or passed through
    `jax.jit` freely; it holds no arrays.
    """

    name: str = eqx.field(static=True)
    description: str = eqx.field(static=True)
    f: Callable[[Any, Array, Any], Array] = eqx.field(static=True)
    initial_values: tuple[float, ...] = eqx.field(static=True)
    t0: float = eqx.field(static=True)
    t1: float = eqx.field(static=True)
    args: Any = eqx.field(static=True)
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    labels: tuple[str, ...] = eqx.field(static=True)
    phase_portraits: tuple[tuple[int, int], ...] = eqx.field(static=True)
    reference_values: tuple[float, ...] | None = eqx.field(static=True)
    reference_source: str = eqx.field(static=True)
    stiff: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        size = len(self.initial_values)
        if len(self.labels) != size:
            raise ValueError(
                f"{self.name}: {len(self.labels)} labels for {size} states."
            )
        if self.reference_values is not None and len(self.reference_values) != size:
            raise ValueError(f"{self.name}: the reference has the wrong size.")

    @property
    def y0(self) -> Float[Array, " n"]:
        """The initial state, in the default floating-point type."""
        return jnp.asarray(self.initial_values, dtype=jnp.result_type(float))

    @property
    def reference(self) -> Float[Array, " n"] | None:
        """The solution at `t1`, or `None` where there is no reference."""
        if self.reference_values is None:
            return None
        return jnp.asarray(self.reference_values, dtype=jnp.result_type(float))

"""What a solve saves: `SaveAt` and `SubSaveAt`."""

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PyTree, Real

from ._custom_types import Args, RealScalarLike, Y


def save_y(t: RealScalarLike, y: Y, args: Args) -> Y:
    """The default `fn`: save the state itself."""
    del t, args
    return y


class SubSaveAt(eqx.Module):
    """One group of outputs of a solve; see `SaveAt`. Used directly only through
    `SaveAt(subs=...)`, to save different things at different times."""

    t0: bool = False
    t1: bool = False
    ts: Real[Array, " times"] | None = None
    steps: int = eqx.field(default=0, static=True)
    fn: Callable = save_y

    def __init__(
        self,
        *,
        t0: bool = False,
        t1: bool = False,
        ts: Real[ArrayLike, " times"] | None = None,
        steps: bool | int = False,
        fn: Callable = save_y,
    ):
        self.t0 = t0
        self.t1 = t1
        if ts is not None:
            ts = jnp.asarray(ts)
            if ts.ndim != 1:
                raise ValueError(
                    f"`SaveAt(ts=...)` must be one-dimensional, got shape {ts.shape}."
                )
            if ts.shape[0] == 0:
                raise ValueError(
                    "`SaveAt(ts=...)` is empty; pass at least one time, or `ts=None`."
                )
        self.ts = ts
        if isinstance(steps, bool):
            steps = 1 if steps else 0
        if not isinstance(steps, int) or steps < 0:
            raise ValueError("`steps` must be a bool or a non-negative int.")
        self.steps = steps
        self.fn = fn
        if not (t0 or t1 or ts is not None or steps):
            raise ValueError(
                "Empty `SubSaveAt`: request at least one of `t0=True`, `t1=True`, "
                "`ts=...` or `steps=True`."
            )


class SaveAt(eqx.Module):
    """Which outputs a solve returns in `Solution.ts` and `Solution.ys`.

    **Arguments:**

    - `t0`, `t1`: save the initial / final time.
    - `ts`: save at these times (sorted in the direction of integration, inside
      `[t0, t1]`). They are interpolated inside the step where they fall, with the
      solver's dense output.
    - `steps`: `True` saves after every accepted step; an integer `n` after every
      `n`-th accepted step. The output has `max_steps // n` entries, padded with
      `inf` past the last step.
    - `fn`: `fn(t, y, args)` is saved instead of `y` (e.g. a summary statistic).
    - `subs`: a PyTree of `SubSaveAt`, to save different things at different
      times; `Solution.ys` then has the same PyTree structure. Exclusive with the
      arguments above.
    - `dense`: keep the interpolant of every step, for `Solution.evaluate` and
      `Solution.derivative` at any time.
    - `solver_state`, `controller_state`, `made_jump`: return the final solver
      state, controller state and jump flag (to continue a solve later).

    The outputs are in the order they are made, as in Diffrax: `t0`; then, for
    each accepted step, the `ts` inside it followed by the step itself; then
    `t1`, unless the last step was saved already. Rows that are not reached are
    `inf`. `SaveAt()` saves nothing (`Solution.ts` and `Solution.ys` are `None`),
    e.g. to return only the final solver state.

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    saveat = jd.SaveAt(t0=True, ts=jnp.linspace(0, 1, 11), dense=True)
    ```
    """

    subs: PyTree[SubSaveAt] = None
    dense: bool = eqx.field(default=False, static=True)
    solver_state: bool = eqx.field(default=False, static=True)
    controller_state: bool = eqx.field(default=False, static=True)
    made_jump: bool = eqx.field(default=False, static=True)

    def __init__(
        self,
        *,
        t0: bool = False,
        t1: bool = False,
        ts: Real[ArrayLike, " times"] | None = None,
        steps: bool | int = False,
        fn: Callable = save_y,
        subs: PyTree[SubSaveAt] = None,
        dense: bool = False,
        solver_state: bool = False,
        controller_state: bool = False,
        made_jump: bool = False,
    ):
        if subs is None:
            if t0 or t1 or ts is not None or steps:
                subs = SubSaveAt(t0=t0, t1=t1, ts=ts, steps=steps, fn=fn)
        elif t0 or t1 or ts is not None or steps:
            raise ValueError(
                "Pass either `subs` or `t0`/`t1`/`ts`/`steps` to `SaveAt`, not both."
            )
        self.subs = subs
        self.dense = dense
        self.solver_state = solver_state
        self.controller_state = controller_state
        self.made_jump = made_jump

"""`ClipStepSizeController`: make another controller land on given times."""

from collections.abc import Callable

import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PyTree, Real

from .._custom_types import VF, Args, BoolScalarLike, RealScalarLike, Y
from .._misc import where
from .._results import RESULTS
from .._term import AbstractTerm
from .base import AbstractStepSizeController, ControllerState


def _as_sorted_times(ts, name):
    if ts is None:
        return None
    ts = jnp.asarray(ts)
    if ts.ndim != 1:
        raise ValueError(f"`{name}` must be one-dimensional.")
    return ts


def _next_time_after(ts, t):
    """The first element of the sorted `ts` strictly after `t` (`inf` if none)."""
    index = jnp.searchsorted(ts, t, side="right")
    padded = jnp.concatenate([ts, jnp.full((1,), jnp.inf, ts.dtype)])
    return padded[index]


def clip_to_times(next_t0, next_t1, step_ts, jump_ts, ends_at_jump=False):
    """Shorten the proposed step `[next_t0, next_t1]` so that it does not cross an
    element of `step_ts` or `jump_ts`. Returns the new end and whether the step
    stops at a jump.

    Without `jump_ts` the flag is `ends_at_jump`, returned unchanged: a controller
    passes the flag it carries, so that the step loop sees the value unchanged
    rather than a new constant to select (a kernel per step).

    A step stops just before a jump time (one ulp), so that none of its stages sees
    the vector field's value past the discontinuity; `restart_after_jump` gives
    the start of the following step, just after it.
    """
    if step_ts is not None:
        next_t1 = jnp.minimum(next_t1, _next_time_after(step_ts, next_t0))
    if jump_ts is not None:
        t_jump = _next_time_after(jump_ts, next_t0)
        ends_at_jump = t_jump <= next_t1
        before_jump = _shift_ulps(t_jump, -1)
        next_t1 = where(ends_at_jump, before_jump, next_t1)
    return next_t1, ends_at_jump


def _shift_ulps(t, n: int):
    """`t` moved by `n` units in the last place (the shift carries no gradient:
    `nextafter` has no derivative rule)."""
    t_const = lax.stop_gradient(t)
    towards = jnp.asarray(jnp.inf if n > 0 else -jnp.inf, jnp.result_type(t))
    shifted = t_const
    for _ in range(abs(n)):
        shifted = jnp.nextafter(shifted, towards)
    return t + (shifted - t_const)


def restart_after_jump(t_end):
    """The start of the step after one that stopped one ulp before a jump time: one
    ulp after the jump."""
    return _shift_ulps(t_end, 2)


class ClipStepSizeController(AbstractStepSizeController):
    """Wraps a controller so that steps land exactly on given times.

    **Arguments:**

    - `controller`: the controller proposing the steps.
    - `step_ts`: times that steps must land on (e.g. where the vector field changes
      character, or known output times).
    - `jump_ts`: times where the vector field is discontinuous. Steps land on them
      and the step after restarts its cached evaluations (e.g. FSAL), so no stage
      straddles the discontinuity.
    - `store_rejected_steps`: accepted for compatibility with Diffrax; unused.

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    term = jd.ODETerm(lambda t, y, args: jnp.where(t < 0.5, -y, y))
    controller = jd.ClipStepSizeController(
        jd.PIDController(rtol=1e-6, atol=1e-8), jump_ts=jnp.array([0.5]))
    sol = jd.diffeqsolve(term, jd.Tsit5(), 0.0, 1.0, 0.1, jnp.array(1.0),
                         stepsize_controller=controller)
    ```
    """

    controller: AbstractStepSizeController
    step_ts: Real[Array, " steps"] | None
    jump_ts: Real[Array, " jumps"] | None
    store_rejected_steps: int | None = eqx.field(static=True)

    def __init__(
        self,
        controller: AbstractStepSizeController,
        step_ts: Real[ArrayLike, " steps"] | None = None,
        jump_ts: Real[ArrayLike, " jumps"] | None = None,
        store_rejected_steps: int | None = None,
    ):
        self.controller = controller
        self.step_ts = _as_sorted_times(step_ts, "step_ts")
        self.jump_ts = _as_sorted_times(jump_ts, "jump_ts")
        self.store_rejected_steps = store_rejected_steps

    def wrap(self, direction: RealScalarLike) -> AbstractStepSizeController:
        # On the reversed axis the times change sign, so their order reverses too.
        def flip(ts):
            if ts is None:
                return None
            return jnp.sort(ts.astype(jnp.result_type(direction)) * direction)

        return ClipStepSizeController(
            self.controller.wrap(direction),
            flip(self.step_ts),
            flip(self.jump_ts),
            self.store_rejected_steps,
        )

    def can_jump(self) -> bool:
        return self.jump_ts is not None or self.controller.can_jump()

    def init(
        self,
        terms: PyTree[AbstractTerm],
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        dt0: RealScalarLike | None,
        args: Args,
        func: Callable[[PyTree[AbstractTerm], RealScalarLike, Y, Args], VF],
        error_order: RealScalarLike | None,
    ) -> tuple[RealScalarLike, ControllerState]:
        tnext, state = self.controller.init(
            terms, t0, t1, y0, dt0, args, func, error_order
        )
        tnext, ends_at_jump = clip_to_times(t0, tnext, self.step_ts, self.jump_ts)
        return tnext, (state, jnp.asarray(ends_at_jump))

    def adapt_step_size(
        self,
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        y1_candidate: Y,
        args: Args,
        y_error: Y | None,
        error_order: RealScalarLike | None,
        controller_state: ControllerState,
    ) -> tuple[
        BoolScalarLike,
        RealScalarLike,
        RealScalarLike,
        BoolScalarLike,
        ControllerState,
        RESULTS,
    ]:
        inner_state, ends_at_jump = controller_state
        keep, next_t0, next_t1, made_jump, inner_state, result = (
            self.controller.adapt_step_size(
                t0, t1, y0, y1_candidate, args, y_error, error_order, inner_state
            )
        )
        jumped = keep & ends_at_jump
        made_jump = jumped | made_jump
        next_t0 = where(jumped, restart_after_jump(t1), next_t0)
        next_t1 = jnp.maximum(next_t1, next_t0)
        next_t1, next_ends_at_jump = clip_to_times(
            next_t0, next_t1, self.step_ts, self.jump_ts, ends_at_jump
        )
        state = (inner_state, jnp.asarray(next_ends_at_jump))
        return keep, next_t0, next_t1, made_jump, state, result


def innermost_controller(controller):
    """The controller that proposes the steps: `controller`, or the one that a
    (possibly nested) `ClipStepSizeController` wraps."""
    while isinstance(controller, ClipStepSizeController):
        controller = controller.controller
    return controller

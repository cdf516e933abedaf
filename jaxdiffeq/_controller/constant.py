"""Controllers that do not adapt: `ConstantStepSize` and `StepTo`."""

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PyTree, Real

from .._custom_types import VF, Args, BoolScalarLike, RealScalarLike, Y
from .._errors import InvalidValueError
from .._results import RESULTS
from .._term import AbstractTerm
from .base import AbstractStepSizeController, ControllerState


class ConstantStepSize(AbstractStepSizeController):
    """Steps of the constant size `dt0` (the last step is shortened to end at `t1`).

    Step `n` ends at `t0 + n dt0`, computed from `n` rather than by adding `dt0`
    to the previous time, so that rounding does not accumulate over many steps
    and the times can be recomputed exactly (`ReversibleAdjoint` does so instead
    of storing them). The controller state is `(t0, dt0, n)`.

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    term = jd.ODETerm(lambda t, y, args: -y)
    sol = jd.diffeqsolve(term, jd.Tsit5(), 0.0, 1.0, 0.1, jnp.array(1.0),
                         stepsize_controller=jd.ConstantStepSize())
    ```
    """

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
        del terms, t1, y0, args, func, error_order
        if dt0 is None:
            raise ValueError(
                "`ConstantStepSize` needs a step size: pass `dt0` to `diffeqsolve`, or "
                "use an adaptive controller such as `PIDController`, which can choose "
                "the first step itself when `dt0=None`."
            )
        one = jnp.asarray(1, jnp.int32)
        return step_time((t0, dt0, one)), (t0, dt0, one)

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
        del t0, y0, y1_candidate, args, y_error, error_order
        start, dt0, n = controller_state
        state = (start, dt0, n + 1)
        return True, t1, step_time(state), False, state, RESULTS.successful


def step_time(controller_state, n=None):
    """The end of step `n` (default: the state's next step) of a
    `ConstantStepSize` solve with this controller state."""
    start, dt0, next_n = controller_state
    n = next_n if n is None else n
    return start + jnp.asarray(n).astype(jnp.result_type(dt0)) * dt0


class StepTo(AbstractStepSizeController):
    """Steps between the given times, in order: `ts[0] = t0`, ..., `ts[-1] = t1`.

    **Arguments:** `ts`, the step boundaries, strictly monotonic in the direction of
    integration, starting at `t0` and ending at `t1`. Use `dt0=None`.

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    term = jd.ODETerm(lambda t, y, args: -y)
    ts = jnp.array([0.0, 0.1, 0.3, 0.6, 1.0])
    sol = jd.diffeqsolve(term, jd.Heun(), 0.0, 1.0, None, jnp.array(1.0),
                         stepsize_controller=jd.StepTo(ts),
                         saveat=jd.SaveAt(steps=True))
    ```
    """

    ts: Real[Array, " times"]

    def __init__(self, ts: Real[ArrayLike, " times"]):
        ts = jnp.asarray(ts)
        if ts.ndim != 1 or ts.shape[0] < 2:
            raise ValueError(
                "`StepTo(ts)` needs a one-dimensional `ts` of length >= 2."
            )
        try:
            concrete = np.asarray(ts)
        except Exception:  # traced: checked in diffeqsolve with error_if instead
            concrete = None
        if concrete is not None:
            diffs = np.diff(concrete)
            if not (np.all(diffs > 0) or np.all(diffs < 0)):
                raise InvalidValueError(
                    "`StepTo(ts)` needs strictly monotonic `ts` (strictly increasing, "
                    "or strictly decreasing to integrate backwards)."
                )
        self.ts = ts

    def wrap(self, direction: RealScalarLike) -> AbstractStepSizeController:
        # In the time dtype (`direction`'s), e.g. for integer `ts`.
        ts = self.ts.astype(jnp.result_type(direction)) * direction
        return eqx.tree_at(lambda c: c.ts, self, ts)

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
        del terms, y0, args, func, error_order
        if dt0 is not None:
            raise ValueError(
                "`StepTo` takes its steps from `ts`; pass `dt0=None` to `diffeqsolve`."
            )
        ts = eqx.error_if(
            self.ts,
            (self.ts[0] != t0) | (self.ts[-1] != t1),
            "`StepTo(ts)` must start at `t0` and end at `t1` (ts[0] == t0, "
            "ts[-1] == t1).",
        )
        ts = eqx.error_if(
            ts,
            jnp.any(jnp.diff(ts) <= 0),
            "`StepTo(ts)` must be strictly monotonic in the direction of integration.",
        )
        return ts[1], jnp.asarray(2, dtype=jnp.int32)

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
        del t0, y0, y1_candidate, args, y_error, error_order
        index = jnp.minimum(controller_state, self.ts.shape[0] - 1)
        return (
            True,
            t1,
            self.ts[index],
            False,
            controller_state + 1,
            RESULTS.successful,
        )

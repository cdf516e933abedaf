"""`PIDController`: adaptive step sizes from the solver's local error estimate."""

from collections.abc import Callable
from typing import cast

import equinox as eqx
import jax
import jax.core
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, ArrayLike, PyTree

from .._custom_types import VF, Args, BoolScalarLike, RealScalarLike, Y
from .._misc import all_lanes, min_lane, real_dtype, where, widest_dtype
from .._results import RESULTS
from .._term import AbstractTerm
from .base import (
    AbstractAdaptiveStepSizeController,
    AbstractStepSizeController,
    ControllerState,
    rms_norm,
)
from .clip import _as_sorted_times, clip_to_times, restart_after_jump
from .initial_step import select_initial_step, tolerance_scale


def _is_zero(x) -> bool:
    return isinstance(x, (int, float)) and x == 0


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _bad_tolerances(rtol, atol, xnp=np):
    """`(not finite or negative, both zero)` for the tolerances, with NumPy for
    known values or `jax.numpy` for traced ones. Diffrax accepts such tolerances
    silently and then takes meaningless steps."""
    negative = xnp.any(
        ~xnp.isfinite(rtol) | ~xnp.isfinite(atol) | (rtol < 0) | (atol < 0)
    )
    both_zero = xnp.any((rtol == 0) & (atol == 0))
    return negative, both_zero


class PIDController(AbstractAdaptiveStepSizeController):
    r"""Adaptive step sizes by proportional–integral–derivative control of the error.

    After each step the error estimate is scaled and measured,

    $$ e = \operatorname{norm}\Big(\frac{y_\text{err}}{\text{atol} +
    \text{rtol}\cdot\max(|y_0|, |y_1|)}\Big), $$

    the step is accepted if `e < 1` (a NaN error rejects it), and the next step is

    $$ h_{n+1} = h_n \cdot \text{clip}\big(\text{safety}\cdot
    e_n^{-\beta_1} e_{n-1}^{-\beta_2} e_{n-2}^{-\beta_3}\big) $$

    with `β1 = (pcoeff + icoeff + dcoeff) / k`, `β2 = -(pcoeff + 2 dcoeff) / k`,
    `β3 = dcoeff / k`, where `k` is the solver's error order. The default
    (`pcoeff=0, icoeff=1, dcoeff=0`) is the classical integral controller. The
    factor is clipped to `[1, factormax]` after an accepted step and to
    `[factormin, safety]` after a rejected one, and it carries no gradient: accepted
    steps form a mesh that is frozen for differentiation.

    **Arguments:** `rtol`, `atol` (tolerances); `norm` (a function PyTree →
    scalar, root-mean-square by default); `pcoeff`, `icoeff`, `dcoeff`;
    `dtmin`, `dtmax` (bounds on the step; with `force_dtmin=True` a step at `dtmin`
    is accepted whatever its error, with `force_dtmin=False` the solve fails with
    `RESULTS.dt_min_reached`); `factormin`, `factormax`, `safety`; `step_ts`, `jump_ts` (as in
    `ClipStepSizeController`); `error_order` (overrides the solver's); `unvmap_dt`.

    `unvmap_dt=True`: under `jax.vmap`, every lane takes the same steps: the step
    size is the minimum proposed over the batch and a step is accepted only if every
    lane accepts it. This saves the work of lanes waiting for each other (useful
    for neural ODE training, as torchdiffeq does), at the price that lanes influence
    each other's step sizes (so results depend on the batch).

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    term = jd.ODETerm(lambda t, y, args: -y)
    sol = jd.diffeqsolve(term, jd.Tsit5(), 0.0, 10.0, None, jnp.array(1.0),
                         stepsize_controller=jd.PIDController(rtol=1e-6, atol=1e-8))
    ```

    References: Hairer, Nørsett & Wanner, *Solving ODEs I* (II.4); Söderlind,
    "Digital filters in adaptive time-stepping", ACM TOMS 29 (2003).
    """

    # Diffrax's order, for positional arguments.
    rtol: RealScalarLike
    atol: RealScalarLike
    norm: Callable = rms_norm
    pcoeff: RealScalarLike = 0
    icoeff: RealScalarLike = 1
    dcoeff: RealScalarLike = 0
    dtmin: RealScalarLike | None = None
    dtmax: RealScalarLike | None = None
    force_dtmin: bool = True
    factormin: RealScalarLike = 0.2
    factormax: RealScalarLike = 10.0
    safety: RealScalarLike = 0.9
    error_order: RealScalarLike | None = None
    step_ts: ArrayLike | None = None
    jump_ts: ArrayLike | None = None
    unvmap_dt: bool = eqx.field(default=False, static=True)

    def __check_init__(self):
        for name in ("step_ts", "jump_ts"):
            _as_sorted_times(getattr(self, name), name)
        if _is_concrete(self.rtol) and _is_concrete(self.atol):
            negative, both_zero = _bad_tolerances(
                np.asarray(self.rtol), np.asarray(self.atol)
            )
            got = f"got rtol={self.rtol!r}, atol={self.atol!r}."
            if negative:
                raise ValueError(
                    f"`PIDController` needs finite, non-negative `rtol` and `atol`; {got}"
                )
            if both_zero:
                raise ValueError(
                    "`PIDController` needs `rtol > 0` or `atol > 0` (with both zero "
                    f"no step is ever accurate enough); {got}"
                )

    def wrap(self, direction: RealScalarLike) -> AbstractStepSizeController:
        def flip(ts):
            if ts is None:
                return None
            ts = jnp.asarray(ts).astype(jnp.result_type(direction))
            return jnp.sort(ts * direction)

        return eqx.tree_at(
            lambda c: (c.step_ts, c.jump_ts),
            self,
            (flip(self.step_ts), flip(self.jump_ts)),
            is_leaf=lambda x: x is None,
        )

    def can_jump(self) -> bool:
        return self.jump_ts is not None

    def _error_order(self, error_order):
        if self.error_order is not None:
            return self.error_order
        if error_order is None:
            raise ValueError(
                "The solver does not report an error order; pass "
                "`PIDController(..., error_order=...)` (for an ODE: the solver's order "
                "plus one)."
            )
        return error_order

    def _clip(self, next_t0, next_t1, ends_at_jump=False):
        step_ts = None if self.step_ts is None else jnp.asarray(self.step_ts)
        jump_ts = None if self.jump_ts is None else jnp.asarray(self.jump_ts)
        return clip_to_times(next_t0, next_t1, step_ts, jump_ts, ends_at_jump)

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
        del t1
        if not (_is_concrete(self.rtol) and _is_concrete(self.atol)):
            # Traced tolerances: the same check at run time.
            rtol, atol = jnp.asarray(self.rtol), jnp.asarray(self.atol)
            negative, both_zero = _bad_tolerances(rtol, atol, jnp)
            t0 = eqx.error_if(
                t0,
                negative | both_zero,
                "`PIDController` needs finite tolerances `rtol >= 0` and "
                "`atol >= 0`, not both zero.",
            )
        if dt0 is None:
            dt0 = select_initial_step(
                terms,
                t0,
                y0,
                args,
                func,
                self._error_order(error_order),
                self.rtol,
                self.atol,
                self.norm,
            )
            dt0 = lax.stop_gradient(dt0)
            if self.unvmap_dt:
                # (`cast`: `min_lane` is a `custom_vmap`, untyped.)
                dt0 = cast(Array, min_lane(dt0))
        if self.dtmax is not None:
            dt0 = jnp.minimum(dt0, self.dtmax)
        if self.dtmin is not None:
            dt0 = jnp.maximum(dt0, self.dtmin)
        leaves = jtu.tree_leaves(y0)
        dtype = widest_dtype(*leaves) if leaves else jnp.result_type(float)
        one = jnp.ones((), real_dtype(dtype))
        tnext, ends_at_jump = self._clip(t0, t0 + dt0)
        state = (one, one, jnp.asarray(False), jnp.asarray(ends_at_jump))
        return tnext, state

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
        del args
        if y_error is None:
            raise ValueError(
                "This solver does not estimate its error, so it cannot be used with "
                "`PIDController`; use `ConstantStepSize`, a solver with an embedded "
                "error estimate (e.g. `Tsit5`), or wrap it in `HalfSolver`."
            )
        prev_inv_error, prev_prev_inv_error, at_dtmin, ends_at_jump = controller_state
        error_order = self._error_order(error_order)
        prev_dt = jnp.subtract(t1, t0)

        def scaled(y0_, y1_, err_):
            # A NaN candidate should not also poison the scale.
            y1_ = where(jnp.isnan(y1_), y0_, y1_)
            size = jnp.maximum(jnp.abs(y0_), jnp.abs(y1_))
            return err_ / tolerance_scale(size, self.atol, self.rtol)

        error = self.norm(jtu.tree_map(scaled, y0, y1_candidate, y_error))
        error = lax.stop_gradient(error)
        # NaN/inf error: reject and shrink as much as allowed.
        error = where(jnp.isfinite(error), error, jnp.inf)
        keep_step = error < 1
        if self.dtmin is not None:
            keep_step = keep_step | at_dtmin
        if self.unvmap_dt:
            keep_step = all_lanes(keep_step)
        inv_error = 1 / error

        beta1 = (self.pcoeff + self.icoeff + self.dcoeff) / error_order
        beta2 = -(self.pcoeff + 2 * self.dcoeff) / error_order
        beta3 = self.dcoeff / error_order
        factor = self.safety
        if not _is_zero(beta1):
            factor = factor * inv_error**beta1
        if not _is_zero(beta2):
            factor = factor * prev_inv_error**beta2
        if not _is_zero(beta3):
            factor = factor * prev_prev_inv_error**beta3
        lower = where(keep_step, 1, self.factormin)
        upper = where(keep_step, self.factormax, self.safety)
        factor = lax.stop_gradient(jnp.clip(factor, lower, upper))
        dt = prev_dt * factor.astype(jnp.result_type(prev_dt))

        # A failed step (infinite error) must not hold back the following steps.
        inv_error = where((inv_error == 0) | jnp.isinf(inv_error), 1, inv_error)

        result = RESULTS.successful
        if self.dtmax is not None:
            dt = jnp.minimum(dt, self.dtmax)
        if self.dtmin is not None:
            if not self.force_dtmin:
                result = RESULTS.where(dt < self.dtmin, RESULTS.dt_min_reached, result)
            dt = where(at_dtmin & (factor == 1), self.dtmin, dt)
            at_dtmin = dt <= self.dtmin
            dt = jnp.maximum(dt, self.dtmin)
        if self.unvmap_dt:
            # Lanes that have finished take zero-length steps; they must not pull the
            # shared step size to zero.
            dt = where(jnp.greater(prev_dt, 0), dt, jnp.inf)
            shared = min_lane(lax.stop_gradient(dt))
            dt = where(jnp.isinf(shared), prev_dt, shared)

        next_t0 = where(keep_step, t1, t0)
        if self.jump_ts is not None:
            made_jump = keep_step & ends_at_jump
            next_t0 = where(made_jump, restart_after_jump(t1), next_t0)
        else:
            made_jump = False
        next_t1, next_ends_at_jump = self._clip(next_t0, next_t0 + dt, ends_at_jump)

        # The error history is updated only where a later step reads it (the
        # default integral controller reads none): every carried value the step
        # loop updates costs a kernel per step, and compile time.
        if _is_zero(beta2) and _is_zero(beta3):
            new_inv, new_prev_inv = prev_inv_error, prev_prev_inv_error
        else:
            new_inv = where(keep_step, inv_error, prev_inv_error)
            new_prev_inv = where(keep_step, prev_inv_error, prev_prev_inv_error)
        state = (
            new_inv,
            new_prev_inv,
            jnp.asarray(at_dtmin),
            jnp.asarray(next_ends_at_jump),
        )
        return keep_step, next_t0, next_t1, made_jump, state, result

"""The step-size controller interface."""

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import PyTree

from .._custom_types import VF, Args, BoolScalarLike, RealScalarLike, Y
from .._misc import real_dtype, sum_elements, widest_dtype
from .._results import RESULTS
from .._term import AbstractTerm

ControllerState = PyTree[Any]


class AbstractStepSizeController(eqx.Module):
    """Chooses the step sizes of a solve.

    The contract (what the step loop calls):

    - `wrap(direction)`: the same controller for integration on the reversed time
      axis `tau = direction * t` (flip any stored times); the loop always runs
      forwards in `tau`. `diffeqsolve` passes `direction` as `1` or `-1` in the
      time dtype.
    - `init(terms, t0, t1, y0, dt0, args, func, error_order)` returns
      `(tnext, controller_state)`: the end of the first step and the state.
    - `adapt_step_size(t0, t1, y0, y1_candidate, args, y_error, error_order,
      controller_state)` is called after each attempted step `[t0, t1]` and returns
      `(keep_step, next_t0, next_t1, made_jump, controller_state, result)`:
      whether to accept the step, the next step's interval (`next_t0` is `t1` if the
      step is kept, else `t0`), whether `next_t0` sits on a discontinuity of the
      vector field, the new state and a `RESULTS` code.
    """

    def wrap(self, direction: RealScalarLike) -> "AbstractStepSizeController":
        del direction
        return self

    @abc.abstractmethod
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
        """The end of the first step and the initial state."""

    @abc.abstractmethod
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
        """Accept or reject the step `[t0, t1]` and propose the next one."""

    def can_jump(self) -> bool:
        """Whether `adapt_step_size` can ever return `made_jump=True` (lets the loop
        skip the code that handles discontinuities)."""
        return False


class AbstractAdaptiveStepSizeController(AbstractStepSizeController):
    """A controller driven by the solver's error estimate and tolerances."""

    rtol: eqx.AbstractVar[RealScalarLike]
    atol: eqx.AbstractVar[RealScalarLike]


def rms_norm(x: PyTree) -> jnp.ndarray:
    """Root-mean-square over every element of every leaf of `x` (0 for no
    elements)."""
    leaves = [jnp.asarray(leaf) for leaf in jtu.tree_leaves(x)]
    size = sum(leaf.size for leaf in leaves)
    if size == 0:
        return jnp.asarray(0.0)
    # Leaves of different dtypes (float32 beside float64) are summed in the
    # widest of them.
    dtype = real_dtype(widest_dtype(*leaves))
    # (`sum_elements`: a small leaf's squares are added without a reduction,
    # which under `vmap` XLA's CPU backend runs slowly.)
    total = sum(sum_elements(jnp.abs(leaf) ** 2).astype(dtype) for leaf in leaves)
    return jnp.sqrt(total / size)

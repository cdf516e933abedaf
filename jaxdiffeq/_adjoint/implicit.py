"""`ImplicitAdjoint`: gradients of a steady state by the implicit function
theorem."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx

from .._controller.base import AbstractStepSizeController
from .._loop import State
from .._saveat import SaveAt, SubSaveAt
from .._solver.base import AbstractSolver
from .base import AbstractAdjoint


class ImplicitAdjoint(AbstractAdjoint):
    """Differentiate a steady state `y*` (where the vector field vanishes,
    `f(t1, y*, args) = 0`) by the implicit function theorem, without
    differentiating the solve.

    For a solve that has converged to a steady state, `y*` depends on the
    parameters `θ` (`args` and the arrays of the terms) only through
    `f(y*, θ) = 0`, so `dy*/dθ = -(∂f/∂y)⁻¹ ∂f/∂θ`: one linear solve with the
    Jacobian at `y*`, whatever the number of steps. The result does not depend
    on `y0` (its gradient is zero) nor on how the solve got there; it is only
    meaningful when `y(t1)` is a steady state (e.g. integrate long enough, or
    check that the vector field is small there).

    Only `SaveAt(t1=True)` is supported. Forward and reverse mode both work.

    **Arguments:**

    - `linear_solver`: a `lineax` solver for the Jacobian system (default
      `lineax.AutoLinearSolver(well_posed=None)`).
    - `tags`: `lineax` tags describing the Jacobian `∂f/∂y` (e.g.
      `lineax.symmetric_tag`), which let the linear solver use its structure.

    ```python
    import jax
    import jax.numpy as jnp
    import jaxdiffeq as jd

    def steady(c):  # dy/dt = c - y has the steady state y* = c
        term = jd.ODETerm(lambda t, y, c: c - y)
        sol = jd.diffeqsolve(term, jd.Tsit5(), 0.0, 50.0, 0.5, jnp.array(0.0), c,
                             adjoint=jd.ImplicitAdjoint())
        return sol.ys[0]

    jax.grad(steady)(2.0)  # 1.0
    ```
    """

    linear_solver: lx.AbstractLinearSolver = lx.AutoLinearSolver(well_posed=None)
    tags: object = eqx.field(default=frozenset(), static=True)

    def check(
        self,
        *,
        saveat: SaveAt,
        max_steps: int | None,
        event: None,
        solver: AbstractSolver,
        stepsize_controller: AbstractStepSizeController | None = None,
    ) -> None:
        del max_steps, event, solver, stepsize_controller
        subs = jtu.tree_leaves(saveat.subs, is_leaf=_is_sub)
        if (
            saveat.dense
            or not subs
            or any(
                sub.t0 or sub.ts is not None or sub.steps or not sub.t1 for sub in subs
            )
        ):
            raise ValueError(
                "`ImplicitAdjoint` only supports `SaveAt(t1=True)`: it "
                "differentiates the steady state at `t1`."
            )

    def loop(self, run: Callable[..., State], **kwargs: Any) -> State:
        terms, args, t1, direction = (
            kwargs["terms"],
            kwargs["args"],
            kwargs["t1"],
            kwargs["direction"],
        )
        # The solve itself is not differentiated.
        final = run(kind="lax", checkpoints=None, **_stop_gradient(kwargs))
        t1_const = lax.stop_gradient(t1)

        def residual(y, params):
            terms, args = params
            return terms.vf_prod(t1_const, y, args, terms.contr(t1_const, t1_const + 1))

        linear_solver = self.linear_solver

        def tangent_solve(g, b):
            operator = lx.FunctionLinearOperator(
                g, jax.eval_shape(lambda: b), tags=self.tags
            )
            return lx.linear_solve(operator, b, solver=linear_solver).value

        params = (terms, args)
        y_star = lax.stop_gradient(final.step.y)
        y = lax.custom_root(
            lambda y: residual(y, params),
            y_star,
            lambda f, guess: y_star,
            tangent_solve,
        )
        save_states = []
        for sub, s in zip(kwargs["subs"], final.save_states):
            out = sub.fn(t1 * direction, y, args)
            ys = jtu.tree_map(
                lambda b, v: b.at[0].set(jnp.asarray(v, b.dtype)), s.ys, out
            )
            save_states.append(eqx.tree_at(lambda x: x.ys, s, ys))
        step = eqx.tree_at(lambda s: s.y, final.step, y)
        return eqx.tree_at(
            lambda f: (f.step, f.save_states), final, (step, save_states)
        )


def _is_sub(x):
    return isinstance(x, SubSaveAt)


def _stop_gradient(tree):
    arrays, static = eqx.partition(tree, eqx.is_inexact_array)
    return eqx.combine(lax.stop_gradient(arrays), static)

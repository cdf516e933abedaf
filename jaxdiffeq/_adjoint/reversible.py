"""`ReversibleAdjoint`: exact gradients in constant memory, by undoing the steps
of an algebraically reversible solver."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.tree_util as jtu
from jax.custom_derivatives import SymbolicZero
from jaxtyping import PyTree

from .._controller.base import AbstractStepSizeController
from .._controller.constant import ConstantStepSize
from .._custom_types import Args, RealScalarLike, Y
from .._loop import State, layout
from .._misc import (
    instantiate_zero,
    live_vmap,
    stop_integer_tangents,
    zero_cotangent,
)
from .._saveat import SaveAt, SubSaveAt
from .._solver.base import AbstractReversibleSolver, AbstractSolver, is_directly
from .._solver.reversible import Reversible
from .._solver.runge_kutta import reverse_only, unfolded
from .._term import AbstractTerm
from .base import AbstractAdjoint, closure_convert_terms
from .reversible_backward import Static, reverse_core


class ReversibleAdjoint(AbstractAdjoint):
    """Differentiate through the solver's operations (discretise-then-optimise)
    in constant memory, by running an algebraically reversible solver backwards.

    The forward solve stores nothing per step but, with adaptive step sizes,
    the times of the accepted steps (constant steps are recomputed). The
    backward pass walks the steps from last to first: it rebuilds each step's start
    from its end (`AbstractReversibleSolver.backward_step`), linearises the step
    there and pulls the cotangents back through it. The gradients are those of
    the computed solution (like `RecursiveCheckpointAdjoint`'s, up to the
    rounding of the reconstruction), not of an approximate adjoint equation.

    **Solvers.** A reversible solver (`ReversibleHeun`, `LeapfrogMidpoint`,
    `SemiImplicitEuler`, `Reversible(...)`) is used as it is; any other explicit
    single-step solver is wrapped in `Reversible(solver)` (coupling 0.999),
    which changes the numbers of the solve (two coupled states, two steps of the
    wrapped solver per step). Pass `Reversible(solver, coupling=...)` to choose
    the coupling.

    **Cost.** Memory: one state, whatever the number of steps; with adaptive
    step sizes also the accepted step times (`max_steps + 1` numbers); with
    `checkpoint_every=k`, also one state per `k` steps. Time: one forward
    solve, then per step one `backward_step`, one linearised step and its
    transpose (for `Reversible`, undoing and linearising share their
    evaluations: two linearised steps of the wrapped solver per step). Under `vmap`, the cotangents of
    parameters shared by the batch are summed inside each backward step (one
    accumulator, not one per example), and lanes that have finished are masked.

    **Supports** constant and adaptive step sizes (rejected steps are not
    replayed); `SaveAt(t0, t1, ts, steps, fn, subs)` (outputs at `ts` are pulled
    back through the interpolant of the step that contains them, `t_k < s <=
    t_{k+1}`, the forward convention); gradients with respect to `y0`, `args`,
    the arrays of the terms (parameters of an `equinox.Module` vector field,
    and arrays its function closes over) and `SaveAt(ts)`. Not supported (an
    error says so): `SaveAt(dense=True)`, events, `max_steps=None`, gradients
    with respect to `t0`, `t1` or `dt0`, controllers with `jump_ts`, forward
    mode and higher derivatives.

    **Stability.** Reconstruction multiplies rounding errors by about
    `1/coupling` per step, and more where the forward solve damps (decaying
    modes are amplified backwards): use float64, and `checkpoint_every` for long
    or strongly damped solves. See docs/choosing-an-adjoint.md.

    **Arguments:**

    - `checkpoint_every`: store the state (and solver state) every this many
      accepted steps, and restart the reconstruction from the stored state
      there, which bounds the drift. Default `None`: store nothing.

    ```python
    import jax
    import jax.numpy as jnp
    import jaxdiffeq as jd

    def loss(k):
        term = jd.ODETerm(lambda t, y, k: -k * y)
        sol = jd.diffeqsolve(term, jd.Tsit5(), 0.0, 1.0, 0.1, jnp.array(1.0), k,
                             adjoint=jd.ReversibleAdjoint())
        return sol.ys[0]

    jax.grad(loss)(0.5)  # about -exp(-0.5)
    ```

    Reference: S. McCallum, J. Foster, "Efficient, accurate and stable gradients
    for neural ODEs", arXiv:2410.11648 (2024).
    """

    checkpoint_every: int | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        k = self.checkpoint_every
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise ValueError(
                f"`ReversibleAdjoint(checkpoint_every=...)` must be a positive int "
                f"or None, got {k!r}."
            )

    def prepare_solver(self, solver: AbstractSolver) -> AbstractSolver:
        if is_directly(solver, AbstractReversibleSolver):
            return solver
        return Reversible(solver)

    def prepare_terms(
        self, terms: PyTree[AbstractTerm], t0: RealScalarLike, y0: Y, args: Args
    ) -> PyTree[AbstractTerm]:
        # The backward pass is a custom rule: closed-over arrays must be explicit.
        return closure_convert_terms(terms, t0, y0, args)

    def check(
        self,
        *,
        saveat: SaveAt,
        max_steps: int | None,
        event: None,
        solver: AbstractSolver,
        stepsize_controller: AbstractStepSizeController | None = None,
    ) -> None:
        if event is not None:
            raise ValueError(
                "`ReversibleAdjoint` does not support events; use "
                "`RecursiveCheckpointAdjoint`."
            )
        if saveat.dense:
            raise ValueError(
                "`ReversibleAdjoint` does not support `SaveAt(dense=True)`; save at "
                "`ts` instead, or use `RecursiveCheckpointAdjoint`."
            )
        if max_steps is None:
            raise ValueError(
                "`ReversibleAdjoint` needs `max_steps` (it sizes the record of step "
                "times); pass an int."
            )
        if stepsize_controller is not None:
            if stepsize_controller.can_jump():
                raise ValueError(
                    "`ReversibleAdjoint` does not support step-size controllers that "
                    "step to discontinuities (`jump_ts`); use "
                    "`RecursiveCheckpointAdjoint`."
                )
            if (
                is_directly(solver, AbstractReversibleSolver)
                and solver.constant_steps_only
                and not isinstance(stepsize_controller, ConstantStepSize)
            ):
                raise ValueError(
                    f"`{type(solver).__name__}` is reversible with constant step "
                    "sizes only; use `ConstantStepSize`, or another solver with "
                    "`ReversibleAdjoint`."
                )

    def loop(self, run: Callable[..., State], **kwargs: Any) -> State:
        every = self.checkpoint_every
        arrays, static = eqx.partition(kwargs, eqx.is_array)

        # Constant steps: the times are recomputed in the backward pass.
        record_times = not isinstance(kwargs["controller"], ConstantStepSize)

        def forward(arrays):
            final = run(
                kind="lax",
                record_times=record_times,
                record_every=every,
                **eqx.combine(arrays, static),
            )
            without = State(
                final.step, final.save_states, final.dense_ts, final.dense_infos
            )
            return without, final.record

        @jax.custom_vjp
        def solve(arrays):
            return run(kind="lax", **eqx.combine(arrays, static))

        def fwd(arrays):
            values = jtu.tree_map(
                lambda p: p.value,
                arrays,
                is_leaf=lambda x: isinstance(x, jax.custom_derivatives.CustomVJPPrimal),
            )
            perturbed = jtu.tree_map(
                lambda p: bool(p.perturbed),
                arrays,
                is_leaf=lambda x: isinstance(x, jax.custom_derivatives.CustomVJPPrimal),
            )
            for key in ("t0", "t1", "tnext", "controller", "controller_state"):
                if any(jtu.tree_leaves(perturbed.get(key))):
                    raise ValueError(
                        "`ReversibleAdjoint` does not differentiate with respect to "
                        "`t0`, `t1`, `dt0` or the step-size controller; use "
                        "`RecursiveCheckpointAdjoint`."
                    )
            # Which inputs are differentiated: known while tracing, used by the
            # backward rule (traced after this one) to skip the others.
            perturbed_cell[:] = [perturbed]
            final, record = forward(values)
            return final, (final, record, values)

        def bwd(residuals, ct_final):
            final, record, values = residuals
            ct_final = jtu.tree_map(
                instantiate_zero,
                ct_final,
                is_leaf=lambda x: isinstance(x, SymbolicZero),
            )
            (perturbed,) = perturbed_cell
            with unfolded(), reverse_only():  # the steps linearised here
                return (
                    _cotangents(
                        values, perturbed, static, final, record, ct_final, every
                    ),
                )

        perturbed_cell = []

        solve.defvjp(fwd, bwd, symbolic_zeros=True)
        return stop_integer_tangents(solve(arrays))


def _cotangents(values, perturbed, static_kw, final, record, ct_final, every):
    """The cotangents of the loop's array inputs `values` (those `perturbed`),
    from those of its final state."""
    kw = eqx.combine(values, static_kw)
    subs: list[SubSaveAt] = kw["subs"]
    max_steps = kw["max_steps"]
    layouts = [layout(sub, max_steps) for sub in subs]
    # The parameters: differentiated (`theta_diff`: perturbed inexact arrays),
    # other arrays, and the rest (static).
    theta_values = (values["terms"], values["args"])
    theta_perturbed = (perturbed["terms"], perturbed["args"])

    def differentiated(v, p):
        return p and eqx.is_inexact_array(v)

    theta_diff = jtu.tree_map(
        lambda v, p: v if differentiated(v, p) else None, theta_values, theta_perturbed
    )
    theta_other = jtu.tree_map(
        lambda v, p: None if differentiated(v, p) else v, theta_values, theta_perturbed
    )
    theta_static = eqx.partition((kw["terms"], kw["args"]), eqx.is_array)[1]
    lanes = dict(
        times=None if record is None else record.ts,
        # Without recorded times, the steps were constant: `step_time` recomputes
        # them from the initial controller state.
        controller_state=kw["controller_state"]
        if record is None or record.ts is None
        else None,
        states=None if record is None else record.states,
        n=final.step.num_accepted_steps,
        y=final.step.y,
        s=final.step.solver_state,
        y_ct=ct_final.step.y,
        s_ct=ct_final.step.solver_state,
        ys_ct=[s.ys for s in ct_final.save_states],
        ts_ct=[s.ts for s in ct_final.save_states],
        subs_ts=[sub.ts for sub in subs],
        t0=kw["t0"],
        tend=final.step.tprev,
        y0=kw["y0"],
        direction=kw["direction"],
    )
    static = Static(
        solver=kw["solver"],
        fns=tuple(sub.fn for sub in subs),
        steps=tuple(sub.steps for sub in subs),
        t0_rows=tuple(bool(sub.t0) for sub in subs),
        t1_rows=tuple(bool(sub.t1) for sub in subs),
        layouts=tuple(layouts),
        every=every,
        theta_static=theta_static,
    )
    # Whether the cotangents of parameters shared by a batch may be summed over
    # its lanes inside the backward pass (see `live_vmap`).
    sum_shared = live_vmap((lanes, theta_diff, theta_other))
    lane_ct, theta_ct = reverse_core(static, lanes, theta_diff, theta_other, sum_shared)

    # Assemble the cotangent of every array input (zeros where none).
    ct = jtu.tree_map(zero_cotangent, values)
    ct["y0"] = lane_ct["y0"]
    ct["solver_state"] = lane_ct["s0"]
    ct["terms"], ct["args"] = eqx.combine(
        theta_ct, jtu.tree_map(zero_cotangent, theta_other)
    )
    for i, sub in enumerate(subs):
        if sub.ts is not None:
            ct["subs"] = eqx.tree_at(
                lambda c, i=i: c[i].ts, ct["subs"], lane_ct["ts"][i]
            )
    return ct

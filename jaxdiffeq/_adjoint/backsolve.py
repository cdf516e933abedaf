"""`BacksolveAdjoint`: the continuous adjoint, solved backwards in time."""

import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, ArrayLike, Float, PyTree

from .._controller.base import (
    AbstractAdaptiveStepSizeController,
    AbstractStepSizeController,
    rms_norm,
)
from .._controller.constant import ConstantStepSize
from .._custom_types import Args, RealScalarLike, Y
from .._errors import UnsupportedError
from .._loop import State, layout
from .._misc import stop_integer_tangents, tree_add, widest_dtype, zero_cotangent
from .._saveat import SaveAt, SubSaveAt, save_y
from .._solver.base import AbstractSolver
from .._term import AbstractTerm, ODETerm, _DirectedTerm
from .base import AbstractAdjoint, closure_convert_terms


def adjoint_rms_seminorm(
    x: tuple[PyTree[ArrayLike], PyTree[ArrayLike], PyTree[ArrayLike]],
) -> Float[Array, ""]:
    """The RMS norm of the state and its adjoint only, for the step-size
    controller of `BacksolveAdjoint`'s backward solve: the error in the
    parameters' adjoint (an integral of the other two) does not limit the step.

    `BacksolveAdjoint(stepsize_controller=PIDController(rtol=..., atol=...,
    norm=adjoint_rms_seminorm))`. Reference: P. Kidger, R. T. Q. Chen, T. Lyons,
    "'Hey, that's not an ODE': Faster ODE adjoints via seminorms", ICML 2021.
    """
    y, a, _ = x
    return rms_norm((y, a))


class BacksolveAdjoint(AbstractAdjoint):
    """Reverse mode by the continuous adjoint: solve the adjoint ODE backwards
    in time (optimise-then-discretise).

    Along the backward solve from the last saved time to `t0` it integrates
    the state `y` (again, backwards), its adjoint `a` with `da/dt = -aᵀ ∂f/∂y`,
    and the parameters' adjoint `g` with `dg/dt = -aᵀ ∂f/∂θ`. At each saved time
    the cotangent of the output is added to `a`, and `y` restarts from the
    state the forward solve had there (stored once per saved time), so that
    reconstruction errors do not accumulate across outputs. Memory is constant
    in the number of steps. The gradients are those of the exact solution, up
    to the tolerances of both solves: **approximate**, and unlike the other
    adjoints not the derivative of the computed numbers. Reconstructing `y`
    backwards is unstable for dissipative problems (it grows where the forward
    solve decays); restarting at every saved time bounds the damage.

    Supports `ODETerm`s, `SaveAt(t0=..., t1=..., ts=..., fn=..., subs=...)`
    (for `fn`, the state at each saved time is kept and the output's cotangent
    pulled back through `fn`), and gradients with respect to `y0`, `args`, the
    arrays of the terms (parameters of an `equinox.Module` vector field, and
    arrays its function closes over), `t0`, `t1` and `SaveAt(ts)`. Not
    supported: `SaveAt(steps=...)` and `SaveAt(dense=True)` (an
    `UnsupportedError`, a `NotImplementedError` as in Diffrax), terms other than
    `ODETerm`.

    **Arguments:** keyword arguments for the backward `diffeqsolve`, e.g.
    `solver=...`, `stepsize_controller=...`, `max_steps=...`. By default the
    forward solve's solver, its adaptive controller (or, for constant steps,
    its first step size) and `max_steps`. The default controller measures the
    error of `y`, `a` and `g` together; `adjoint_rms_seminorm` leaves `g` out
    (fewer steps, `g` less accurate).

    ```python
    import jax
    import jax.numpy as jnp
    import jaxdiffeq as jd

    def loss(k):
        term = jd.ODETerm(lambda t, y, k: -k * y)
        sol = jd.diffeqsolve(term, jd.Tsit5(), 0.0, 1.0, 0.01, jnp.array(1.0), k,
                             adjoint=jd.BacksolveAdjoint())
        return sol.ys[0]

    jax.grad(loss)(0.5)  # about -exp(-0.5)
    ```

    Reference: R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud, "Neural
    Ordinary Differential Equations", NeurIPS 2018.
    """

    # Sorted (key, value) pairs rather than a dict, so that the adjoint is
    # hashable (e.g. a static argument of `jax.jit`).
    settings: tuple[tuple[str, Any], ...]

    def __init__(self, **kwargs: Any):
        for key in ("terms", "t0", "t1", "y0", "args", "saveat", "adjoint"):
            if key in kwargs:
                raise ValueError(
                    f"`BacksolveAdjoint({key}=...)`: the backward solve takes "
                    f"`{key}` from the forward solve; pass solver settings only."
                )
        self.settings = tuple(sorted(kwargs.items()))

    @property
    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the backward `diffeqsolve`."""
        return dict(self.settings)

    def prepare_terms(
        self, terms: PyTree[AbstractTerm], t0: RealScalarLike, y0: Y, args: Args
    ) -> PyTree[AbstractTerm]:
        # Closed-over arrays become parameters the adjoint solve differentiates.
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
        del max_steps, event, solver, stepsize_controller
        subs = jtu.tree_leaves(saveat.subs, is_leaf=lambda x: isinstance(x, SubSaveAt))
        if saveat.dense:
            raise UnsupportedError(
                "`BacksolveAdjoint` does not support `SaveAt(dense=True)`; use "
                "`RecursiveCheckpointAdjoint`."
            )
        for sub in subs:
            if sub.steps:
                raise UnsupportedError(
                    "`BacksolveAdjoint` does not support `SaveAt(steps=...)`; use "
                    "`RecursiveCheckpointAdjoint`."
                )

    def loop(self, run: Callable[..., State], **kwargs: Any) -> State:
        terms = kwargs["terms"]
        for term in jtu.tree_leaves(
            terms, is_leaf=lambda x: isinstance(x, AbstractTerm)
        ):
            inner = term.term if isinstance(term, _DirectedTerm) else term
            if not isinstance(inner, ODETerm):
                raise ValueError(
                    "`BacksolveAdjoint` supports `ODETerm`s only; use "
                    "`RecursiveCheckpointAdjoint`."
                )
        # The backward solve restarts from the forward states at the saved
        # times. Outputs of a `fn` are not states: the states at their `ts` are
        # saved by extra `SubSaveAt`s, dropped from what the loop returns.
        subs = list(kwargs["subs"])
        extras = [SubSaveAt(ts=sub.ts) for sub in subs if _needs_states(sub)]
        kwargs = dict(kwargs, subs=subs + extras)
        arrays, static = eqx.partition(kwargs, eqx.is_array)
        settings = self.kwargs
        num_subs = len(subs)

        def user_part(final):
            return eqx.tree_at(
                lambda f: f.save_states, final, final.save_states[:num_subs]
            )

        @jax.custom_vjp
        def solve(arrays):
            final = run(kind="lax", checkpoints=None, **eqx.combine(arrays, static))
            return user_part(final)

        def fwd(arrays):
            final = run(kind="lax", checkpoints=None, **eqx.combine(arrays, static))
            return user_part(final), (final, arrays)

        def bwd(residuals, ct_final):
            final, arrays = residuals
            # Residuals may come back as literals; make them arrays again.
            arrays = jtu.tree_map(jnp.asarray, arrays)
            kw = eqx.combine(arrays, static)
            grads = _backsolve(kw, num_subs, final, ct_final, settings)
            return (_cotangent_tree(arrays, grads),)

        solve.defvjp(fwd, bwd)
        return stop_integer_tangents(solve(arrays))


def _needs_states(sub: SubSaveAt) -> bool:
    return sub.ts is not None and sub.fn is not save_y


def _cotangent_tree(arrays, grads):
    """Cotangents for `arrays` (the array leaves of the loop's keyword
    arguments): the computed ones where `grads` has them, zeros elsewhere."""

    ct = jtu.tree_map(zero_cotangent, arrays)
    for key, value in grads.items():
        if key == "ts":
            for i, d_ts in value.items():
                ct = eqx.tree_at(lambda c, i=i: c["subs"][i].ts, ct, d_ts)
        elif key in ("args", "terms"):
            # `value` has `None` where a leaf is not differentiable.
            ct[key] = jtu.tree_map(lambda z, g: z if g is None else g, ct[key], value)
        else:
            ct[key] = value
    return ct


def _parameters(terms, args):
    """`(theta, static)`: the inexact arrays of the terms and `args`, the
    parameters whose adjoint the backward solve integrates. The direction of
    integration that `_DirectedTerm` carries is not one: as a parameter its
    adjoint would enter the backward solve's error norm (and the step sizes)."""

    def spec(x):
        if isinstance(x, _DirectedTerm):
            return _DirectedTerm(jtu.tree_map(eqx.is_inexact_array, x.term), False)  # pyright: ignore[reportArgumentType]
        return eqx.is_inexact_array(x)

    filter_spec = jtu.tree_map(
        spec, (terms, args), is_leaf=lambda x: isinstance(x, _DirectedTerm)
    )
    return eqx.partition((terms, args), filter_spec)


def _tree_dot(a, b):
    products = [jnp.sum(x * y) for x, y in zip(jtu.tree_leaves(a), jtu.tree_leaves(b))]
    if not products:
        return jnp.zeros(())
    dtype = widest_dtype(*products)  # leaves of different dtypes
    total = products[0].astype(dtype)
    for p in products[1:]:
        total = total + p.astype(dtype)
    return total


class _Events(eqx.Module):
    """The saved outputs as the backward solve sees them, one row each: the
    time (forward axis), the forward state there, and the output's cotangent
    pulled back to the state (`c_y`) and to the time through `fn`'s own time
    argument (`c_t`)."""

    times: jax.Array
    states: Any
    c_y: Any
    c_t: jax.Array
    ends: jax.Array  # the rows whose time is the end of the solve (`t1` rows)


def _pull_outputs(sub, times, states, ct_rows, args, direction):
    """`(c_y, c_t, c_args)` of rows of outputs `fn(direction t, y, args)`;
    `c_args` (summed over the rows) is `None` for the default `fn`."""
    if sub.fn is save_y:
        return ct_rows, jnp.zeros(times.shape, times.dtype), None
    args_diff, args_static = eqx.partition(args, eqx.is_inexact_array)

    def one(t, y, ct):
        def output(t, y, a):
            return sub.fn(t * direction, y, eqx.combine(a, args_static))

        _, pull = jax.vjp(output, t, y, args_diff)
        return pull(ct)

    c_t, c_y, c_args = jax.vmap(one)(times, states, ct_rows)
    c_args = jtu.tree_map(lambda x: jnp.sum(x, axis=0), c_args)
    return c_y, c_t, c_args


def _slice(tree, start, stop):
    return jtu.tree_map(lambda x: x[start:stop], tree)


def _sub_events(sub, lay, save_state, ct_state, states_at_ts, kw, t_end, y_end):
    """One sub's outputs as rows `(times, states, c_y, c_t, ends)` (its `ts`,
    then its `t1`), its `t0` row `(c_y, c_t)` if any, and the cotangent `fn`
    sends to `args`."""
    args, direction = kw["args"], kw["direction"]
    rows, t0_row, pulled_args = [], None, []

    def pull(times, states, ct_rows):
        c_y, c_t, ca = _pull_outputs(sub, times, states, ct_rows, args, direction)
        if ca is not None:
            pulled_args.append(ca)
        return c_y, c_t

    def one(tree):
        return jtu.tree_map(lambda x: x[None], tree)

    if sub.t0:
        t0_row = pull(kw["t0"][None], one(kw["y0"]), _slice(ct_state.ys, 0, 1))
    if sub.ts is not None:
        if states_at_ts is None:
            states_at_ts = _slice(save_state.ys, lay.offset_ts, lay.offset_steps)
        ct_rows = _slice(ct_state.ys, lay.offset_ts, lay.offset_steps)
        c_y, c_t = pull(sub.ts, states_at_ts, ct_rows)
        rows.append((sub.ts, states_at_ts, c_y, c_t, jnp.zeros(lay.num_ts, bool)))
    if sub.t1:
        ct_rows = _slice(ct_state.ys, lay.offset_t1, lay.offset_t1 + 1)
        c_y, c_t = pull(t_end[None], one(y_end), ct_rows)
        rows.append((t_end[None], one(y_end), c_y, c_t, jnp.ones(1, bool)))
    c_args = functools.reduce(tree_add, pulled_args) if pulled_args else None
    return rows, t0_row, c_args


def _events(kw, num_subs, final, ct_final):
    """The outputs after `t0` (`ts` and `t1` rows, and the final state) as
    `_Events`, with the rows of each sub's `ts`, the `t0` rows apart (the
    backward solve does not visit them), and the cotangent `fn` sends to
    `args`."""
    t_end, y_end = final.step.tprev, final.step.y
    extra = iter(final.save_states[num_subs:])
    rows, t0_rows, c_args = [], [], []
    ts_index, count = {}, 0
    for i, sub in enumerate(kw["subs"][:num_subs]):
        lay = layout(sub, kw["max_steps"])
        # `SubSaveAt(ts=sub.ts)` saved the states at `fn`'s times: its rows.
        states_at_ts = next(extra).ys if _needs_states(sub) else None
        sub_rows, t0_row, ca = _sub_events(
            sub,
            lay,
            final.save_states[i],
            ct_final.save_states[i],
            states_at_ts,
            kw,
            t_end,
            y_end,
        )
        if sub.ts is not None:
            ts_index[i] = (count, count + lay.num_ts)
        count += sum(r[0].shape[0] for r in sub_rows)
        rows += sub_rows
        t0_rows += [] if t0_row is None else [t0_row]
        c_args += [] if ca is None else [ca]
    # The final state itself (a cotangent of the loop's final state).
    c_final = jtu.tree_map(lambda c: c[None], ct_final.step.y)
    y1 = jtu.tree_map(lambda y: y[None], y_end)
    zero = jnp.zeros((1,), t_end.dtype)
    rows.append((t_end[None], y1, c_final, zero, jnp.ones(1, bool)))

    def cat(*xs):
        return jnp.concatenate(xs)

    parts = (jtu.tree_map(cat, *part) for part in zip(*rows))
    c_args = functools.reduce(tree_add, c_args) if c_args else None
    return _Events(*parts), ts_index, t0_rows, c_args


def _backward_solve(kw, theta, theta_static, settings):
    """`back(state, start, end)`: the augmented system `(y, a, g)` integrated
    from `start` back to `end` (forward axis), with the solver and controller
    of `settings`, else the forward solve's."""
    from .._solve import diffeqsolve  # the backward solve is a solve
    from .forward import ForwardMode

    def augmented(t, state, theta):
        y, a, _ = state
        fy, pull = jax.vjp(lambda y, theta: _field(t, y, theta, theta_static), y, theta)
        a_y, a_theta = pull(a)
        neg = lambda x: jtu.tree_map(jnp.negative, x)  # noqa: E731
        return fy, neg(a_y), neg(a_theta)

    solver = settings.get("solver", kw["solver"])
    controller = settings.get("stepsize_controller")
    if controller is None:
        controller = kw["controller"]
        if not isinstance(controller, AbstractAdaptiveStepSizeController):
            controller = ConstantStepSize()
    dt = settings.get("dt0")
    if dt is None:
        # The forward solve's first step, as Diffrax starts its backward solve
        # with the forward `dt0` (measured: on Van der Pol, Hairer's choice of a
        # first step for the backward solve gave a gradient 3.5x less accurate).
        # A zero-length first step (t0 == t1) leaves only empty segments.
        first = kw["tnext"] - kw["t0"]
        dt = jnp.where(first == 0, 1, first)
    extra = {
        k: v
        for k, v in settings.items()
        if k not in ("solver", "stepsize_controller", "dt0")
    }
    extra.setdefault("max_steps", kw["max_steps"])
    # A failed backward solve would be a wrong gradient: raise by default.
    extra.setdefault("throw", True)
    term = ODETerm(augmented)

    def back(state, start, end):
        sol = diffeqsolve(
            term,
            solver,
            start,
            end,
            None if dt is None else -dt,
            state,
            theta,
            stepsize_controller=controller,
            adjoint=ForwardMode(),
            **extra,
        )
        return jtu.tree_map(lambda x: x[-1], sol.ys)

    return back


def _field(t, y, theta, theta_static):
    """The forward vector field (forward axis) as a function of the parameters."""
    terms, args = eqx.combine(theta, theta_static)
    return terms.vf_prod(t, y, args, terms.contr(t, t + 1))


def _backsolve(kw, num_subs, final, ct_final, settings):
    """The cotangents of the loop's inputs (`y0`, `args`, `terms`, `t0`, `t1`
    and each sub's `ts`) from those of its outputs."""
    t0, y0 = kw["t0"], kw["y0"]
    theta, theta_static = _parameters(kw["terms"], kw["args"])
    back = _backward_solve(kw, theta, theta_static, settings)
    events, ts_index, t0_rows, c_args = _events(kw, num_subs, final, ct_final)

    # Moving an output time moves the output along the vector field (and
    # through `fn`'s time argument); moving t1 moves the outputs at t1.
    slopes = jax.vmap(lambda t, y: _field(t, y, theta, theta_static))(
        events.times, events.states
    )
    time_dtype = events.times.dtype
    moved = jax.vmap(_tree_dot)(events.c_y, slopes).astype(time_dtype)
    d_times = events.c_t + moved
    grads: dict[str, Any] = {
        "ts": {i: d_times[a:b] for i, (a, b) in ts_index.items()},
        "t1": jnp.sum(jnp.where(events.ends, d_times, 0)),
    }

    # The sweep, latest output first: integrate back to each output time from
    # the previous one, restarting `y` from the forward state there, then add
    # the output's cotangent to the adjoint.
    order = jnp.argsort(events.times, descending=True)
    times, states, c_y = jtu.tree_map(
        lambda x: x[order], (events.times, events.states, events.c_y)
    )

    def visit(carry, row):
        a, g, t_prev, y_prev = carry
        t_k, y_k, c_k = row
        _, a, g = back((y_prev, a, g), t_prev, t_k)
        return (tree_add(a, c_k), g, t_k, y_k), None

    first = jtu.tree_map(lambda x: x[0], states)
    start = (jtu.tree_map(jnp.zeros_like, y0), jtu.tree_map(jnp.zeros_like, theta))
    (a, g, t_last, y_last), _ = lax.scan(
        visit, (*start, times[0], first), (times, states, c_y)
    )
    _, a, g = back((y_last, a, g), t_last, t0)

    # t0: the whole trajectory moves with it; the t0 rows only through `fn`.
    grads["t0"] = -_tree_dot(a, _field(t0, y0, theta, theta_static)).astype(time_dtype)
    for c_y0, c_t0 in t0_rows:
        grads["t0"] = grads["t0"] + c_t0[0]
        a = tree_add(a, jtu.tree_map(lambda c: c[0], c_y0))
    grads["y0"] = a
    g_terms, g_args = g
    if c_args is not None:
        g_args = jtu.tree_map(
            lambda x, y: x if y is None else x + y,
            g_args,
            c_args,
            is_leaf=lambda x: x is None,
        )
    grads["args"] = g_args
    grads["terms"] = g_terms
    return grads

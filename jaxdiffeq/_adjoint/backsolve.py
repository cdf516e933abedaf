"""`BacksolveAdjoint`: the continuous adjoint, solved backwards in time."""

from typing import Any

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu

from .._controller.base import AbstractAdaptiveStepSizeController, rms_norm
from .._controller.constant import ConstantStepSize
from .._errors import UnsupportedError
from .._misc import stop_integer_tangents, zero_cotangent
from .._saveat import SubSaveAt, save_y
from .._term import AbstractTerm, ODETerm, _DirectedTerm
from .base import AbstractAdjoint, closure_convert_terms


def adjoint_rms_seminorm(x) -> jax.Array:
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

    Along the backward solve from `t1` to `t0` it integrates the state `y`
    (again, backwards), its adjoint `a` with `da/dt = -aᵀ ∂f/∂y`, and the
    parameters' adjoint `g` with `dg/dt = -aᵀ ∂f/∂θ`; the cotangent of each
    saved output is added to `a` at its time. Memory is constant in the number
    of steps. The gradients are those of the exact solution, up to the
    tolerances of both solves: **approximate**, and unlike the other adjoints
    not the derivative of the computed numbers. Reconstructing `y` backwards is
    unstable for dissipative problems (it grows where the forward solve decays).

    Supports `ODETerm`s, one `SaveAt` with `t0`, `t1` and `ts` (the default
    `fn`), and gradients with respect to `y0`, `args`, the arrays of the terms
    (parameters of an `equinox.Module` vector field, and arrays its function
    closes over), `t0`, `t1` and `SaveAt(ts)`. Not supported (a `ValueError`
    says so): `SaveAt(steps=...)`, `SaveAt(dense=True)`, several `SubSaveAt`s,
    `SaveAt(fn=...)`, terms other than `ODETerm`.

    **Arguments:** keyword arguments for the backward `diffeqsolve`, e.g.
    `solver=...`, `stepsize_controller=...`, `max_steps=...`. By default the
    forward solve's solver, its adaptive controller (or, for constant steps,
    its first step size) and `max_steps`.

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

    def __init__(self, **kwargs):
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

    def prepare_terms(self, terms, t0, y0, args):
        # Closed-over arrays become parameters the adjoint solve differentiates.
        return closure_convert_terms(terms, t0, y0, args)

    def check(
        self, *, saveat, max_steps, event, solver, stepsize_controller=None
    ) -> None:
        del max_steps, event, solver, stepsize_controller
        subs = jtu.tree_leaves(saveat.subs, is_leaf=lambda x: isinstance(x, SubSaveAt))
        if saveat.dense:
            raise UnsupportedError(
                "`BacksolveAdjoint` does not support `SaveAt(dense=True)`; use "
                "`RecursiveCheckpointAdjoint`."
            )
        if len(subs) > 1:
            raise ValueError(
                "`BacksolveAdjoint` supports one `SaveAt` (no `subs=[...]`); use "
                "`RecursiveCheckpointAdjoint`."
            )
        for sub in subs:
            if sub.steps:
                raise UnsupportedError(
                    "`BacksolveAdjoint` does not support `SaveAt(steps=...)`; use "
                    "`RecursiveCheckpointAdjoint`."
                )
            if sub.fn is not save_y:
                raise ValueError(
                    "`BacksolveAdjoint` does not support `SaveAt(fn=...)`; save the "
                    "state and apply the function afterwards."
                )

    def loop(self, run, **kwargs) -> Any:
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
        arrays, static = eqx.partition(kwargs, eqx.is_array)
        settings = self.kwargs

        @jax.custom_vjp
        def solve(arrays):
            return run(kind="lax", checkpoints=None, **eqx.combine(arrays, static))

        def fwd(arrays):
            final = solve(arrays)
            return final, (final, arrays)

        def bwd(residuals, ct_final):
            final, arrays = residuals
            # Residuals may come back as literals; make them arrays again.
            arrays = jtu.tree_map(jnp.asarray, arrays)
            kw = eqx.combine(arrays, static)
            grads = _backsolve(kw, final, ct_final, settings)
            return (_cotangent_tree(arrays, grads),)

        solve.defvjp(fwd, bwd)
        return stop_integer_tangents(solve(arrays))


def _cotangent_tree(arrays, grads):
    """Cotangents for `arrays` (the array leaves of the loop's keyword
    arguments): the computed ones where `grads` has them, zeros elsewhere."""

    ct = jtu.tree_map(zero_cotangent, arrays)
    for key, value in grads.items():
        if key == "ts":
            ct = eqx.tree_at(lambda c: c["subs"][0].ts, ct, value)
        elif key in ("args", "terms"):
            # `value` has `None` where a leaf is not differentiable.
            ct[key] = jtu.tree_map(lambda z, g: z if g is None else g, ct[key], value)
        else:
            ct[key] = value
    return ct


def _backsolve(kw, final, ct_final, settings):
    from .._solve import diffeqsolve  # the backward solve is a solve
    from .forward import ForwardMode

    terms, args, subs = kw["terms"], kw["args"], kw["subs"]
    t0, t1, y0 = kw["t0"], kw["t1"], kw["y0"]
    theta, theta_static = eqx.partition((terms, args), eqx.is_inexact_array)

    def f(t, y, theta):
        terms, args = eqx.combine(theta, theta_static)
        return terms.vf_prod(t, y, args, terms.contr(t, t + 1))

    def augmented(t, state, theta):
        y, a, _ = state
        fy, pull = jax.vjp(lambda y, theta: f(t, y, theta), y, theta)
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
    if dt is None and not isinstance(controller, AbstractAdaptiveStepSizeController):
        dt = kw["tnext"] - t0  # the forward solve's first step
    extra = {
        k: v
        for k, v in settings.items()
        if k not in ("solver", "stepsize_controller", "dt0")
    }
    extra.setdefault("max_steps", kw["max_steps"])
    extra.setdefault("throw", False)
    term = ODETerm(augmented)

    def back(state, start, end):
        """Integrate the augmented system from `start` back to `end`."""
        dt0 = None if dt is None else -dt
        sol = diffeqsolve(
            term,
            solver,
            start,
            end,
            dt0,
            state,
            theta,
            stepsize_controller=controller,
            adjoint=ForwardMode(),
            **extra,
        )
        return jtu.tree_map(lambda x: x[-1], sol.ys)

    def add(a, b):
        return jtu.tree_map(jnp.add, a, b)

    def dot(a, b):
        return sum(
            jnp.sum(x * y) for x, y in zip(jtu.tree_leaves(a), jtu.tree_leaves(b))
        )

    y_end = final.step.y
    a = ct_final.step.y
    grads = {}
    sub = subs[0] if subs else None
    ct_ys = ct_final.save_states[0].ys if subs else None
    if sub is not None and sub.t1:
        a = add(a, jtu.tree_map(lambda c: c[-1], ct_ys))
    # d/dt1: the end state moves along the vector field.
    grads["t1"] = dot(a, f(t1, y_end, theta))
    g0 = jtu.tree_map(jnp.zeros_like, theta)
    state = (y_end, a, g0)
    start = t1
    if sub is not None and sub.ts is not None:
        num_ts = sub.ts.shape[0]
        offset = int(sub.t0)
        ct_ts = jtu.tree_map(lambda c: c[offset : offset + num_ts], ct_ys)
        ys_ts = jtu.tree_map(
            lambda x: x[offset : offset + num_ts], final.save_states[0].ys
        )

        def visit(carry, inputs):
            state, start = carry
            s, ct_s, y_s = inputs
            state = back(state, start, s)
            y, a, g = state
            # d/ds: the output at s moves along the vector field there.
            d_s = dot(ct_s, f(s, y_s, theta))
            return ((y, add(a, ct_s), g), s), d_s

        (state, start), d_ts = lax.scan(
            visit, (state, start), (sub.ts, ct_ts, ys_ts), reverse=True
        )
        grads["ts"] = d_ts
    state = back(state, start, t0)
    _, a, g = state
    grads["t0"] = -dot(a, f(t0, y0, theta))
    if sub is not None and sub.t0:
        a = add(a, jtu.tree_map(lambda c: c[0], ct_ys))
    grads["y0"] = a
    g_terms, g_args = g
    grads["args"] = g_args
    grads["terms"] = g_terms
    return grads

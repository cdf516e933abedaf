"""The root of one stage equation of a diagonally implicit method, and its
derivative by the implicit function theorem posed on the stage value.

On the flattened state a stage solves `k = g(t, base + d k)` for its increment
`k`, where `g(t, v) = f(t, v, args) * control` (`FlatIncrement`). The root is
found in `k`, as Diffrax does (so a step is the same sum of increments). Its
derivative is not `optimistix`'s, which differentiates `k - g(t, base + d k)`
and so solves `(I - d J) dk = J dbase` with `J = dg/dv`: after an explicit
first stage `dbase` is of the order of `h |lambda|` in a stiff direction, the
right-hand side of `(h |lambda|)^2`, and its rounding error passes through the
solve undamped. (POLLU, whose species 16 decays at the rate 4.4e11, one
`Kvaerno3` step of 1e-4: `dy1[3]/dy0[15]` came out 0.90 forward and 0.71
reverse against 1.005 by finite differences.) Posed on the stage value
`z = base + d k`, the equation `z - base - d g(t, z) = 0` gives

    (I - d J) dz = dbase + d (dg/dtheta) dtheta,    dk = (dz - dbase) / d,

whose right-hand side is of the order of `dbase` itself: the same step's
derivatives then match finite differences to their accuracy (1e-7), forward
and reverse.
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import lineax as lx
from jax.flatten_util import ravel_pytree
from jaxtyping import Array

from .._term import AbstractTerm
from .._verychord import VeryChord, VeryChordState, replay_code, replay_record
from .implicit import solve_stage_state


class FlatIncrement(eqx.Module):
    """`g(t, v)`: the term's increment over the step at the flattened state `v`,
    flattened. A module, so that the term's, the control's and the arguments'
    arrays are inputs of `stage_root` (and get their tangents)."""

    term: AbstractTerm
    control: object
    args: object
    unravel: Callable[[Array], Any] = eqx.field(static=True)

    def __call__(self, t, v: Array) -> Array:
        return ravel_pytree(
            self.term.vf_prod(t, self.unravel(v), self.args, self.control)
        )[0]


def _residual(g: FlatIncrement, t, base: Array, d):
    def residual(k, _):
        return k - g(t, base + d.astype(base.dtype) * k)

    return residual


@eqx.filter_custom_jvp
def stage_root(
    g: FlatIncrement, t, base, d, guess, finder, init_state, replay, *, max_steps
):
    """The root `k` of `k = g(t, base + d k)` found by `finder` from `guess` in
    at most `max_steps` iterations (`init_state`: `VeryChord`'s, or `None`), its
    `RESULTS` code, the rate of convergence (0 if the root finder reports none)
    and a `replay_record` of how the iteration ended (0 unless `VeryChord`).
    `replay` (`VeryChord` only; `None` or 0 for none) is such a record of an
    earlier solve to repeat. The derivative of `k` is taken with respect to
    `g`'s arrays, `t` and `base` by the implicit function theorem on the stage
    value (module docstring); the other inputs carry none."""
    options = None
    if isinstance(finder, VeryChord):
        # Tolerances relative to the state, not to the increment solved for.
        options = dict(scale_by=base)
        if replay is not None:
            options["replay"] = replay
    k, code, state = solve_stage_state(
        _residual(g, t, base, d), guess, finder, max_steps, init_state, options
    )
    code = code.value
    if not isinstance(state, VeryChordState):
        return k, code, jnp.zeros(()), jnp.zeros((), jnp.int32)
    if replay is not None:  # the recorded code, not the one of the forced stop
        code = jnp.where(replay > 0, replay_code(replay), code).astype(code.dtype)
    return k, code, state.rate, replay_record(state.step, code)


def _stage_map(z, closure):
    """`z - d g(t, z)`: the stage-value residual less `base`, whose Jacobian is
    the matrix `I - d J` of the stage equation."""
    g, t, d = closure
    return z - d.astype(z.dtype) * g(t, z)


def _theta_tangent(g, t, z, t_g, t_t):
    """`(dg/dtheta) dtheta` at the root: the tangent of `g(t, z)` through `g`'s
    arrays and `t`, with `z` held; `None` where neither has one."""
    if t_g is None and t_t is None:
        return None
    _, out = eqx.filter_jvp(lambda g_, t_: g_(t_, z), (g, t), (t_g, t_t))
    return out


@stage_root.def_jvp
def _stage_root_jvp(primals, tangents, *, max_steps):
    g, t, base, d = primals[:4]
    t_g, t_t, t_base = tangents[:3]
    k, code, rate, record = stage_root(*primals, max_steps=max_steps)
    z = base + d.astype(base.dtype) * k
    dd = d.astype(z.dtype)
    v = _theta_tangent(g, t, z, t_g, t_t)
    if v is None and t_base is None:
        return (k, code, rate, record), (None, None, None, None)
    rhs = jnp.zeros_like(z) if t_base is None else t_base
    if v is not None:
        rhs = rhs + dd * v
    operator = lx.JacobianLinearOperator(_stage_map, z, args=(g, t, d))
    # `throw=False`: a stage that failed (its step is rejected) may have a
    # singular matrix; its tangent is zeroed below.
    dz = lx.linear_solve(
        operator, rhs, lx.AutoLinearSolver(well_posed=None), throw=False
    ).value
    dk = dz if t_base is None else dz - t_base
    dk = jnp.where(code == 0, dk / dd, 0.0).astype(k.dtype)
    return (k, code, rate, record), (dk, None, None, None)

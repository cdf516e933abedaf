"""The starting step size of an adaptive solve with `dt0=None` (Hairer, Nørsett
& Wanner, Solving ODEs I, II.4), and the tolerance scale it shares with the
error norm of `PIDController`."""

import jax
import jax.extend as jex
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu

from .._misc import real_dtype, scale, where
from .._term import scales_by_control

# A vector field of more operations than this is traced once for both of the
# starting step's evaluations, in a `lax.scan` of two turns, so that XLA
# compiles its kernels once; a smaller one is evaluated twice in line, where the
# loop's own kernels would cost more. Fresh-process compile of a `Kvaerno5`
# solve, in line / loop (2026-12-07, medians of 3-5): POLLU (149 operations,
# 27 kernels each time) 1.61 / 1.47 s, the Brusselator (73, whole-array
# operations that fuse into a few kernels) 1.23 / 1.27, HIRES (57) 0.97 / 0.98,
# ROBER (21) 0.84 / 0.88, VDPOL (11) 0.84 / 0.85.
LOOP_SIZE = 100


def tolerance_scale(y, atol, rtol):
    """`atol + rtol |y|` in the real dtype of the leaf `y` (tolerances given as
    float64 arrays must not promote a float32 state)."""
    dtype = real_dtype(jnp.result_type(y))
    return jnp.asarray(atol).astype(dtype) + jnp.asarray(rtol).astype(dtype) * jnp.abs(
        y
    )


def _sub_jaxprs(params):
    """The jaxprs among an operation's parameters (a `jit`'s, a `cond`'s
    branches, a loop's body)."""
    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, jex.core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jex.core.Jaxpr):
                yield item


def _size(jaxpr) -> int:
    """The number of operations of `jaxpr`, those of its sub-jaxprs included."""
    return sum(
        1 + sum(_size(sub) for sub in _sub_jaxprs(eqn.params)) for eqn in jaxpr.eqns
    )


def _both_evaluations(evaluate, guess, t0, y0):
    """`f0 = evaluate(t0, y0)` and `f1 = evaluate(t0 + h0, y0 + h0 f0)` with
    `h0, _ = guess(f0)`: in line, or by one trace of `evaluate` in a loop of two
    turns for a large vector field (`LOOP_SIZE`)."""

    def step_to(f):
        h, _ = guess(f)
        return t0 + h.astype(t0.dtype), jtu.tree_map(
            lambda y, df: y + scale(h, df), y0, f
        )

    if _size(jax.make_jaxpr(evaluate)(t0, y0).jaxpr) <= LOOP_SIZE:
        f0 = evaluate(t0, y0)
        return f0, evaluate(*step_to(f0))

    def turn(point, _):
        f = evaluate(*point)
        return step_to(f), f

    _, fs = lax.scan(turn, (t0, y0), None, length=2)
    return jtu.tree_map(lambda f: f[0], fs), jtu.tree_map(lambda f: f[1], fs)


def select_initial_step(terms, t0, y0, args, func, error_order, rtol, atol, norm):
    """Hairer, Nørsett & Wanner's starting step size (Solving ODEs I, II.4).

    From the sizes of `y0`, `f(t0, y0)` and a finite-difference estimate of the second
    derivative, pick `h` so that an explicit Euler step would make an error of about
    `0.01` of the tolerance; the result is capped at `100 h0`. The norms are
    computed in the state's dtype, the step in the time dtype (`t0`'s).
    """
    time_dtype = jnp.result_type(t0)
    if not scales_by_control(terms):
        # Not a single ODE term (a `MultiTerm`, say, whose `vf` is a tuple):
        # no estimate of the derivative to size the step from. Diffrax's
        # choice: 0.01.
        return jnp.asarray(0.01, time_dtype)
    scale_ = jtu.tree_map(lambda y: tolerance_scale(y, atol, rtol), y0)
    d0 = norm(jtu.tree_map(lambda y, s: y / s, y0, scale_))

    def size_of(f):
        return norm(jtu.tree_map(lambda df, s: df / s, f, scale_))

    def guess(f0):
        """The first guess `h0` and the size `d1` of `f0` it is made from."""
        d1 = size_of(f0)
        small = (d0 < 1e-5) | (d1 < 1e-5)
        return where(small, 1e-6, 0.01 * d0 / where(small, 1, d1)), d1

    f0, f1 = _both_evaluations(
        lambda t, y: func(terms, t, y, args), guess, jnp.asarray(t0, time_dtype), y0
    )
    h0, d1 = guess(f0)
    d2 = size_of(jtu.tree_map(lambda a, b: a - b, f1, f0)) / h0
    max_d = jnp.maximum(d1, d2)
    h1 = where(
        max_d <= 1e-15,
        jnp.maximum(1e-6, h0 * 1e-3),
        (0.01 / where(max_d <= 1e-15, 1, max_d)) ** (1 / error_order),
    )
    return jnp.minimum(100 * h0, h1).astype(time_dtype)

"""The stages of one step of a diagonally implicit (or IMEX) Runge–Kutta method,
on the flattened state.

Stage `i` solves `kI_i = gI(t_i, base_i + d_i kI_i)` for the implicit term's
increment, with `base_i = y0 + sum_{j<i} (aI_ij kI_j + aE_ij kE_j)`, then (IMEX
only) evaluates `kE_i = gE(t_i, base_i + d_i kI_i)`. How a stage equation is
solved (which matrix, which root finder) is the caller's `solve`. The stages
after the first run in a `lax.scan`, so the vector field and the root finder
are traced once whatever the number of stages (compile time).
"""

from collections.abc import Callable
from typing import NamedTuple

import jax.lax as lax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from .butcher import ButcherTableau, lower_triangular


class Stages(NamedTuple):
    """The stage increments `(s, n)` of the implicit term (and of the explicit
    one, or `None`), the first failure's `RESULTS` code (0 if none), whether
    some stage's chord iteration converged slowly, and each stage's
    `replay_record` (`(s,)`, 0 for an explicit stage)."""

    k_implicit: Array
    k_explicit: Array | None
    code: Array
    slow: Array
    records: Array


def predictor(tableau: ButcherTableau) -> np.ndarray:
    """The `(s, s)` strictly lower-triangular matrix of initial guesses."""
    if tableau.a_predictor is None:  # each stage from the one before
        return np.eye(tableau.num_stages, k=-1)
    return lower_triangular([(), *tableau.a_predictor])


def diagonal(tableau: ButcherTableau) -> np.ndarray:
    return (
        np.zeros(tableau.num_stages)
        if tableau.a_diagonal is None
        else (tableau.a_diagonal)
    )


# States of more than this many elements make each pair of weighted sums of
# the stages as one two-row `dot`: XLA's CPU backend hands a matrix product to
# its runtime library, where a one-row `dot` is a kernel of its own to compile
# (about 10 ms each, Brusselator `Kvaerno5`: 2 of 79 kernels fewer). For a few
# elements the library call costs more than the sums it makes (2026-12-08,
# `Kvaerno5` run time, two-row / one-row: ROBER 3.6 / 2.9 ms, HIRES 4.0 / 2.9,
# VDPOL 10.4 / 8.4; from 18 to 512 states the same within noise).
PAIRED_SUMS_SIZE = 16


def _dot(weights, ks):
    """`sum_j weights[..., j] ks[j]`."""
    return jnp.tensordot(jnp.asarray(weights, ks.dtype), ks, 1)


def _paired(rows: np.ndarray, size: int):
    """`rows` (`(..., 2, s)`) as one array for a state of more than
    `PAIRED_SUMS_SIZE` elements, else as a pair of arrays (`_two_sums`)."""
    if size > PAIRED_SUMS_SIZE:
        return rows
    return rows[..., 0, :], rows[..., 1, :]


def _two_sums(rows, ks) -> tuple[Array, Array]:
    """`(sum_j rows[0][j] ks[j], sum_j rows[1][j] ks[j])` for `rows` made by
    `_paired`: one two-row `dot`, or two one-row ones."""
    if isinstance(rows, tuple):
        return _dot(rows[0], ks), _dot(rows[1], ks)
    both = _dot(rows, ks)
    return both[0], both[1]


def run_stages(
    implicit: ButcherTableau,
    explicit: ButcherTableau | None,
    g_implicit: Callable,
    g_explicit: Callable | None,
    solve: Callable,
    t0,
    h,
    y0: Array,
) -> Stages:
    """All stages of the step from `(t0, y0)` of size `h`. `solve(t, base, d,
    guess, stage)` returns the root `k` of `k = gI(t, base + d k)`, its `RESULTS`
    code, whether it converged slowly and its `replay_record`."""
    s = implicit.num_stages
    time_dtype = jnp.result_type(h)
    nodes = np.asarray(implicit.nodes(), dtype=time_dtype)
    d = np.asarray(diagonal(implicit), dtype=time_dtype)
    t_first = t0 + jnp.asarray(nodes[0], time_dtype) * h
    k_first = g_implicit(t_first, y0)
    code, slow = jnp.asarray(0, jnp.int32), jnp.asarray(False)
    records = jnp.zeros(s, jnp.int32)
    if d[0] != 0:  # an SDIRK: the first stage is implicit too
        k_first, code, slow, record = solve(t_first, y0, d[0], k_first, 0)
        records = records.at[0].set(record)
    ki = jnp.zeros((s, *y0.shape), y0.dtype).at[0].set(k_first)
    ke = None
    if g_explicit is not None:
        y_first = y0 + d[0].astype(y0.dtype) * k_first
        ke = jnp.zeros_like(ki).at[0].set(g_explicit(t_first, y_first))
    a_imp = implicit.a_matrix()
    a_exp = a_imp if explicit is None else explicit.a_matrix()

    def stage(carry, xs):
        ki, ke, code, slow, records = carry
        i, rows, a_e, d_i, node = xs
        # Row `i` of `a` and of the predictor.
        base, guess = _two_sums(rows, ki)
        base = y0 + base
        if ke is not None:
            base = base + _dot(a_e, ke)
        t = t0 + node * h
        k, found, slow_i, record = solve(t, base, d_i, guess, i)
        records = lax.dynamic_update_index_in_dim(records, record, i, 0)
        # Row `i` (in range) written by `dynamic_update_index_in_dim`, not
        # `.at[i].set`, whose handling of negative and out-of-range indices
        # compiled two more kernels into the stage.
        ki = lax.dynamic_update_index_in_dim(ki, k, i, 0)
        if ke is not None:
            assert g_explicit is not None
            ke_i = g_explicit(t, base + d_i.astype(base.dtype) * k)
            ke = lax.dynamic_update_index_in_dim(ke, ke_i, i, 0)
        code = jnp.where(code == 0, found, code)
        return (ki, ke, code, slow | slow_i, records), None

    xs = (
        np.arange(1, s),
        _paired(
            np.stack([np.asarray(a_imp[1:]), predictor(implicit)[1:]], axis=1),
            y0.size,
        ),
        np.asarray(a_exp[1:]),
        d[1:],
        nodes[1:],
    )
    init = (ki, ke, code, slow, records)
    (ki, ke, code, slow, records), _ = lax.scan(stage, init, xs)
    return Stages(ki, ke, code, slow, records)


def combine(implicit, explicit, stages: Stages) -> tuple[Array, Array]:
    """`sum_i (bI_i kI_i + bE_i kE_i)` for `b` = `b_sol`, then `b_error`."""
    size = stages.k_implicit[0].size
    rows = _paired(np.stack((implicit.b_sol, implicit.b_error)), size)
    sol, error = _two_sums(rows, stages.k_implicit)
    if stages.k_explicit is not None:
        rows = _paired(np.stack((explicit.b_sol, explicit.b_error)), size)
        sol_e, error_e = _two_sums(rows, stages.k_explicit)
        sol, error = sol + sol_e, error + error_e
    return sol, error

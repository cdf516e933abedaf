"""The Newton matrix `I - gamma J` of a diagonally implicit method, kept in the
solver state across steps, as RADAU5 and CVODE keep theirs.

For an ODE term, whose increment over a step of size `h` is `h f(t, y)`, `J` is
the Jacobian of the vector field `f` with respect to the (flattened) state, and
the matrix of a step of size `h` is `I - gamma h J`. For any other term it is
the Jacobian of the step's increment `g(y) = prod(vf(t, y), control)`, made at
step size `jac_h` and taken as `J h / jac_h` for a step of size `h` (only the
chord iteration's rate of convergence depends on that, not its root). The
factorisation of the matrix is a `lineax` solver state.

When the step recomputes what (`plan`):

* the Jacobian: at the first step, after a step whose chord iteration converged
  slowly (a contraction factor above `SLOW_RATE`) or failed, and every
  `JACOBIAN_MAX_AGE` steps (CVODE's 50). With 0.1 rather than 0.3 the Bari
  problems took fewer Newton iterations and ran 10-40% faster (ROBER, HIRES,
  POLLU, VDPOL, E5, OREGO with `Kvaerno5`), for a few more Jacobians;
* the factorisation: with a new Jacobian, when the step size has changed by
  more than `STEP_CHANGE` since it was made (the `0.3` of CVODE), and every
  `FACTOR_MAX_AGE` steps.

A step whose chord iteration fails with a kept Jacobian is attempted again, at
the same size, with a fresh one before it is rejected: `after_step` marks the
matrix `retry`, and the step loop repeats the attempt without asking the
step-size controller (`AbstractDIRK.retries`). States of at most `ALWAYS_FRESH_SIZE`
elements make both afresh at every step. Nothing here carries a gradient: the
stage equations are differentiated by the implicit function theorem, through
the vector field itself.
"""

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jaxtyping import Array, ArrayLike, PyTree

from .._misc import lanes_cond, where

SLOW_RATE = 0.1
# Up to this many states the Jacobian and its factorisation cost less than the
# bookkeeping of keeping them (and than the extra chord iterations a kept one
# costs): they are made afresh at every step (`AbstractDIRK._cached`). Kvaerno5
# run times, fresh at every step / kept (2026-12-07, 2-core CPU): ROBER (3
# states) 2.8 / 5.0 ms, VDPOL (2) 7.9 / 10.3, HIRES (8) 2.8 / 3.5, POLLU (20)
# 5.6 / 8.8, the Brusselator with 18 states 4.3 / 5.4, 72: 21 / 24, 128: 55 / 64,
# 288: 325 / 295, 512: 1,343 / 1,200. Fresh wins up to about 200 states there,
# but those vector fields are cheap: a Jacobian costs as many JVPs as there are
# states, and with a costlier field (a neural network, a large mechanism)
# keeping it wins much earlier. (Above 8 states XLA's CPU runtime also runs the
# chord iteration's independent kernels on two threads, whose hand-offs cost
# microseconds each; with the stages inside a conditional, as they were before
# the retry moved to the step loop, it ran them on one, and POLLU kept took
# 3.6 ms.)
ALWAYS_FRESH_SIZE = 16
STEP_CHANGE = 0.3
JACOBIAN_MAX_AGE = 50
FACTOR_MAX_AGE = 20


# The positions in `NewtonMatrix.counters`.
_COUNTERS = (
    "stale",
    "retry",
    "singular",
    "jac_age",
    "factor_age",
    "num_jacobians",
    "num_factorisations",
)
_INDEX = {name: i for i, name in enumerate(_COUNTERS)}


class NewtonMatrix(eqx.Module):
    """What a diagonally implicit method keeps between steps (its solver state),
    with the counts `diffeqsolve` reports in `Solution.stats`.

    `jac` is the vector field's Jacobian where the term's increment is its
    control times its vector field (an ODE term): then `jac_h` is `None`, and
    `I - gamma h J` is the matrix of a step of size `h`. For any other term it
    is the Jacobian of the increment over a step of size `jac_h`. `factor` is
    the factorisation for a step of size `factor_h`. The flags, ages and counts
    are packed in `counters` (indices above; read them by the properties).
    Every leaf of the solver state is a kernel of its own where the step loop
    selects between states and where a conditional passes it on: 4 leaves (5
    with `jac_h`) rather than 11 (compile time)."""

    jac: Array
    factor: PyTree
    factor_h: Array
    counters: Array
    jac_h: Array | None = None

    @property
    def stale(self) -> Array:
        return self.counters[_INDEX["stale"]] != 0

    @property
    def retry(self) -> Array:
        return self.counters[_INDEX["retry"]] != 0

    @property
    def singular(self) -> Array:
        return self.counters[_INDEX["singular"]] != 0

    @property
    def jac_age(self) -> Array:
        return self.counters[_INDEX["jac_age"]]

    @property
    def factor_age(self) -> Array:
        return self.counters[_INDEX["factor_age"]]

    @property
    def num_jacobians(self) -> Array:
        return self.counters[_INDEX["num_jacobians"]]

    @property
    def num_factorisations(self) -> Array:
        return self.counters[_INDEX["num_factorisations"]]


def _replaced(packed: Array, values: dict[int, ArrayLike]) -> Array:
    """`packed` with the entries at the given positions replaced: one vector
    made at once, which XLA fuses into one kernel, where a chain of
    `.at[i].set` compiled an in-place update kernel each."""
    return jnp.stack(
        [
            jnp.asarray(values[i], packed.dtype) if i in values else packed[i]
            for i in range(packed.shape[0])
        ]
    )


def _counted(cache: NewtonMatrix, **values) -> NewtonMatrix:
    """The cache with the named counters (`stale=...`, `jac_age=...`) set."""
    counters = _replaced(cache.counters, {_INDEX[k]: v for k, v in values.items()})
    return eqx.tree_at(lambda c: c.counters, cache, counters)


def marked(cache: NewtonMatrix, stale) -> NewtonMatrix:
    """The cache with its Jacobian marked stale (or not)."""
    return _counted(cache, stale=stale)


class FreshCounts(eqx.Module):
    """The solver state of a small state (`ALWAYS_FRESH_SIZE`), whose Jacobian
    and factorisation are made afresh at every step and kept nowhere: the
    counts alone. (Carrying the matrix through the step loop would cost a
    select per leaf in every step for nothing kept.)"""

    num_jacobians: Array
    num_factorisations: Array


def fresh_counts() -> FreshCounts:
    zero = jnp.zeros((), jnp.int32)
    return FreshCounts(num_jacobians=zero, num_factorisations=zero)


def made_afresh(
    size: int, dtype, time_dtype, jac, h, gamma, solver, vector_field: bool
) -> NewtonMatrix:
    """A Newton matrix made from `jac` (see `NewtonMatrix`) for this step, of
    size `h`, alone (factorised unless `gamma` is `None`)."""
    cache = empty(size, dtype, time_dtype, solver, vector_field)
    cache = with_jacobian(cache, jac, h)
    if gamma is not None:
        cache = factorised(cache, h, gamma, solver)
    return cache


def _operator(jac, gamma_h) -> lx.MatrixLinearOperator:
    eye = jnp.eye(jac.shape[0], dtype=jac.dtype)
    return lx.MatrixLinearOperator(eye - gamma_h.astype(jac.dtype) * jac)


def operator(cache: NewtonMatrix, h, gamma) -> lx.MatrixLinearOperator:
    """`I - gamma h J` (a vector field's Jacobian) or `I - gamma (h / jac_h) J`
    (an increment's): the stage equation's Jacobian for step `h`."""
    ratio = h if cache.jac_h is None else h / cache.jac_h
    return _operator(cache.jac, gamma * ratio)


def empty(
    size: int, dtype, time_dtype, solver: lx.AbstractLinearSolver, vector_field: bool
):
    """A cache that asks for a Jacobian at the first step: the vector field's
    (`vector_field`) or the increment's (see `NewtonMatrix`)."""
    jac = jnp.zeros((size, size), dtype)
    one = jnp.ones((), time_dtype)
    # Shaped as a factorisation, not one computed (the first step makes its
    # own): a factorisation here was a program of its own to compile.
    factor = jax.tree.map(
        _placeholder,
        eqx.filter_eval_shape(lambda: solver.init(_operator(jac, one), options={})),
    )
    return NewtonMatrix(
        jac=jac,
        factor=factor,
        factor_h=one,
        counters=jnp.zeros((len(_COUNTERS),), jnp.int32).at[_INDEX["stale"]].set(1),
        jac_h=None if vector_field else one,
    )


def _placeholder(x: jax.ShapeDtypeStruct) -> Array:
    """A leaf of the factorisation before the first one is made: zeros, but
    an integer vector (`lineax.LU`'s pivots) as `0, 1, 2, ...`, a constant of
    the program. (XLA turns a constant of equal entries into a fill, which its
    CPU backend compiles as a kernel of its own.)"""
    if x.ndim == 1 and jnp.issubdtype(x.dtype, jnp.integer):
        return jnp.asarray(np.arange(x.shape[0], dtype=x.dtype))
    return jnp.zeros(x.shape, x.dtype)


def plan(cache: NewtonMatrix, h) -> tuple[Array, Array]:
    """Whether this step needs a new Jacobian, and a new factorisation."""
    new_jac = cache.stale | (cache.jac_age >= JACOBIAN_MAX_AGE)
    changed = jnp.abs(h / cache.factor_h - 1) > STEP_CHANGE
    new_factor = new_jac | changed | (cache.factor_age >= FACTOR_MAX_AGE)
    return new_jac, new_factor


def _singular(op, factor, solver) -> Array:
    """Whether the factorised matrix is singular (`lineax.LU` does not say):
    a zero or non-finite pivot on the diagonal of its LU factors, the one
    `(n, n)` array of the solver's state (`lineax.LU`'s, or
    `lineax.AutoLinearSolver`'s, which chooses it for a square matrix). Reading
    the diagonal compiles to one kernel; a trial solve, the fallback for any
    other state, compiled a dozen and a loop (the pivots' permutation)."""
    n = op.in_size()
    factors = [
        x
        for x in jax.tree.leaves(factor)
        if jnp.ndim(x) == 2 and jnp.shape(x) == (n, n)
    ]
    if len(factors) == 1:
        # The diagonal as every `(n + 1)`-th element of the flattened matrix:
        # a strided slice, which fuses into the test; `jnp.diagonal`'s gather
        # compiled a kernel of its own.
        pivots = factors[0].reshape(-1)[:: n + 1]
        return ~jnp.all(jnp.isfinite(pivots) & (pivots != 0))
    ones = jnp.ones(op.in_structure().shape, op.in_structure().dtype)
    # `solver.compute` rather than `lineax.linear_solve`: nothing here is
    # differentiated, and the primitive's rules cost tracing time.
    x, _, _ = solver.compute(factor, ones, {})
    return ~jnp.all(jnp.isfinite(x))


def with_jacobian(cache: NewtonMatrix, jac, h) -> NewtonMatrix:
    """The cache with the Jacobian `jac`, made at step `h` (which a vector
    field's Jacobian does not record). Its age and count are `after_step`'s,
    outside the conditional that makes it: in its branch, they (and the step
    size) compiled kernels of their own."""
    jac = lax.stop_gradient(jac)
    if cache.jac_h is None:
        return eqx.tree_at(lambda c: c.jac, cache, jac)
    jac_h = jnp.asarray(h).astype(cache.jac_h.dtype)
    return eqx.tree_at(lambda c: (c.jac, c.jac_h), cache, (jac, jac_h))


def factorised(cache: NewtonMatrix, h, gamma, solver) -> NewtonMatrix:
    """The cache with the matrix for step `h` (`operator`) factorised."""
    op = operator(cache, h, gamma)
    factor = lax.stop_gradient(solver.init(op, options={}))
    factor_h = jnp.asarray(h).astype(cache.factor_h.dtype)
    cache = eqx.tree_at(lambda c: (c.factor, c.factor_h), cache, (factor, factor_h))
    return _counted(
        cache,
        singular=_singular(op, factor, solver),
        factor_age=0,
        num_factorisations=cache.num_factorisations + 1,
    )


def refresh(
    cache: NewtonMatrix, need_jac, need_factor, jacobian, h, gamma, solver
) -> NewtonMatrix:
    """The cache with a new Jacobian (`jacobian()`, see `NewtonMatrix`) where
    `need_jac`, and a new factorisation where `need_factor` (or a new Jacobian),
    each computed only if some lane needs it (`lanes_cond`). With `gamma`
    `None` (every stage factorises its own matrix) nothing is factorised."""
    cache = lanes_cond(need_jac, lambda c: with_jacobian(c, jacobian(), h), cache)
    if gamma is None:
        return cache
    return lanes_cond(
        need_jac | need_factor, lambda c: factorised(c, h, gamma, solver), cache
    )


def after_step(cache: NewtonMatrix, slow, failed, new_jac) -> NewtonMatrix:
    """The cache for the next step, after one that made a new Jacobian where
    `new_jac`: older by one, marked stale if the chord iteration converged
    slowly or failed, and marked `retry` if it failed with a Jacobian kept from
    an earlier step (the step is attempted again, with a fresh one, before it
    is rejected)."""
    zero = jnp.zeros((), jnp.int32)
    return _counted(
        cache,
        stale=slow | failed,
        retry=failed & ~new_jac,
        jac_age=where(new_jac, zero, cache.jac_age) + 1,
        factor_age=cache.factor_age + 1,
        num_jacobians=cache.num_jacobians + new_jac.astype(jnp.int32),
    )

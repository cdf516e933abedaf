"""Small batching primitives that let loops behave well under `vmap`.

Under `vmap`, `lax.while_loop` with a batched predicate runs until every lane is
done and wraps the body in a `select` over the *whole* carry, output buffers
included. The loops of jaxdiffeq avoid that: the predicate is reduced across the
batch (`any_lane`), so it is unbatched, and the body masks its own updates with
`lane_mask`, which is a constant `True` outside `vmap` (and so free after XLA
simplifies the selects away).
"""

import math
from typing import Any

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax import custom_batching
from jax.custom_derivatives import SymbolicZero


def _across_lanes(reduce, doc: str):
    """An identity outside `vmap`; under `vmap`, `reduce` over the batch axis (then
    again at every enclosing `vmap`), returning an unbatched value."""

    @custom_batching.custom_vmap
    def across(x):
        return x

    @across.def_vmap
    def _rule(axis_size, in_batched, x):
        del axis_size
        (batched,) = in_batched
        if batched:
            x = reduce(x, axis=0)
        return across(x), False

    across.__doc__ = doc
    return across


any_lane = _across_lanes(jnp.any, "`pred`, reduced with logical-or across lanes.")
all_lanes = _across_lanes(jnp.all, "`pred`, reduced with logical-and across lanes.")
min_lane = _across_lanes(jnp.min, "`x`, reduced with `min` across lanes.")


@custom_batching.custom_vmap
def lane_mask(pred):
    """`True` outside `vmap`; under `vmap`, the per-lane value of `pred`."""
    return jnp.ones_like(pred)


@lane_mask.def_vmap
def _lane_mask_rule(axis_size, in_batched, pred):
    del axis_size
    (batched,) = in_batched
    if batched:
        return pred, True
    return lane_mask(pred), False


@custom_batching.custom_vmap
def in_vmap(x):
    """`False` outside `vmap`; `True` under a `vmap` that batches `x` (an
    unbatched scalar either way, a constant once `vmap` has been applied, so a
    `lax.cond` on it keeps one branch)."""
    del x
    return jnp.asarray(False)


@in_vmap.def_vmap
def _in_vmap_rule(axis_size, in_batched, x):
    del axis_size
    (batched,) = in_batched
    return (jnp.asarray(True) if batched else in_vmap(x)), False


# Arrays of at most this many elements are summed by `sum_elements` as adds.
_SUM_AS_ADDS_SIZE = 8


def sum_elements(x):
    """`jnp.sum(x)` over every element; for a few elements, written out as adds.

    Under `vmap` a sum over a small state is a reduction of a short minor axis
    for every lane, which XLA's CPU backend compiled into a kernel far slower
    than the elementwise adds (Tsit5 + PID, 10^4 lanes of a 2-state
    oscillator: the error norm took 1.2 ms a step, and the solve ran at 0.94x
    Diffrax's time against 0.40x with the adds).
    """
    x = jnp.asarray(x)
    if x.size > _SUM_AS_ADDS_SIZE or x.size == 0:
        return jnp.sum(x)
    flat = jnp.ravel(x)
    total = lax.index_in_dim(flat, 0, keepdims=False)
    for i in range(1, x.size):
        total = total + lax.index_in_dim(flat, i, keepdims=False)
    return total


# Leaves of at least this many elements are tested by `all_finite` with a plain
# sum (and an exact test only if that sum is not finite); smaller ones by the
# sum of `x * 0`, which fuses with the step's other small kernels.
_FINITE_BY_SUM_SIZE = 2048


@custom_batching.custom_vmap
def all_finite(x):
    """Whether every element of `x` is finite (one boolean per lane under `vmap`).

    `x * 0` is NaN exactly where `x` is not finite, and a sum propagates NaN, so
    `isfinite(sum(x * 0))` is one reduction. On XLA's CPU backend a large
    reduction cannot fuse with the product that feeds it: `x * 0` is then a pass
    of its own that writes a temporary array. For a large `x` the sum of `x`
    itself is taken instead; it is finite whenever every element is, unless it
    overflows, and only then (a `lax.cond`, never taken in a healthy solve) is
    `all(isfinite(x))` computed (Euler on the heat equation, 10^4 points, ours /
    Diffrax in one run: 1.67 -> 1.29).
    """
    if x.size < _FINITE_BY_SUM_SIZE:
        return jnp.isfinite(jnp.sum(x * 0))
    return lax.cond(
        jnp.isfinite(jnp.sum(x)),
        lambda x: jnp.asarray(True),
        lambda x: jnp.all(jnp.isfinite(x)),
        x,
    )


@all_finite.def_vmap
def _all_finite_rule(axis_size, in_batched, x):
    del axis_size
    (batched,) = in_batched
    if not batched:
        return all_finite(x), False
    # With one predicate per lane a `cond` would become a `select` that computes
    # both branches: the one-reduction form is cheaper there.
    return jnp.isfinite(jnp.sum(x * 0, axis=tuple(range(1, x.ndim)))), True


def where(pred, on_true, on_false):
    """`jnp.where(pred, on_true, on_false)` as a single `lax.select`.

    The same broadcasting and dtype promotion as `jnp.where`, for the step loop's
    hot path. `jnp.where` is itself a jitted function: each call is traced and
    lowered as a nested computation; with the ~40 calls one solve makes, this
    saves about a fifth of the tracing and lowering time (Lorenz benchmark, fastest
    of 25: 171 ms with `jnp.where`, 132-145 ms with this).
    """
    on_true, on_false = jnp.asarray(on_true), jnp.asarray(on_false)
    dtype, weak = jax.dtypes.result_type(on_true, on_false, return_weak_type_flag=True)
    if weak:
        # Python numbers only: the result must stay weakly typed (as with
        # `jnp.where`), so that it takes the dtype of the arrays it meets later
        # instead of forcing float64 on them (an error under strict promotion).
        return jnp.where(pred, on_true, on_false)
    shape = jnp.broadcast_shapes(jnp.shape(pred), on_true.shape, on_false.shape)

    def prepare(x):
        x = x if x.dtype == dtype else x.astype(dtype)
        return x if x.shape == shape else jnp.broadcast_to(x, shape)

    pred = jnp.asarray(pred, bool)
    if pred.shape != shape:
        pred = jnp.broadcast_to(pred, shape)
    return lax.select(pred, prepare(on_true), prepare(on_false))


def lanes_cond(need, make, x):
    """`make(x)` where `need`, else `x` (a tree). A `lax.cond` on whether any
    lane needs it, so that under `vmap` nothing is computed when no lane does
    (a plain `lax.cond` on a batched predicate computes both branches), with the
    lanes that do not keeping their own value. Differentiable in both modes."""

    def update(x):
        new = make(x)
        # Inside this branch an unbatched `need` is true: `lane_mask` is then
        # the constant `True`, and XLA drops the select (with `need & ...`
        # it kept one kernel per leaf; a kept Newton matrix has a dozen).
        keep = lane_mask(need)
        return jtu.tree_map(lambda a, b: where(keep, a, b), new, x)

    return lax.cond(any_lane(need), update, lambda x: x, x)


def lane_where(pred, new, old):
    """Per-lane select between two trees whose leaves have a leading lane axis:
    `pred` has shape `(lanes,)`."""

    def leaf(a, b):
        p = pred.reshape(pred.shape + (1,) * (jnp.ndim(a) - 1))
        return where(p, a, b)

    return jtu.tree_map(leaf, new, old)


def lane_rows(tree, index):
    """Row `index[b]` of `x[b]` for every lane `b` (leading axis) of every leaf
    `x` of `tree`."""
    return jtu.tree_map(lambda x: x[jnp.arange(x.shape[0]), index], tree)


def tree_zeros_like(tree):
    return jtu.tree_map(jnp.zeros_like, tree)


def tree_add(a, b):
    """`a + b`, leaf by leaf."""
    return jtu.tree_map(jnp.add, a, b)


def tree_nbytes(tree) -> int:
    """The bytes of the leaves of `tree` (arrays or `jax.ShapeDtypeStruct`s)."""
    return sum(
        math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jtu.tree_leaves(tree)
    )


def live_vmap(tree) -> bool:
    """Whether a backward rule is being traced under a live `vmap` (a probe
    `custom_vmap` fires its batching rule at once), rather than staged into a
    jaxpr that an enclosing `vmap` may batch later.

    This tells `grad(vmap(solve))` from `vmap(grad(solve))`. In the first, JAX
    batches the `custom_vjp` itself: it traces the backward rule under `vmap`
    (live) and sums the cotangents of inputs shared by the batch afterwards, so
    the rule may sum them inside each step instead, with one accumulator. In the
    second, the backward rule is traced unbatched (inside `diffeqsolve`'s `jit`)
    and batched later; each lane then needs its own parameter cotangent (a
    per-example gradient), so nothing may be summed. When in doubt (e.g. under
    `jax.disable_jit()`, where the second case is also traced live) the answer
    is `False`, which is correct in both cases, only slower in the first."""
    if jax.config.jax_disable_jit:  # pyright: ignore
        return False
    fired = []

    @custom_batching.custom_vmap
    def probe(x):
        return x

    @probe.def_vmap
    def _rule(axis_size, in_batched, x):
        del axis_size
        fired.append(True)
        return x, in_batched[0]

    probe(tree)
    return bool(fired)


def widest_dtype(*xs):
    """The dtype that all of `xs` (arrays or dtypes) promote to by JAX's standard
    rules, whatever the configured promotion. For the few places that combine
    values of different leaves on purpose (e.g. the error norm of a state with
    float32 and float64 leaves), where strict promotion would refuse."""
    with jax.numpy_dtype_promotion("standard"):
        return jnp.result_type(*xs)


def real_dtype(dtype):
    """The real dtype of `dtype` (float32 for complex64, ...)."""
    return jnp.finfo(dtype).dtype


def scale(factor, x):
    """`factor * x` in `x`'s dtype.

    For a time-dtype scalar (a step size, the direction of integration) times a
    state leaf: the state keeps its own dtype (float32 with float64 times, say),
    and strict dtype promotion, which forbids float32 * float64, is respected.
    """
    x = jnp.asarray(x)
    return jnp.asarray(factor).astype(x.dtype) * x


# ------------------------------------------------ helpers for custom derivatives


def zero_cotangent(x):
    """The zero cotangent of one array: zeros for inexact dtypes, `float0` zeros
    (JAX's cotangent type for integers and booleans) otherwise."""
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(x.shape, jax.dtypes.float0)


def instantiate_zero(x):
    """A `custom_vjp` rule's cotangent as an array: zeros for a symbolic zero
    (`symbolic_zeros=True`), `x` itself otherwise."""
    if isinstance(x, SymbolicZero):
        aval: Any = x.aval
        return jnp.zeros(aval.shape, aval.dtype)
    return x


def stop_integer_tangents(tree):
    """Integer and boolean outputs of a `custom_vjp` carry no tangent; saying so
    keeps JAX from linearising what is computed from them (some primitives, such
    as those of `equinox.error_if`, have no differentiation rule)."""
    return jtu.tree_map(
        lambda x: x if eqx.is_inexact_array(x) else lax.stop_gradient(x), tree
    )

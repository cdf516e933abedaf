"""Explicit Runge–Kutta methods driven by a Butcher tableau.

One implementation serves every explicit method: the stages are computed in a
`lax.scan` over the rows of the tableau, so the user's vector field is traced once
whatever the number of stages (compile time is a budget). The stage values
`f_i = vf(t0 + c_i h, y_i)` are kept in a buffer with one more axis (the stage axis)
that the scan writes in place.
"""

import contextlib
import contextvars
from functools import partial
from typing import Any, ClassVar, Literal

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from .._custom_types import VF, Args, BoolScalarLike, DenseInfo, RealScalarLike, Y
from .._misc import instantiate_zero
from .._results import RESULTS
from .._term import AbstractTerm, scales_by_control
from .base import AbstractAdaptiveSolver

# Where the stage axis of the stage buffer goes, per state leaf:
# - "last": for small leaves the stage axis is the *last* axis. The stage sums then
#   contract the minor axis, which under `vmap` (batch axis first) needs no
#   transposing copy of the buffer at every stage (measured: the vmapped Lorenz
#   benchmark runs in 0.6x the time).
# - "first": larger leaves have it leading, which suits an unbatched solve.
# - "folded": a larger 1-D leaf of an ODE term also gets `y0` as an extra last row, so
#   that a stage's input `y0 + h sum_j a_ij f_j` is one `dot` of the buffer with
#   `(h a_i, 1)`, a materialised array, instead of an elementwise sum that XLA's
#   CPU backend recomputes for every element the vector field reads (a stencil
#   reads each several times). Measured, 1-D heat equation (100 Tsit5 steps):
#   10^3 to 10^5 points 10-17% faster, Dopri8 at 10^5 11%. (Only for ODE terms,
#   whose `prod` is the scalar control times the vector field.) A tree with a
#   folded leaf also stores its stages late (`_run_stages`).
# Dense output always gets the stage axis first.
_STAGES_LAST_MAX_SIZE = 64


def _stage_combination(k, weights, last: bool):
    """`sum_j weights[j] k_j` for traced weights (one row of the tableau).

    A `dot` in both layouts. Its result is materialised once, which matters for
    large states; measured on the 1-D heat equation (Tsit5, 10^5 states):
    - `jnp.sum(weights[:, None] * k, axis=0)`, the previous form: XLA's CPU
      backend made the reduction over the major axis a kernel 25x slower than
      the state's size warrants (3.3 ms for a (7, 10^5) buffer), so every
      multi-stage method grew superlinearly in the state size;
    - the sum written out stage by stage: fast alone (0.13 ms), but XLA fuses it
      into the vector field, recomputing it for every neighbour a stencil reads
      and copying each stage row out of the buffer first (3.9 ms per step);
    - `dot`: 1.25 ms per step, against Diffrax's 1.0 ms (which uses one too)."""
    weights = weights.astype(k.dtype)
    if last:
        return k @ weights
    return jnp.tensordot(weights, k, axes=1)


# Whether steps traced now may use the folded layout. Reverse-mode passes trace
# their steps with it off (`unfolded`): the folded form's transpose is slower.
# The 1-D heat equation's gradient, 10^4 points, 100 Tsit5 steps, measured
# folded against unfolded: checkpointed 1.25x against 1.15x Diffrax's time,
# `ReversibleAdjoint` 3.6x against 2.5x.
_FOLDING = contextvars.ContextVar("jaxdiffeq_folding", default=True)
_DEFERRING = contextvars.ContextVar("jaxdiffeq_deferring", default=False)


@contextlib.contextmanager
def unfolded(deferred: bool = False):
    """Trace Runge–Kutta steps without the folded stage layout (for the passes
    that reverse mode differentiates); with `deferred`, large leaves still store
    their stages one stage late (`_run_stages`).

    JAX's linearisation of the stage loop otherwise computes each stage's vector
    field inside the single-threaded in-place write of its buffer row, in the
    forward pass, the recomputation and the linearised pass alike. Measured
    (1-D heat equation gradient, 100 Tsit5 steps, checkpointed, ours / Diffrax):
    10^3 points 0.77 -> 0.62, 10^4 1.11 -> 0.79-0.86, 10^5 0.99 -> 0.81. Not for
    `ReversibleAdjoint`'s backward pass, where it measured slower (10^4 points
    2.1 -> 2.6)."""
    folding = _FOLDING.set(False)
    deferring = _DEFERRING.set(deferred)
    try:
        yield
    finally:
        _DEFERRING.reset(deferring)
        _FOLDING.reset(folding)


# Whether steps traced now are only ever differentiated in reverse mode (the
# bodies of the checkpointed loop and `ReversibleAdjoint`'s backward pass), so
# that the stage inputs of large leaves may take `_reverse_stage_input`, a
# `custom_vjp` (which forward mode cannot differentiate).
_REVERSE_ONLY = contextvars.ContextVar("jaxdiffeq_reverse_only", default=False)


@contextlib.contextmanager
def reverse_only():
    """Trace Runge–Kutta steps for reverse mode alone (see `_reverse_stage_input`)."""
    token = _REVERSE_ONLY.set(True)
    try:
        yield
    finally:
        _REVERSE_ONLY.reset(token)


def _reverse_stage_input(terms, y, buf, a_row, control):
    """`y + prod(sum_j a_row[j] buf[j], control)` for one leaf with the stage
    axis first, with a backward rule that writes the buffer's cotangent, the
    outer product of `a_row` with the combination's cotangent, in the buffer's
    layout. JAX's own transpose of the `dot` formed it stage axis last and
    copied it into place, in the kernel that also updates the stage loop's
    carried cotangent: on the 1-D heat equation's gradient (Tsit5, 10^4
    points) that kernel took 64 us of each stage's backward pass. Measured,
    ours / Diffrax: checkpointed 10^4 points 1.21 -> 0.97, 10^5 1.07 -> 0.95
    (10^3 unchanged); `ReversibleAdjoint` 10^5 2.25 -> 2.00. The primal is the
    expression of `_stage_input`, so its values are the same."""

    shape, dtype = buf.shape, buf.dtype
    prod = terms.prod

    @jax.custom_vjp
    def stage_input(y, buf, a_row, control):
        return y + prod(_stage_combination(buf, a_row, False), control)

    def fwd(y, buf, a_row, control):
        # The buffer is a residual only where the control is differentiated
        # (its cotangent needs the combination): the linearising backward pass
        # (`_while_linear`) keeps residuals within a budget.
        args = (y.value, buf.value, a_row.value, control.value)
        kept = buf.value if control.perturbed else None
        return stage_input(*args), (kept, a_row.value, control.value)

    def bwd(res, ct):
        kept, a_row, control = res
        ct = instantiate_zero(ct)
        if kept is None:
            comb = jnp.zeros(shape[1:], dtype)
        else:
            comb = _stage_combination(kept, a_row, False)
        _, pull = jax.vjp(prod, comb, control)
        ct_comb, ct_control = pull(ct)
        if kept is None:
            ct_control = jnp.zeros_like(control)
        weights = a_row.astype(dtype).reshape((-1,) + (1,) * (len(shape) - 1))
        ct_buf = weights * ct_comb.astype(dtype)[None]
        return ct, ct_buf, jnp.zeros_like(a_row), ct_control

    stage_input.defvjp(fwd, bwd, symbolic_zeros=True)
    return stage_input(y, buf, a_row, control)


def _foldable(terms: AbstractTerm, x) -> bool:
    # (Not for leaves of several axes: the 2-D heat equation, 316^2 points, ran at
    # 2x Diffrax's time folded, where XLA copied the whole buffer at every stage,
    # against 0.65x with the stage axis first.)
    return x.size > _STAGES_LAST_MAX_SIZE and x.ndim == 1 and scales_by_control(terms)


def may_fold(terms: AbstractTerm, y) -> bool:
    """Whether a step of `terms` on `y` would use the folded layout for some leaf
    where folding is allowed (so whether `unfolded` changes anything)."""
    return any(_foldable(terms, x) for x in jtu.tree_leaves(y))


def _layout(terms: AbstractTerm, x) -> str:
    if x.size <= _STAGES_LAST_MAX_SIZE:
        return "last"
    if _foldable(terms, x) and _FOLDING.get():
        return "folded"
    return "first"


def _any_folded(layout) -> bool:
    return "folded" in jtu.tree_leaves(layout)


def _deferred(layout) -> bool:
    """Whether the stage loop stores each stage's values one stage late
    (`_run_stages`): with a folded leaf, and in the reverse-mode loop bodies
    that ask for it (`unfolded(deferred=True)`) with any leaf of more than
    `_STAGES_LAST_MAX_SIZE` elements."""
    leaves = jtu.tree_leaves(layout)
    if _DEFERRING.get():
        return any(lay != "last" for lay in leaves)
    return "folded" in leaves


def _stage(buf, i: int, layout: str):
    return lax.index_in_dim(
        buf, i, buf.ndim - 1 if layout == "last" else 0, keepdims=False
    )


def _new_buffer(num_stages: int, f, layout: str, y=None):
    """The stage buffer of one leaf: zeros (finite, so that the zero weights of
    stages not yet computed give zeros), and for the folded layout an extra last
    row holding `y0`."""
    if layout == "last":
        return jnp.zeros((*f.shape, num_stages), f.dtype)
    if layout == "first":
        return jnp.zeros((num_stages, *f.shape), f.dtype)
    y = jnp.asarray(y).astype(f.dtype)
    # Zeros and one row of `y0`: a broadcast of `y0` to every row wrote the
    # buffer in a kernel slower than the fill with zeros (Tsit5 on the 1-D heat
    # equation, 10^5 points: 0.83x -> 0.78x Diffrax's time).
    return jnp.zeros((num_stages + 1, *y.shape), y.dtype).at[num_stages].set(y)


def _store(buf, f_i, i, layout):
    """Write the stage values `f_i` into row `i` of every leaf's buffer."""

    def leaf(b, x, lay):
        x = x.astype(b.dtype)
        if lay == "last":
            return lax.dynamic_update_index_in_dim(b, x[..., None], i, b.ndim - 1)
        return lax.dynamic_update_index_in_dim(b, x, i, 0)

    return jtu.tree_map(leaf, buf, f_i, layout)


def _stage_input(terms, control, y0, buf, a_row, layout):
    """`y0 + prod(sum_j a_ij f_j, control)`, the input of stage `i` (tableau row
    `a_row`)."""
    if _any_folded(layout):
        # `prod` scales each leaf by the scalar control, so each leaf can take its
        # own form.
        h = jnp.asarray(control)
        weights = jnp.concatenate([h * a_row.astype(h.dtype), jnp.ones(1, h.dtype)])

        def leaf(y, b, lay):
            if lay == "folded":
                return _stage_combination(b, weights, False)
            return y + terms.prod(_stage_combination(b, a_row, lay == "last"), control)

        return jtu.tree_map(leaf, y0, buf, layout)
    if _REVERSE_ONLY.get() and scales_by_control(terms):

        def reverse_leaf(y, b, lay):
            if lay == "last":
                comb = _stage_combination(b, a_row, True)
                return y + terms.prod(comb, control)
            return _reverse_stage_input(terms, y, b, a_row, control)

        return jtu.tree_map(reverse_leaf, y0, buf, layout)
    combination = jtu.tree_map(
        lambda b, lay: _stage_combination(b, a_row, lay == "last"), buf, layout
    )
    return jtu.tree_map(lambda y, d: y + d, y0, terms.prod(combination, control))


def _run_stages(terms, control, t0, h, y0, args, f_buf, f0, layout, xs):
    """The stage loop: fills the stage buffer `f_buf` (its row 0 from `f0` when the
    method is FSAL) and returns it with the last stage's values, which the
    deferred form has not written into the buffer.

    With a folded leaf, every leaf stores each stage's values one stage late, at
    the start of the next stage (deferred): the values then cross an iteration of
    the scan, so XLA materialises them in a kernel of their own (run in parallel),
    and the in-place write of the buffer row is a copy, where otherwise the whole
    vector field is computed inside that single-threaded write. Measured, 1-D heat
    equation, 100 Tsit5 steps, folded and then deferred: 10^5 points 1.31x -> 0.81x
    Diffrax's time, 10^3 0.80x -> 0.69x; Dopri8 at 10^5 1.06x -> 0.85x. Otherwise
    stages are stored at once, and the scan carries only the buffer.
    """

    def values(buf, a_row, node):
        y_i = _stage_input(terms, control, y0, buf, a_row, layout)
        return terms.vf(t0 + node * h, y_i, args)

    if not _deferred(layout):

        def stage(buf, xs):
            i, a_row, node = xs
            return _store(buf, values(buf, a_row, node), i, layout), None

        if f0 is not None:
            f_buf = _store(f_buf, f0, 0, layout)
        f_buf, _ = lax.scan(stage, f_buf, xs)
        last = xs[0][-1]
        return f_buf, jtu.tree_map(lambda x, lay: _stage(x, last, lay), f_buf, layout)

    def deferred_stage(carry, xs):
        buf, f_prev = carry
        i, a_row, node = xs
        buf = _store(buf, f_prev, jnp.maximum(i - 1, 0), layout)
        return (buf, values(buf, a_row, node)), None

    if f0 is None:  # a finite placeholder for row 0, overwritten at stage 1
        f0 = jtu.tree_map(
            lambda b, lay: jnp.zeros_like(_stage(b, 0, lay)), f_buf, layout
        )
    (f_buf, f_last), _ = lax.scan(deferred_stage, (f_buf, f0), xs)
    return f_buf, f_last


def _weighted_sum(weights: np.ndarray, stages: list):
    """`sum_i weights[i] * f_i` for the stage values `stages[i]` (PyTrees).

    The weights are constants, so the sum is written out over the non-zero ones: it
    fuses into one elementwise kernel. (A `dot` would also stop XLA's CPU backend
    from compiling a small step loop into a single kernel.)
    """
    used = [(float(w), f) for w, f in zip(weights, stages) if w]
    if not used:
        return jtu.tree_map(jnp.zeros_like, stages[0])

    def leaf(*xs):
        total = sum((w * x for (w, _), x in zip(used[1:], xs[1:])), used[0][0] * xs[0])
        return jnp.asarray(total).astype(xs[0].dtype)

    return jtu.tree_map(leaf, *(f for _, f in used))


def _step_sum(weights: np.ndarray, buf, f_last, layout: str, deferred: bool, stages):
    """`sum_i weights[i] f_i` over one leaf's stages, for the error estimate.

    Small leaves ("last" layout) sum the stage values written out (`stages`),
    which fuses with the rest of a small step. Larger leaves take one `dot` of
    the stage buffer: written out, the sum fed the error norm's reduction, and
    XLA's CPU backend first copied each stage row out of the buffer (Tsit5 + PID
    on the 1-D heat equation, 10^5 points: 1.06x -> 0.83x Diffrax's time). The
    solution `y1` keeps the written-out sum, which fuses into the accept `select`:
    as a `dot` it was slower under `vmap` (8 lanes of 10^4 points, constant
    steps: 0.63x against 0.82x). In the deferred form the buffer's row `s - 1` is
    not written: the last stage comes from `f_last`.
    """
    if layout == "last":
        return _weighted_sum(weights, list(stages))
    s = len(weights)
    full = np.zeros(buf.shape[0])
    count = s - 1 if deferred else s
    full[:count] = weights[:count]
    total = _stage_combination(buf, jnp.asarray(full), False)
    if deferred and weights[s - 1]:
        total = total + float(weights[s - 1]) * f_last
    return total.astype(buf.dtype)


_SCAN_KINDS = (None, "lax", "checkpointed", "bounded")


class AbstractRungeKutta(AbstractAdaptiveSolver):
    """An explicit Runge–Kutta method defined by its class variable `tableau`.

    A new method is a subclass that sets `tableau`, `interpolation_cls` and
    `order`; see `Bosh3` for a complete example.

    **Arguments:**

    - `scan_kind`: Diffrax's choice of loop for the stages, `None` (default),
      `"lax"`, `"checkpointed"` or `"bounded"`, accepted so that Diffrax programs
      run unchanged (e.g. `Tsit5(scan_kind="bounded")` for Hessians). Here the
      stages always run in a `lax.scan`, which supports forward mode, reverse
      mode and any nesting of the two (`jax.hessian` through `DirectAdjoint`) and
      is the cheapest of the kinds to compile, so every value behaves as
      `"bounded"` does in Diffrax.
    """

    # A `ButcherTableau`; a `MultiButcherTableau` for the IMEX methods (`AbstractDIRK`).
    tableau: ClassVar[Any]
    term_structure: ClassVar = AbstractTerm
    # First, as in Diffrax (`Kvaerno5(scan_kind, root_finder, ...)`): a subclass's
    # own fields must then have defaults.
    scan_kind: Literal["lax", "checkpointed", "bounded"] | None = eqx.field(
        default=None, static=True
    )

    def __check_init__(self):
        if self.scan_kind not in _SCAN_KINDS:
            raise ValueError(
                f"`scan_kind` must be one of {_SCAN_KINDS}, got {self.scan_kind!r}."
            )

    def init(
        self,
        terms: AbstractTerm,
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
    ) -> VF | None:
        del t1
        if self.tableau.fsal:
            return terms.vf(t0, y0, args)
        return None

    def func(self, terms: AbstractTerm, t0: RealScalarLike, y0: Y, args: Args) -> VF:
        return terms.vf(t0, y0, args)

    def step(
        self,
        terms: AbstractTerm,
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
        solver_state: VF | None,
        made_jump: BoolScalarLike,
    ) -> tuple[Y, Y, DenseInfo, VF | None, RESULTS]:
        tableau = self.tableau
        if tableau.b_error is None:
            raise ValueError("`AbstractRungeKutta` needs an embedded error estimate.")
        if tableau.implicit:
            raise ValueError(
                "This tableau has implicit stages (`a_diagonal`); subclass "
                "`AbstractDIRK` (or `AbstractSDIRK`/`AbstractESDIRK`) to solve them."
            )
        fsal = tableau.fsal
        s = tableau.num_stages
        control = terms.contr(t0, t1)
        h = jnp.subtract(t1, t0)
        nodes = tableau.nodes()
        a = tableau.a_matrix()

        # The stage buffer holds the vector-field values `f_i` rather than the
        # increments `k_i = prod(f_i, control)`. `prod` is linear in the vector
        # field, so each combination is `prod(sum_j a_ij f_j, control)`. The next
        # step's first stage (FSAL) is the last stage's values.
        f0 = None
        if fsal:
            if made_jump is False:
                f0 = solver_state
            else:
                f0 = lax.cond(
                    made_jump,
                    lambda: terms.vf(t0, y0, args),
                    lambda: solver_state,
                )
            f_struct = f0
            first = 1
        else:
            f_struct = jax.eval_shape(lambda: terms.vf(t0, y0, args))
            first = 0
        layout = jtu.tree_map(lambda x: _layout(terms, x), f_struct)
        if _any_folded(layout):  # then f_struct is shaped as y0
            f_buf = jtu.tree_map(partial(_new_buffer, s), f_struct, layout, y0)
        else:
            f_buf = jtu.tree_map(partial(_new_buffer, s), f_struct, layout)
        time_dtype = jnp.result_type(h)
        # NumPy arrays become constants of the program; `jnp.arange` would be an
        # iota computed by a kernel of its own (compile time).
        xs = (
            np.arange(first, s),
            np.asarray(a[first:]),
            np.asarray(nodes[first:], dtype=time_dtype),
        )
        f_buf, f_last = _run_stages(
            terms, control, t0, h, y0, args, f_buf, f0, layout, xs
        )

        # In the deferred form the buffer's last row is not written (only dense
        # output, where asked for, needs the full buffer): XLA would otherwise copy
        # each row out of the updated buffer for the sums below.
        stages = [
            jtu.tree_map(lambda x, lay, i=i: _stage(x, i, lay), f_buf, layout)
            for i in range(s - 1)
        ] + [f_last]

        y1 = jtu.tree_map(
            lambda y, d: y + d,
            y0,
            terms.prod(_weighted_sum(tableau.b_sol, stages), control),
        )
        deferred = _deferred(layout)
        b_error = tableau.b_error
        assert b_error is not None  # checked at the start of the step
        y_error = terms.prod(
            jtu.tree_map(
                lambda b, f, lay, *xs: _step_sum(b_error, b, f, lay, deferred, xs),
                f_buf,
                f_last,
                layout,
                *stages,
            ),
            control,
        )
        # Dense output takes the increments `k_i`, stage axis first.
        if deferred:  # the last row is still to be written
            f_buf = _store(f_buf, f_last, s - 1, layout)
        f_stages = jtu.tree_map(
            lambda x, lay: jnp.moveaxis(x, -1, 0) if lay == "last" else x[:s],
            f_buf,
            layout,
        )
        k_dense = jax.vmap(lambda f: terms.prod(f, control), axis_size=s)(f_stages)
        dense_info = dict(y0=y0, y1=y1, k=k_dense)
        new_state = f_last if fsal else None
        return y1, y_error, dense_info, new_state, RESULTS.successful

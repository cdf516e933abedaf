"""The backward pass of the checkpointed loop's static schedule for loops whose
differentiated `env` dominates (a neural vector field's weights): linearise
each segment while recomputing it, and pull the segment's cotangents back to
`env` as one block.

The plain backward pass (`_while_backward._backward_static`) evaluates each iteration
of a segment twice (once to rebuild its state from the checkpoint, once more
inside its vector-Jacobian product) and adds one cotangent of the whole `env`
per iteration: for a neural vector field, an outer product the size of the
weights, read and written at every step. Here, per segment:

1. The segment is rebuilt with `jax.vjp` with respect to the carry alone, and
   each iteration's residuals (activations, derivatives of nonlinearities) and
   state are stored for the segment.
2. The carry's cotangent is pulled back through the stored residuals (for a
   dense layer, one product with the transposed weights per step), and each
   iteration's incoming cotangent is stored.
3. The cotangent of `env` is the vector-Jacobian product of the body `vmap`ped
   over blocks of the segment's iterations: the shared weights' cotangent is
   then one matrix product per block (contracting over the iterations) rather
   than one outer product per iteration.

Per step of a dense vector field that is three passes over the weights where
the plain pass makes five or more, for the memory of one segment's residuals,
states and cotangents.

Residuals that are the loop's fixed inputs (weights, output buffers) are
recognised by identity and not stored: `jax.vjp` passes an input through as
the same object when its transpose needs it. Anything else derived from them
(say a transposed weight matrix) would be stored per iteration, so `plan`
accepts a loop only where a segment's storage fits in a quarter of the memory
of the differentiated `env` leaves (`_while_backward.MEMORY_SHARE`; the backward pass
holds their cotangent anyway). Where it does not (a width-100 MLP over 1,000
steps), the plain pass measured as fast: the small matrix products are not
bandwidth-bound.

Where no `env` leaf is differentiated (a gradient with respect to the initial
state alone), only stage 2 remains: no states or cotangents are kept, and the
segment's residuals may take a quarter of the checkpoint store's bytes. A
linear vector field (a discretised diffusion) stores almost nothing, and each
step is evaluated once instead of twice on the way back (1-D heat equation,
Euler, gradient with respect to `y0`, 10^3 to 10^5 points: 0.68-1.15 -> 0.43-0.80
of Diffrax's time).
"""

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu

from ._misc import lane_where, tree_nbytes
from ._rows import LARGE, read_row


class LinearSizes(NamedTuple):
    rows: int  # the longest segment
    block: int  # iterations per block of the `env` pass
    budget: int  # bytes: a share of those of the differentiated `env` leaves
    fixed_bytes: int  # bytes of the output buffers, copied per block row


class Plan:
    """How one iteration's vector-Jacobian product is stored: the structure of
    its `jax.vjp` function, which residuals are fixed inputs (kept as they are)
    and the shapes of the others (stored per iteration)."""

    def __init__(self, treedef, fixed, avals, packer, sizes: LinearSizes, large):
        self.treedef = treedef
        # A large cotangent: the pullback reads the small residuals as values.
        self.large = large
        self.fixed = fixed  # per residual: the fixed input, or None if stored
        self.avals = avals  # the stored residuals
        self.packer = packer
        self.sizes = sizes

    def stored(self, pull) -> list[jax.Array]:
        leaves = jtu.tree_leaves(pull)
        return [r for r, f in zip(leaves, self.fixed) if f is None]

    def rebuild(self, stored: Sequence[jax.Array]):
        it = iter(stored)
        leaves = [next(it) if f is None else f for f in self.fixed]
        return jtu.tree_unflatten(self.treedef, leaves)


def plan(
    lin, fixed: Sequence[Any], packed, packer, sizes: LinearSizes, ct, with_env=True
):
    """The `Plan` of `lin(state) -> (next_state, pull)` at a packed state, or
    `None` where a segment's storage takes more than `sizes.budget` bytes (the
    residuals, and `with_env` the states and cotangents too)."""
    found: dict[str, Any] = {}

    def stored(packed):
        _, pull = lin(packer.unpack(packed))
        leaves, found["treedef"] = jtu.tree_flatten(pull)
        found["fixed"] = [next((x for x in fixed if x is r), None) for r in leaves]
        return [r for r, f in zip(leaves, found["fixed"]) if f is None]

    avals = jax.eval_shape(stored, packed)
    per_row = tree_nbytes(avals)
    need = sizes.rows * per_row
    if with_env:
        per_row += tree_nbytes(packed) + tree_nbytes(ct)
        need = sizes.rows * per_row + sizes.block * sizes.fixed_bytes
    if need > sizes.budget:
        return None
    large = any(jnp.size(x) >= LARGE for x in jtu.tree_leaves(ct))
    return Plan(found["treedef"], found["fixed"], avals, packer, sizes, large)


def _zeros(rows, xs):
    return [jnp.zeros((rows, *jnp.shape(x)), jnp.result_type(x)) for x in xs]


def _write(buffers, row, values):
    return [
        lax.dynamic_update_index_in_dim(b, v, row, 0) for b, v in zip(buffers, values)
    ]


def backward_static_linear(
    p: Plan, starts, ends, n, count, load, fns, ct, env_ct, full=False
):
    """The backward pass of `_while_backward._backward_static`, one segment at a
    time from the last, in the three stages of the module documentation.
    `load(j)` is checkpoint j (packed); `fns = (lin, env_pull)` (see
    `_while_backward._linear_fns`). With `full`, `lin` linearises with respect
    to `env` too (its pullback returns both cotangents), `env_pull` is `None`,
    and each iteration's `env` cotangent is added in stage 2."""
    lin, env_pull = fns
    rows = p.sizes.rows
    avals = [jnp.zeros(a.shape, a.dtype) for a in p.avals]
    keep = 0 if env_pull is None else rows  # no states or cotangents without env
    bufs = (_zeros(rows, avals), _zeros(keep, load(0)), _zeros(keep, ct))

    def segment_body(carry):
        j, ct, env_ct, (res, states, cts) = carry
        start = starts[j]
        length = jnp.minimum(ends[j], n) - start

        def advance(q, c):
            packed, res, states = c
            state, pull = lin(p.packer.unpack(packed))
            res = _write(res, q, p.stored(pull))
            if env_pull is not None:
                states = _write(states, q, packed)
            return p.packer.pack(state), res, states

        _, res, states = lax.fori_loop(0, length, advance, (load(j), res, states))

        def reverse(i, c):
            ct, cts, env_ct = c
            q = length - 1 - i
            if env_pull is not None:
                cts = _write(cts, q, ct)
            pulled = p.rebuild(read_row(res, q, materialise=p.large))(ct)
            if full:
                ct, env_ct_q = pulled
                env_ct = jtu.tree_map(jnp.add, env_ct, env_ct_q)
            else:
                (ct,) = pulled
            return ct, cts, env_ct

        ct, cts, env_ct = lax.fori_loop(0, length, reverse, (ct, cts, env_ct))
        if env_pull is not None:
            env_ct = _pull_env(p, env_pull, states, cts, length, env_ct)
        return j - 1, ct, env_ct, (res, states, cts)

    _, ct, env_ct, _ = lax.while_loop(
        lambda c: c[0] >= 0, segment_body, (count - 1, ct, env_ct, bufs)
    )
    return ct, env_ct


def _pull_env(p: Plan, env_pull, states, cts, length, env_ct):
    """Stage 3: add the `env` cotangent of one segment's `length` stored states
    and cotangents, a block of iterations at a time."""
    block = p.sizes.block

    def env_block(b, env_ct):
        q = b * block + jnp.arange(block, dtype=b.dtype)
        valid = q < length
        q = jnp.minimum(q, length - 1)
        state = jax.vmap(p.packer.unpack)([s[q] for s in states])
        cot = [lane_where(valid, c[q], jnp.zeros_like(c[q])) for c in cts]
        return jtu.tree_map(jnp.add, env_ct, env_pull(state, cot))

    blocks = (length + block - 1) // block
    return lax.fori_loop(0, blocks, env_block, env_ct)

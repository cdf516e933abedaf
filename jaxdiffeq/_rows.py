"""Reading one row of several stacked buffers (checkpoints, stored residuals) in
a backward pass, so that the small rows reach the large kernels as values.

XLA's CPU backend fuses a `dynamic_slice` into each kernel that consumes it. For
a scalar (a step's `t0` and `dt`, an accept flag) consumed by the fused
pullback of a large state, that means the slice's index arithmetic and load,
and every scalar operation after them, are evaluated once per element of the
state: the 1-D heat equation's gradient at 10^5 points spent 0.55 ms a step in
that kernel, against 0.22 ms with plain scalar operands. No fusion option or
`optimization_barrier` prevents it (measured: the barrier leaves the kernel as
it was), but a `lax.cond`'s result is always materialised, so the small rows
are read in one. Its predicate (`row >= 0`) always holds; the conditional costs
microseconds, so it is used only where some consumer is large.
"""

from collections.abc import Sequence

import jax
import jax.lax as lax
import jax.numpy as jnp

# A row (or a consumer) of at least this many elements is large.
LARGE = 4096


def read_row(buffers: Sequence[jax.Array], row, materialise: bool) -> list[jax.Array]:
    """Row `row` of each buffer (leading axis: rows). With `materialise`, the
    rows of fewer than `LARGE` elements are read inside one `lax.cond`."""
    large = [_row_size(b) >= LARGE for b in buffers]
    if not materialise or all(large):
        return _read(buffers, row)
    small = [b for b, g in zip(buffers, large) if not g]
    small_rows = iter(
        lax.cond(row >= 0, lambda bs: _read(bs, row), lambda bs: _read(bs, 0), small)
    )
    large_rows = iter(_read([b for b, g in zip(buffers, large) if g], row))
    return [next(large_rows) if g else next(small_rows) for g in large]


def as_values(tree, key):
    """`tree` (small arrays) passed through a `lax.cond` on `key >= 0`, which
    must hold (a row index, a count of steps): its leaves then reach the
    kernels that consume them as computed values, not as scalar chains fused
    into every element (see the module documentation). XLA removes a
    conditional whose predicate it can prove, so `key` must not be built to be
    nonnegative (`max(n - 1, 0)` was folded away; `n` is not)."""
    key = jnp.min(key) if jnp.ndim(key) else key
    zeros = lambda t: jax.tree.map(jnp.zeros_like, t)  # noqa: E731
    return lax.cond(key >= 0, lambda t: t, zeros, tree)


def _row_size(buffer: jax.Array) -> int:
    return buffer.size // max(buffer.shape[0], 1)


def _read(buffers, row) -> list[jax.Array]:
    return [lax.dynamic_index_in_dim(b, row, 0, keepdims=False) for b in buffers]

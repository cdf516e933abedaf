"""The backward pass of the checkpointed loop (`_while_checkpointed`): the
static schedule's (plain, linearising `_while_linear`, or over all lanes at
once `_while_lanes`) and the dynamic rule's."""

from typing import Any

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax import custom_batching

from ._misc import instantiate_zero, live_vmap, tree_nbytes, zero_cotangent
from ._while_lanes import backward_static_lanes
from ._while_linear import LinearSizes, backward_static_linear, plan
from ._while_spec import (
    Active,
    Spec,
    body_of_leaves,
    call_body,
    is_static,
    masked,
    masked_positions,
    put_at,
    segments,
    static_positions,
    vjp_leaves,
)
from ._while_store import load_checkpoint, load_row, place


def checkpointed_bwd(spec: Spec, residuals, ct_final):
    split = spec.split
    n, book, store, final_buffers, env_arrays, active = residuals
    # Residuals may come back as literals; make them arrays again.
    env_arrays = jtu.tree_map(jnp.asarray, env_arrays)
    ct_leaves = [instantiate_zero(x) for x in vjp_leaves(ct_final)]
    inexact = split.is_inexact
    # Only the active leaves (see `_while_spec.activity`) carry cotangents.
    ct = masked(masked(ct_leaves, inexact), active.carry)
    env_leaves, env_def = jtu.tree_flatten(env_arrays)
    if is_static(spec):
        arrays = (n, book.count, store, final_buffers, env_leaves, ct)
        ct, env_ct = _static_core(spec, env_def, active, arrays)
    else:
        fns = _iteration_fns(spec, env_def, active, final_buffers, env_leaves)
        env_ct = [jnp.zeros_like(x) for x in masked(env_leaves, active.env)]
        ct, env_ct = _backward_dynamic(spec, n, book, store, *fns, ct, env_ct)
    init_ct = put_at(
        [zero_cotangent(x) for x in ct_leaves],
        masked_positions(inexact, active.carry),
        ct,
    )
    env_ct_leaves = put_at(
        [zero_cotangent(x) for x in env_leaves], masked_positions(active.env), env_ct
    )
    return (
        jtu.tree_unflatten(split.treedef, init_ct),
        jtu.tree_unflatten(env_def, env_ct_leaves),
    )


def _iteration_fns(
    spec: Spec, env_def, active: Active, final_buffers, env_leaves, env_axes=None
):
    """`(step, vjp_step)` of the backward pass: `step(state)` runs one iteration
    from the stored part of the carry; `vjp_step(state, ct)` pulls `ct` (on the
    active leaves of the carry) back through one iteration, returning the
    cotangents of the carry and of the active `env` leaves. With `env_axes`,
    on every lane at once (see `_while_spec.body_of_leaves`)."""
    split = spec.split
    env_in = masked(env_leaves, active.env)

    def one(val, env_leaves):
        return split.state(call_body(spec, env_def, val, env_leaves, replay=True))

    if env_axes is not None:
        one = jax.vmap(one, in_axes=(0, list(env_axes)))

    def step(state):
        return one(split.join(state, final_buffers), env_leaves)

    def vjp_step(state, ct):
        leaves = jtu.tree_leaves(split.join(state, final_buffers))
        carry_in = masked(masked(leaves, split.is_inexact), active.carry)
        f = body_of_leaves(spec, leaves, env_leaves, env_def, active, env_axes)
        _, pull = jax.vjp(f, carry_in, env_in)
        return pull(ct)

    return step, vjp_step


def _linear_fns(spec: Spec, env_def, active: Active, final_buffers, env_leaves):
    """`(lin, env_pull, lin_full)` for `_while_linear`: `lin(state) ->
    (next_state, pull)` runs one iteration from the stored part of the carry
    and returns the `jax.vjp` function of its active carry leaves with respect
    to the active carry leaves alone (`env` held fixed: a function of the
    cotangent that returns a 1-tuple); `env_pull(states, cts)` pulls a block of
    cotangents (leading axis: iterations) back through the body at a block of
    states to the active `env` leaves, summed over the block; `lin_full` is
    `lin` with respect to the active `env` leaves too (its pullback returns
    the carry's and `env`'s cotangents)."""
    split = spec.split
    env_in = masked(env_leaves, active.env)

    def carry_of(state):
        leaves = jtu.tree_leaves(split.join(state, final_buffers))
        carry_in = masked(masked(leaves, split.is_inexact), active.carry)
        f = body_of_leaves(spec, leaves, env_leaves, env_def, active, with_state=True)
        return carry_in, f

    def linearise(state, with_env: bool):
        carry_in, f = carry_of(state)

        def g(c, e) -> tuple[Any, Any]:
            out = f(c, e)
            assert isinstance(out, tuple)  # `with_state=True`
            return out

        if with_env:
            _, pull, new_state = jax.vjp(g, carry_in, env_in, has_aux=True)
        else:
            _, pull, new_state = jax.vjp(lambda c: g(c, env_in), carry_in, has_aux=True)
        return new_state, pull

    def lin(state):
        return linearise(state, with_env=False)

    def lin_full(state):
        return linearise(state, with_env=True)

    def env_pull(states, cts):
        def block(env_in):
            def one(state):
                carry_in, f = carry_of(state)
                return f(carry_in, env_in)[0]

            return jax.vmap(one)(states)

        _, pull = jax.vjp(block, env_in)
        return pull(cts)[0]

    return lin, env_pull, lin_full


def _linear_backward(spec: Spec, env_def, active: Active, arrays):
    """The static backward pass that linearises while recomputing
    (`_while_linear`), or `None` where it does not fit its budget."""
    n, count, store, final_buffers, env_leaves, ct = arrays
    env_in = masked(env_leaves, active.env)
    if not LINEARISE:
        return None
    fns = _linear_fns(spec, env_def, active, final_buffers, env_leaves)
    lin, env_pull, lin_full = fns
    if not env_in:
        env_pull = None  # nothing to pull back to `env`: no states or cotangents
    packer = spec.split.packer
    positions = static_positions(spec.checkpoints, spec.max_steps)
    rows = int(np.max(np.diff(np.append(positions, spec.max_steps))))
    sizes = LinearSizes(
        rows=rows,
        block=min(rows, LINEAR_BLOCK),
        budget=tree_nbytes(env_in if env_in else store) // MEMORY_SHARE,
        fixed_bytes=tree_nbytes(final_buffers),
    )
    fixed = [*env_leaves, *final_buffers]
    p = plan(lin, fixed, load_row(store, 0), packer, sizes, ct, with_env=bool(env_in))
    full = False
    if p is None and env_in and FULL_SHARE:
        # Stage 3 does not fit: linearise with respect to `env` too and store
        # those residuals (a segment's may take the bytes of the `env`
        # cotangent over `FULL_SHARE`), so each step is still evaluated once on
        # the way back instead of twice.
        sizes = sizes._replace(budget=tree_nbytes(env_in) // FULL_SHARE)
        p = plan(lin_full, fixed, load_row(store, 0), packer, sizes, ct, False)
        lin, env_pull, full = lin_full, None, True
    if p is None:
        return None
    starts, ends = segments(spec)
    env_ct = [jnp.zeros_like(x) for x in env_in]

    def load(j):
        return load_row(store, j)

    fns = (lin, env_pull)
    return backward_static_linear(
        p, starts, ends, n, count, load, fns, ct, env_ct, full=full
    )


LINEARISE = True
# Where the three-stage pass does not fit, the residuals of a segment linearised
# with respect to `env` too may take the `env` cotangent's bytes over this (0:
# never).
FULL_SHARE = 1
# The linearising pass may store a quarter of the bytes of the differentiated
# env leaves (or, where there are none, of the checkpoint store).
MEMORY_SHARE = 4
LINEAR_BLOCK = 64


def _static_core(spec: Spec, env_def, active: Active, arrays):
    """The backward pass of the static schedule, batch-aware: a `custom_vmap`.

    Under `grad(vmap(...))` (see `live_vmap`), where the lanes share
    differentiated `env` leaves (say the weights of a neural vector field) with
    at least as many elements as one lane's cotangents, its batching rule runs
    one loop over all lanes (`_while_lanes`) that sums the shared cotangents
    inside each vector-Jacobian product. Otherwise (little or nothing shared, or
    `vmap(grad(...))`, where each lane needs its own) it is JAX's own batching
    of the unbatched rule, which builds one cotangent of the shared leaves per
    lane but masks less: measured faster there (Lorenz, gradient with respect
    to 16 initial states, 10^4 saved times: 0.41x Diffrax's time, against 0.60x
    with the one loop, whose masking of every lane's cotangents, the output
    buffers' included, costs a pass more per step)."""
    sum_shared = live_vmap(arrays)

    def unbatched(n, count, store, final_buffers, env_leaves, ct):
        args = (n, count, store, final_buffers, env_leaves, ct)
        out = _linear_backward(spec, env_def, active, args)
        if out is not None:
            return out
        fns = _iteration_fns(spec, env_def, active, final_buffers, env_leaves)
        env_ct = [jnp.zeros_like(x) for x in masked(env_leaves, active.env)]
        return _backward_static(spec, n, count, store, *fns, ct, env_ct)

    core = custom_batching.custom_vmap(unbatched)

    @core.def_vmap
    def _rule(axis_size, in_batched, n, count, store, final_buffers, env_leaves, ct):
        args = (n, count, store, final_buffers, env_leaves, ct)
        if axis_size == 1:
            # One lane: the unbatched pass on it (no masking at all).
            lane = jtu.tree_map(lambda x, b: x[0] if b else x, args, tuple(in_batched))
            out = unbatched(*lane)
            return jtu.tree_map(lambda x: x[None], out), jtu.tree_map(
                lambda _: True, out
            )
        env_batched = list(in_batched[4])
        active_batched = masked(env_batched, active.env)
        shared_size = sum(
            x.size
            for x, b in zip(masked(env_leaves, active.env), active_batched)
            if not b
        )
        # A lane's cotangents: what the one loop masks at every iteration.
        lane_size = sum(
            x.size // axis_size if b else x.size for x, b in zip(ct, in_batched[5])
        )
        if not (sum_shared and shared_size >= max(lane_size, 1)):
            axes = jtu.tree_map(lambda b: 0 if b else None, tuple(in_batched))
            out = jax.vmap(unbatched, in_axes=axes)(*args)
            return out, jtu.tree_map(lambda _: True, out)

        def stack(x, b):
            return x if b else jnp.broadcast_to(x, (axis_size, *jnp.shape(x)))

        lane_args = (n, count, store, final_buffers, ct)
        lane_batched = (*in_batched[:4], in_batched[5])
        n, count, store, final_buffers, ct = jtu.tree_map(
            stack, lane_args, lane_batched
        )
        env_axes = [0 if b else None for b in env_batched]
        fns = _iteration_fns(spec, env_def, active, final_buffers, env_leaves, env_axes)
        env_ct = [jnp.zeros_like(x) for x in masked(env_leaves, active.env)]
        starts, ends = segments(spec)
        packer = spec.split.packer
        ct, env_ct = backward_static_lanes(
            starts, ends, packer, n, count, store, fns, ct, env_ct
        )
        out_batched = ([True] * len(ct), active_batched)
        return (ct, env_ct), out_batched

    return core(*arrays)


def _backward_static(spec: Spec, n, count, store, step, vjp_step, ct, env_ct):
    """The backward pass after `_while_checkpointed._forward_static`, one segment
    at a time from the last: recompute the segment's states from its checkpoint
    into the rows of the later segments (free by now: segment j is at most c - j
    long), then pull the cotangent back through them. No bookkeeping: the rows
    are static."""
    packer = spec.split.packer
    starts, ends = segments(spec)

    def load(store, row):
        return packer.unpack(load_row(store, row))

    def segment_body(carry):
        j, ct, env_ct, store = carry
        start = starts[j]
        last = jnp.minimum(ends[j], n) - 1  # the segment's last iteration

        def advance_body(c):
            q, state, store = c
            state = step(state)
            store = [
                lax.dynamic_update_index_in_dim(s, x, j + q + 1 - start, 0)
                for s, x in zip(store, packer.pack(state))
            ]
            return q + 1, state, store

        _, _, store = lax.while_loop(
            lambda c: c[0] < last, advance_body, (start, load(store, j), store)
        )

        def reverse_body(c):
            k, ct, env_ct = c
            ct, env_ct_k = vjp_step(load(store, j + k - start), ct)
            return k - 1, ct, jtu.tree_map(jnp.add, env_ct, env_ct_k)

        _, ct, env_ct = lax.while_loop(
            lambda c: c[0] >= start, reverse_body, (last, ct, env_ct)
        )
        return j - 1, ct, env_ct, store

    _, ct, env_ct, _ = lax.while_loop(
        lambda c: c[0] >= 0, segment_body, (count - 1, ct, env_ct, store)
    )
    return ct, env_ct


def _backward_dynamic(spec: Spec, n, book, store, step, vjp_step, ct, env_ct):
    """The backward pass after `_while_checkpointed._forward_dynamic`: iterations
    from the last, each reached from the latest checkpoint before it, the
    recomputed states offered to the dynamic rule."""
    packer = spec.split.packer

    def outer_cond(carry):
        return carry[0] >= 0

    def cursor(book, store):
        """The latest stored checkpoint (every one after the iteration being
        reversed was dropped when its iteration was reversed): its sorted index,
        its iteration, and its state."""
        base = jnp.maximum(book.count - 1, 0)
        return (
            base,
            book.position[base],
            packer.unpack(load_checkpoint(book, store, base)),
        )

    def outer_body(carry):
        k, ct, env_ct, book, store, (base, start, state) = carry

        def advance_cond(c):
            return c[0] < k

        def advance_body(c):
            q, state, book, store = c
            packed = packer.pack(state)
            book, store = place(book, store, q, packed, base, q > start)
            return q + 1, step(state), book, store

        _, state, book, store = lax.while_loop(
            advance_cond, advance_body, (start, state, book, store)
        )
        ct, env_ct_k = vjp_step(state, ct)
        env_ct = jtu.tree_map(jnp.add, env_ct, env_ct_k)
        # Drop the checkpoint at k if there is one: it can only be the last (the
        # cursor was loaded from it and nothing was stored after it).
        last = book.position[jnp.maximum(book.count - 1, 0)]
        count = book.count - ((book.count > 0) & (last >= k)).astype(jnp.int32)
        book = eqx.tree_at(lambda b: b.count, book, count)
        # The next cursor is read here, after this iteration's writes to the
        # store: read before them, XLA would copy the whole store to keep the
        # values it reads safe from the in-place writes.
        return k - 1, ct, env_ct, book, store, cursor(book, store)

    init = (n - 1, ct, env_ct, book, store, cursor(book, store))
    _, ct, env_ct, _, _, _ = lax.while_loop(outer_cond, outer_body, init)
    return ct, env_ct

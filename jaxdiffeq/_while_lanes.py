"""The backward pass of the checkpointed loop (static schedule) over a batch of
lanes at once, for the batching rule of `_while_backward.checkpointed_bwd`.

Under `grad(vmap(...))` JAX would batch the backward pass lane by lane: every
vector-Jacobian product would then give each lane its own cotangent of the
parameters shared by the batch (for a neural vector field, a `lanes x weights`
array built and accumulated at every step), summed over the lanes only at the
end. Here one loop runs over all lanes together: each iteration pulls the
cotangents of every lane back through the batched body in one vector-Jacobian
product, which sums the shared parameters' cotangents over the lanes as it
goes (a batch contraction instead of per-example outer products).

The lanes move through the schedule independently (each has its own number of
iterations and checkpoints), as they would under `vmap`. A lane with nothing
to do at an iteration is given a zero cotangent, at a state it has visited, so
that its share of the summed cotangents is exactly zero.
"""

import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu

from ._misc import lane_rows, lane_where, tree_zeros_like


def _write_lane_rows(store, rows, values, mask):
    """Write `values[b]` at row `rows[b]` of lane `b` where `mask[b]`."""
    lanes = jnp.arange(rows.shape[0])
    out = []
    for s, v in zip(store, values):
        old = s[lanes, rows]
        out.append(s.at[lanes, rows].set(jnp.where(mask[:, None], v, old)))
    return out


def backward_static_lanes(starts, ends, packer, n, count, store, fns, ct, env_ct):
    """The backward pass of `_while_backward._backward_static` with a leading
    lane axis on `n`, `count`, the store and the cotangents `ct`.
    `fns = (step, vjp_step)` act on all lanes at once: `step(state)` advances
    every lane one iteration; `vjp_step(state, ct)` pulls `ct` back through
    one iteration of every lane and returns the cotangents of the carry and of
    `env` (summed over the lanes where `env` is shared)."""
    step, vjp_step = fns
    c = store[0].shape[1]

    def load(store, rows):
        rows = jnp.clip(rows, 0, c - 1)
        return jax.vmap(packer.unpack)(lane_rows(store, rows))

    def segment_body(carry):
        j, ct, env_ct, store = carry
        alive = j >= 0
        jc = jnp.maximum(j, 0)
        start = starts[jc]
        # A lane that is done has an empty segment: `last < start`.
        last = jnp.where(alive, jnp.minimum(ends[jc], n) - 1, start - 1)

        def advance_body(carry):
            q, state, store = carry
            move = q < last
            state = lane_where(move, step(state), state)
            rows = jnp.clip(jc + q + 1 - start, 0, c - 1)
            packed = jax.vmap(packer.pack)(state)
            store = _write_lane_rows(store, rows, packed, move)
            return q + move.astype(q.dtype), state, store

        _, _, store = lax.while_loop(
            lambda carry: jnp.any(carry[0] < last),
            advance_body,
            (start, load(store, jc), store),
        )

        def reverse_body(carry):
            k, ct, env_ct = carry
            pull = k >= start
            state = load(store, jc + jnp.maximum(k, start) - start)
            new_ct, env_ct_k = vjp_step(
                state, lane_where(pull, ct, tree_zeros_like(ct))
            )
            ct = lane_where(pull, new_ct, ct)
            env_ct = jtu.tree_map(jnp.add, env_ct, env_ct_k)
            return k - pull.astype(k.dtype), ct, env_ct

        _, ct, env_ct = lax.while_loop(
            lambda carry: jnp.any(carry[0] >= start),
            reverse_body,
            (last, ct, env_ct),
        )
        return j - alive.astype(j.dtype), ct, env_ct, store

    _, ct, env_ct, _ = lax.while_loop(
        lambda carry: jnp.any(carry[0] >= 0),
        segment_body,
        (count - 1, ct, env_ct, store),
    )
    return ct, env_ct

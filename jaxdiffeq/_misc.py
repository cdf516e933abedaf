"""Small batching primitives that let loops behave well under `vmap`.

Under `vmap`, `lax.while_loop` with a batched predicate runs until every lane is
done and wraps the body in a `select` over the *whole* carry, output buffers
included. The loops of jaxdiffeq avoid that: the predicate is reduced across the
batch (`any_lane`), so it is unbatched, and the body masks its own updates with
`lane_mask`, which is a constant `True` outside `vmap` (and so free after XLA
simplifies the selects away).
"""

import jax.numpy as jnp
from jax import custom_batching


@custom_batching.custom_vmap
def any_lane(pred):
    """`pred`, reduced with logical-or across every enclosing `vmap`."""
    return pred


@any_lane.def_vmap
def _any_lane_rule(axis_size, in_batched, pred):
    del axis_size
    (batched,) = in_batched
    if batched:
        pred = jnp.any(pred, axis=0)
    return any_lane(pred), False


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
def min_lane(x):
    """`x`, reduced with `min` across every enclosing `vmap`."""
    return x


@min_lane.def_vmap
def _min_lane_rule(axis_size, in_batched, x):
    del axis_size
    (batched,) = in_batched
    if batched:
        x = jnp.min(x, axis=0)
    return min_lane(x), False


@custom_batching.custom_vmap
def all_lanes(pred):
    """`pred`, reduced with logical-and across every enclosing `vmap`."""
    return pred


@all_lanes.def_vmap
def _all_lanes_rule(axis_size, in_batched, pred):
    del axis_size
    (batched,) = in_batched
    if batched:
        pred = jnp.all(pred, axis=0)
    return all_lanes(pred), False

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

"""The saved outputs in Diffrax's order.

The step loop keeps the outputs of each `SubSaveAt` in rows at static offsets,
`[t0 | ts | steps | t1]`, which the adjoints rely on. Diffrax packs them in the
order they are made instead: `t0`, then for every accepted step the `ts` inside
it followed by the step itself, then `t1` (unless the last step was saved
already), with `inf` padding after the last output; its buffers hold
`max_steps // steps` step rows, and a `t1` row only when `max_steps` is not a
multiple of `steps`. Without `steps` the two orders agree; with it,
`diffeqsolve` reorders the rows once, after the loop (a sort of the row times:
the written ones are chronological in that sense, ties keep `ts` before `steps`
before `t1`, and unwritten rows, at `inf`, go last).
"""

import jax.numpy as jnp
import jax.tree_util as jtu

from ._loop import layout
from ._saveat import SubSaveAt


def in_diffrax_order(sub: SubSaveAt, max_steps: int | None, ts, ys, direction):
    """The rows `(ts, ys)` of one `SubSaveAt` in Diffrax's order and number."""
    if not sub.steps:
        return ts, ys
    assert max_steps is not None
    lay = layout(sub, max_steps)
    size = lay.size - int(bool(sub.t1) and max_steps % sub.steps == 0)
    forward_time = jnp.where(jnp.isfinite(ts), ts * direction, jnp.inf)
    order = jnp.argsort(forward_time, stable=True)[:size]
    return ts[order], jtu.tree_map(lambda y: y[order], ys)

"""`ReversibleAdjoint`'s backward step for `Reversible(solver)`, the coupled
reversible method, and its parameter cotangents pulled back a block of steps
at a time.

Undoing the coupled step `z1 = z0 - B(y1)`, `y1 = c y0 + (1 - c) z0 + F(z0)`
(`F` a step of the wrapped solver forward from `ta`, `B` one backward from
`tb`) evaluates `B` at `y1` and `F` at `z0`: the very points where the step
is linearised. So the backward step linearises while it reconstructs.

Each step's vector-Jacobian product also adds the cotangent of the
differentiated parameters: for a neural vector field, outer products the size
of its weights, read and written at every step. Where the parameters dominate
(`deferral` decides), each step instead pulls back the state's cotangent only
(one product with the transposed weights per evaluation) and records where it
was linearised and with which cotangents; every `BLOCK` steps one
vector-Jacobian product of `F` and `B` `vmap`ped over the recorded steps pulls
them back to the parameters together (for a dense layer, one matrix product
contracting over the steps).
"""

import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu

from .._misc import lane_where, tree_add, tree_nbytes, tree_zeros_like

# Steps whose parameter cotangents are pulled back together.
BLOCK = 32
# Their records may take a quarter of the differentiated parameters' bytes.
MEMORY_SHARE = 4


def _lanes(solver, theta):
    def back_lane(ta, tb, y, td, to):
        terms, args = theta(td, to)
        return solver.increment(terms, tb, ta, y, args)[0]

    def forward_lane(ta, tb, z, td, to):
        terms, args = theta(td, to)
        increment, _, inner, _ = solver.increment(terms, ta, tb, z, args)
        return increment, inner

    return back_lane, forward_lane


def coupled_backward_step(solver, vm, vjp, theta, theta_diff, theta_other, defer=False):
    """`linearised_backward_step` for `Reversible`: `(ta, tb, x1) -> (x0, dense,
    pull)`, `pull(x1_ct, dense_ct) -> (x0_ct, theta_ct)`. `vm` and `vjp` are the
    backward pass's (`reversible_backward._Backward`). With `defer`, `pull`
    returns instead of `theta_ct` what `Deferral` needs to compute it later:
    the points of the linearisation and their cotangents."""
    c = solver.coupling
    back_lane, forward_lane = _lanes(solver, theta)

    def back(ta, tb, y, td):
        return vm(back_lane, 0, 0, 0)(ta, tb, y, td, theta_other)

    def forward(ta, tb, z, td):
        return vm(forward_lane, 0, 0, 0)(ta, tb, z, td, theta_other)

    def linearise(fn, lane_fn, ta, tb, x):
        """The value of `fn` at `x` and its pullback to `x` and `theta_diff`
        (to `x` alone if `defer`)."""
        if defer:
            return jax.vjp(lambda x: fn(ta, tb, x, theta_diff), x)
        out, pull = vjp(lane_fn, (ta, tb, x), (2,))

        def pull_x_theta(ct):
            (x_ct,), theta_ct = pull(ct)
            return x_ct, theta_ct

        return out, pull_x_theta

    def linearised_backward_step(ta, tb, x1):
        y1, z1 = x1
        b, pull_back = linearise(back, back_lane, ta, tb, y1)
        z0 = jtu.tree_map(jnp.add, z1, b)
        (f, inner), pull_forward = linearise(forward, forward_lane, ta, tb, z0)
        y0 = jtu.tree_map(
            lambda y, z, dz: ((y - (1 - c) * z - dz) / c).astype(y.dtype), y1, z0, f
        )
        dense = dict(inner=inner, offset=jtu.tree_map(jnp.subtract, y0, z0))

        def pull(x1_ct, dense_ct):
            y1_ct, z1_ct = x1_ct
            # z1 = z0 - B(y1)
            back_out = pull_back(z1_ct)
            y1_ct = jtu.tree_map(jnp.subtract, y1_ct, back_out[0])
            # y1 = c y0 + (1 - c) z0 + F(z0); the dense output's inner part is F's.
            forward_ct = (y1_ct, dense_ct["inner"])
            forward_out = pull_forward(forward_ct)
            offset_ct = dense_ct["offset"]  # offset = y0 - z0
            y0_ct = jtu.tree_map(lambda a, o: c * a + o, y1_ct, offset_ct)
            z0_ct = jtu.tree_map(
                lambda z, a, f, o: z + (1 - c) * a + f - o,
                z1_ct,
                y1_ct,
                forward_out[0],
                offset_ct,
            )
            if defer:
                points = (ta, tb, y1, z0)
                return (y0_ct, z0_ct), dict(points=points, cts=(z1_ct, forward_ct))
            theta_ct = jtu.tree_map(jnp.subtract, forward_out[1], back_out[1])
            return (y0_ct, z0_ct), theta_ct

        return (y0, z0), dense, pull

    return linearised_backward_step


class Deferral:
    """Records the deferred parameter cotangents of up to `BLOCK` steps (see the
    module documentation) and pulls them back a block at a time."""

    def __init__(self, solver, vm, theta, theta_diff, theta_other, example):
        self.back_lane, self.forward_lane = _lanes(solver, theta)
        self.vm, self.theta_diff, self.theta_other = vm, theta_diff, theta_other
        self.leaves, self.treedef = jtu.tree_flatten(example)

    def init(self):
        zeros = [jnp.zeros((BLOCK, *x.shape), x.dtype) for x in self.leaves]
        return jnp.zeros((), jnp.int32), zeros

    def absorb(self, theta_ct, pending, deferred):
        """Record one step; pull the block back once it is full."""
        count, rows = pending
        rows = [
            lax.dynamic_update_index_in_dim(r, x, count, 0)
            for r, x in zip(rows, jtu.tree_leaves(deferred))
        ]
        count = count + 1

        def flush(theta_ct):
            return tree_add(theta_ct, self.pull(count, rows)), jnp.zeros_like(count)

        theta_ct, count = lax.cond(
            count == BLOCK, flush, lambda t: (t, count), theta_ct
        )
        return theta_ct, (count, rows)

    def finish(self, theta_ct, pending):
        """Pull back what is left after the last step."""
        count, rows = pending
        return lax.cond(
            count > 0,
            lambda t: tree_add(t, self.pull(count, rows)),
            lambda t: t,
            theta_ct,
        )

    def pull(self, count, rows):
        """The parameters' cotangent of the first `count` recorded steps (the
        other rows repeat the first, with zero cotangents)."""
        rows_index = jnp.arange(BLOCK, dtype=count.dtype)
        valid = rows_index < count
        index = jnp.where(valid, rows_index, 0)
        d = jtu.tree_unflatten(self.treedef, [r[index] for r in rows])
        ta, tb, y1, z0 = d["points"]
        cts = lane_where(valid, d["cts"], tree_zeros_like(d["cts"]))
        vm, to = self.vm, self.theta_other
        back = vm(self.back_lane, 0, 0, 0)
        forward = vm(self.forward_lane, 0, 0, 0)

        def rows_of(fn, ta, tb, x):
            return lambda td: jax.vmap(lambda *a: fn(*a, td, to))(ta, tb, x)

        _, pull_back = jax.vjp(rows_of(back, ta, tb, y1), self.theta_diff)
        _, pull_forward = jax.vjp(rows_of(forward, ta, tb, z0), self.theta_diff)
        (back_theta,) = pull_back(cts[0])
        (forward_theta,) = pull_forward(cts[1])
        return jtu.tree_map(jnp.subtract, forward_theta, back_theta)


def deferral(solver, vm, theta, theta_diff, theta_other, lanes):
    """`(backward_step, Deferral)` where a block of deferred steps takes at most
    a quarter of the differentiated parameters' memory, else `None`."""
    step = coupled_backward_step(
        solver, vm, None, theta, theta_diff, theta_other, defer=True
    )
    x = (lanes["y"], lanes["s"])

    def one(t, x):
        _, dense, pull = step(t, t, x)
        return pull(tree_zeros_like(x), tree_zeros_like(dense))[1]

    example = jax.eval_shape(one, lanes["t0"], x)
    if BLOCK * tree_nbytes(example) > tree_nbytes(theta_diff) // MEMORY_SHARE:
        return None
    return step, Deferral(solver, vm, theta, theta_diff, theta_other, example)

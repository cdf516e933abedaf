"""What the checkpointed loop's two passes share: its static specification
(`Spec`), which leaves take part in differentiation (`Active`, found by
`activity`), the body as a function of those leaves (`body_of_leaves`), and the
static checkpoint schedule (`static_positions`, `segments`)."""

import equinox as eqx
import jax
import jax.extend.core as jex
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax.custom_derivatives import CustomVJPPrimal, SymbolicZero


class Spec:
    """The static part of a checkpointed loop: functions, sizes, and the non-array
    part of `env`."""

    def __init__(
        self,
        cond_fun,
        body_fun,
        max_steps,
        checkpoints,
        split,
        primal,
        env_static,
        replay_fun=None,
        forward_fun=None,
    ):
        self.cond_fun = cond_fun
        self.body_fun = body_fun
        self.replay_fun = body_fun if replay_fun is None else replay_fun
        self.forward_fun = self.replay_fun if forward_fun is None else forward_fun
        self.max_steps = max_steps
        self.checkpoints = checkpoints
        self.split = split
        self.primal = primal
        self.env_static = env_static


class Active(eqx.Module):
    """Which leaves take part in differentiation: `carry` over the inexact leaves
    of the loop's value, `env` over the leaves of `env_arrays`."""

    carry: tuple[bool, ...] = eqx.field(static=True)
    env: tuple[bool, ...] = eqx.field(static=True)


def vjp_leaves(tree):
    return jtu.tree_leaves(
        tree, is_leaf=lambda x: isinstance(x, (CustomVJPPrimal, SymbolicZero))
    )


def unwrap_primals(tree):
    """With `symbolic_zeros=True` the forward rule sees `CustomVJPPrimal`s: the
    values, and whether each is perturbed (being differentiated)."""
    is_primal = lambda x: isinstance(x, CustomVJPPrimal)  # noqa: E731
    values = jtu.tree_map(lambda p: p.value, tree, is_leaf=is_primal)
    perturbed = [bool(p.perturbed) for p in vjp_leaves(tree)]
    return values, perturbed


def masked(items, mask):
    return [x for x, m in zip(items, mask) if m]


def masked_positions(*masks):
    """Indices (into the full list) of the entries kept by successive masks."""
    index = list(range(len(masks[0])))
    for mask in masks:
        index = masked(index, mask)
    return index


def put_at(items, positions, values):
    items = list(items)
    for i, x in zip(positions, values):
        items[i] = x
    return items


def _is_inexact(aval) -> bool:
    try:
        return bool(jnp.issubdtype(aval.dtype, jnp.inexact))
    except TypeError:
        return False


def _active_outputs(jaxpr, active_in) -> list[bool]:
    """Which outputs of `jaxpr` depend differentiably on the active inputs: a
    conservative dependence analysis (every inexact output of an equation with
    an active input is active, except through `stop_gradient`; `jit` calls are
    analysed inside)."""
    active = {v for v, a in zip(jaxpr.invars, active_in) if a}
    for eqn in jaxpr.eqns:
        flags = [isinstance(v, jex.Var) and v in active for v in eqn.invars]
        if not any(flags) or eqn.primitive.name == "stop_gradient":
            continue
        inner = (
            eqn.params.get("jaxpr") if eqn.primitive.name in ("jit", "pjit") else None
        )
        if isinstance(inner, jex.ClosedJaxpr):
            outs = _active_outputs(inner.jaxpr, flags)
        else:
            outs = [True] * len(eqn.outvars)
        for v, a in zip(eqn.outvars, outs):
            if a and _is_inexact(v.aval):
                active.add(v)
    return [isinstance(v, jex.Var) and v in active for v in jaxpr.outvars]


def call_body(spec: Spec, env_def, val, env_leaves, replay=False):
    """The loop's body on `val`, with `env` rebuilt from its array leaves (the
    replay form, which is not differentiated, with `replay`)."""
    env = jtu.tree_unflatten(env_def, env_leaves)
    fun = spec.replay_fun if replay else spec.body_fun
    return fun(val, eqx.combine(env, spec.env_static))


def body_of_leaves(
    spec: Spec,
    leaves,
    env_leaves,
    env_def,
    active: Active,
    env_axes=None,
    with_state=False,
):
    """The body as a function of the active inexact leaves of the carry and the
    active leaves of `env` (the others fixed at `leaves` and `env_leaves`),
    returning the active inexact leaves of the new carry.

    With `env_axes` (one axis, 0 or `None`, per leaf of `env`), the leaves of the
    carry have a leading lane axis and the body runs on every lane (`vmap`);
    the `env` leaves with axis `None` are shared by the lanes. With `with_state`
    it returns the stored part of the new carry too (`jax.vjp`'s `has_aux`)."""
    split = spec.split
    carry_positions = masked_positions(split.is_inexact, active.carry)
    env_positions = masked_positions(active.env)

    def body(val, env_leaves):
        out = call_body(spec, env_def, val, env_leaves)
        outs = masked(masked(jtu.tree_leaves(out), split.is_inexact), active.carry)
        return (outs, split.state(out)) if with_state else outs

    if env_axes is not None:
        body = jax.vmap(body, in_axes=(0, list(env_axes)))

    def f(carry_in, env_in):
        val = jtu.tree_unflatten(
            split.treedef, put_at(leaves, carry_positions, carry_in)
        )
        return body(val, put_at(env_leaves, env_positions, env_in))

    return f


def activity(spec: Spec, init_val, init_perturbed, env_arrays, env_perturbed):
    """The leaves that carry cotangents in the backward pass: a leaf of the carry
    is active if it is perturbed on entry or some iteration makes it depend on
    an active leaf or a perturbed `env` leaf (a fixed point). The rest (say the
    times of a solve whose `t0`, `t1` are constants) are left out of every
    vector-Jacobian product."""
    leaves = jtu.tree_leaves(init_val)
    inexact = spec.split.is_inexact
    env_leaves, env_def = jtu.tree_flatten(env_arrays)
    env_active = tuple(
        bool(p) and _is_inexact(jax.typeof(x))
        for x, p in zip(env_leaves, env_perturbed)
    )

    every = Active(carry=(True,) * sum(inexact), env=(True,) * len(env_leaves))
    f = body_of_leaves(spec, leaves, env_leaves, env_def, every)
    jaxpr = jax.make_jaxpr(f)(masked(leaves, inexact), env_leaves).jaxpr
    carry = [bool(p) for p in masked(init_perturbed, inexact)]
    while True:
        outs = _active_outputs(jaxpr, carry + list(env_active))
        new = [a or o for a, o in zip(carry, outs)]
        if new == carry:
            break
        carry = new
    return Active(carry=tuple(carry), env=env_active)


def is_static(spec: Spec) -> bool:
    """Whether the loop runs the static schedule (see the module documentation)."""
    c, bound = spec.checkpoints, spec.max_steps
    return c is not None and bound is not None and c * (c + 1) // 2 >= bound


def static_positions(c: int, max_steps: int) -> np.ndarray:
    """Where the forward pass stores its c checkpoints when the loop is bounded
    by `max_steps <= c (c + 1) / 2`. Segment i (from checkpoint i to the next)
    may be at most c - i long: when the backward pass reverses segment i, the
    c - i - 1 rows of the later segments are free, enough to store every state
    of the segment while recomputing it once. Within that bound the segments
    are as short as possible (length `x`, the least that covers `max_steps`),
    so that more checkpoints mean fewer recomputations: with `c >= max_steps`
    every iteration is a checkpoint and nothing is recomputed."""
    assert c * (c + 1) // 2 >= max_steps

    def lengths(x):
        return [max(1, min(c - i, x)) for i in range(c)]

    x = 1
    while sum(lengths(x)) < max_steps:
        x += 1
    return np.concatenate([[0], np.cumsum(lengths(x))[:-1]]).astype(np.int32)


def segments(spec: Spec):
    """The first iteration of each static segment, and of the next one (for the
    last segment, a position never reached)."""
    positions = static_positions(spec.checkpoints, spec.max_steps)
    ends = np.concatenate([positions[1:], [np.iinfo(np.int32).max]])
    return jnp.asarray(positions, jnp.int32), jnp.asarray(ends, jnp.int32)

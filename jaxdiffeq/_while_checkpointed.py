"""The checkpointed loop (`while_loop(kind="checkpointed")`, see `_while`): a
`jax.custom_vjp` whose forward pass stores checkpoints (at static positions, or
by the dynamic rule) and whose backward pass is `_while_backward`."""

import functools
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu

from ._misc import stop_integer_tangents
from ._while_backward import checkpointed_bwd
from ._while_plain import lax_loop
from ._while_spec import (
    Spec,
    activity,
    is_static,
    segments,
    unwrap_primals,
)
from ._while_store import Book, empty_book, place, split_carry


def check_checkpoints(checkpoints) -> None:
    """`checkpoints` must be a positive int or `None`."""
    if checkpoints is not None and (
        not isinstance(checkpoints, int)
        or isinstance(checkpoints, bool)
        or checkpoints < 1
    ):
        raise ValueError(
            f"`checkpoints` must be a positive int or None, got {checkpoints!r}."
        )


def default_checkpoints(max_steps: int) -> int:
    """The fewest checkpoints c with c(c+1)/2 >= max_steps (about sqrt(2 max_steps)):
    enough that the backward pass recomputes every iteration at most once."""
    c = max(1, math.ceil((math.sqrt(8 * max_steps + 1) - 1) / 2))
    return max(c, 2)


def checkpointed_loop(
    cond_fun,
    body_fun,
    init_val,
    env,
    *,
    max_steps: int | None,
    checkpoints: int | None,
    buffers=None,
    primal: Callable[[Any, Any], Any] | None = None,
    replay: Callable[[Any, Any], Any] | None = None,
    forward: Callable[[Any, Any], Any] | None = None,
):
    """The checkpointed loop on explicit functions `cond_fun(val, env)` and
    `body_fun(val, env)`: everything they close over that may be differentiated
    is in `env`, whose inexact array leaves receive cotangents.

    `primal(init_val, env)`, if given, computes the same final value by any
    means; it runs when the loop is not differentiated (the step loop uses a
    faster, nested form there). `replay(val, env)`, if given, computes the
    same iteration as `body_fun` with the same values, in a form that need not
    be differentiable: the forward pass and the recomputations of the backward
    pass run it, and only the vector-Jacobian products run `body_fun`.
    `forward(val, env)`, if given, is what the forward pass runs instead: the
    same iteration, which need not read what the loop's buffers hold from
    before (the step loop's tape, which only a recomputation reads)."""
    if checkpoints is None and max_steps is not None:
        checkpoints = default_checkpoints(max_steps)
    init_val = jtu.tree_map(jnp.asarray, init_val)
    split = split_carry(init_val, buffers)
    env_arrays, env_static = eqx.partition(env, eqx.is_array)
    spec = Spec(
        cond_fun,
        body_fun,
        max_steps,
        checkpoints,
        split,
        primal,
        env_static,
        replay,
        forward,
    )
    out = _checkpointed(spec, init_val, env_arrays)
    return stop_integer_tangents(out)


def bounded_cond(spec: Spec, i, val, env):
    pred = spec.cond_fun(val, env)
    if spec.max_steps is not None:
        pred = pred & (i < spec.max_steps)
    return pred


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _checkpointed(spec: Spec, init_val, env_arrays):
    env = eqx.combine(env_arrays, spec.env_static)
    if spec.primal is not None:
        return spec.primal(init_val, env)
    return lax_loop(
        lambda val: spec.cond_fun(val, env),
        lambda val: spec.body_fun(val, env),
        init_val,
        spec.max_steps,
    )


def _checkpointed_fwd(spec: Spec, init_val, env_arrays):
    init_val, init_perturbed = unwrap_primals(init_val)
    env_arrays, env_perturbed = unwrap_primals(env_arrays)
    active = activity(spec, init_val, init_perturbed, env_arrays, env_perturbed)
    env = eqx.combine(env_arrays, spec.env_static)
    split = spec.split
    c = spec.checkpoints
    if c is None:
        raise ValueError(
            "Reverse-mode differentiation of a loop without a bound needs a number "
            "of checkpoints: pass an int `max_steps` to `diffeqsolve`, or "
            "`adjoint=RecursiveCheckpointAdjoint(checkpoints=k)`."
        )
    store = [jnp.zeros((c, size), dtype) for dtype, size in split.packer.sizes()]
    # The static schedule when it covers the bound with each step recomputed at
    # most once; otherwise the dynamic rule, which degrades gracefully.
    if is_static(spec):
        n, final, book, store = _forward_static(spec, init_val, env, store)
    else:
        n, final, book, store = _forward_dynamic(spec, init_val, env, store)
    residuals = (n, book, store, split.buffers(final), env_arrays, active)
    return final, residuals


def _forward_static(spec: Spec, init_val, env, store):
    """The forward pass of a bounded loop: checkpoints at static positions, and
    between them an inner loop whose carry is only the loop's own (small loops
    stay fast on the CPU; the store is touched c times, not every iteration)."""
    c = spec.checkpoints
    positions, next_positions = segments(spec)
    # Row 0 holds `init_val` even in a lane of a `vmap` that never iterates:
    # the batched backward pass (`_while_lanes`) may evaluate its body there.
    store = [s.at[0].set(x) for s, x in zip(store, spec.split.stored(init_val))]

    def outer_cond(carry):
        i, val, j, _ = carry
        return (j < c) & bounded_cond(spec, i, val, env)

    def outer_body(carry):
        i, val, j, store = carry
        store = [
            lax.dynamic_update_index_in_dim(s, x, j, 0)
            for s, x in zip(store, spec.split.stored(val))
        ]
        until = next_positions[j]

        def cond(inner):
            i, val = inner
            return (i < until) & bounded_cond(spec, i, val, env)

        def body(inner):
            i, val = inner
            return i + 1, spec.forward_fun(val, env)

        i, val = lax.while_loop(cond, body, (i, val))
        return i, val, j + 1, store

    zero = jnp.asarray(0, jnp.int32)
    n, final, count, store = lax.while_loop(
        outer_cond, outer_body, (zero, init_val, zero, store)
    )
    book = Book(
        position=positions,
        level=jnp.zeros(c, jnp.int32),
        slot=jnp.arange(c, dtype=jnp.int32),
        count=count,
    )
    return n, final, book, store


def _forward_dynamic(spec: Spec, init_val, env, store):
    """The forward pass of an unbounded loop: every state is offered to the
    dynamic rule."""
    c = spec.checkpoints

    def cond(carry):
        i, val, _, _ = carry
        return bounded_cond(spec, i, val, env)

    def body(carry):
        i, val, book, store = carry
        book, store = place(
            book, store, i, spec.split.stored(val), 0, jnp.asarray(True)
        )
        return i + 1, spec.forward_fun(val, env), book, store

    carry = (jnp.asarray(0, jnp.int32), init_val, empty_book(c), store)
    return lax.while_loop(cond, body, carry)


_checkpointed.defvjp(_checkpointed_fwd, checkpointed_bwd, symbolic_zeros=True)

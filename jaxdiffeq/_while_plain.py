"""The two loops of `while_loop` that JAX differentiates itself: `"lax"` (a
`lax.while_loop`, forward mode only) and `"bounded"` (nested `lax.scan`s under
`jax.checkpoint`, forward and reverse mode and higher derivatives)."""

import math

import jax
import jax.lax as lax
import jax.numpy as jnp


def lax_loop(cond_fun, body_fun, init_val, max_steps):
    if max_steps is None:
        return lax.while_loop(cond_fun, body_fun, init_val)

    def cond(carry):
        step, val = carry
        return (step < max_steps) & cond_fun(val)

    def body(carry):
        step, val = carry
        return step + 1, body_fun(val)

    _, out = lax.while_loop(cond, body, (jnp.asarray(0, dtype=jnp.int32), init_val))
    return out


# ----------------------------------------------------------------------- bounded

_BOUNDED_BASE = 16


def bounded_loop(cond_fun, body_fun, init_val, max_steps: int):
    """`base**levels >= max_steps` guarded iterations as nested scans; each level's
    scan body is rematerialised (`jax.checkpoint`), so the backward pass stores
    `base` carries per level. Chunks after the loop has finished are skipped with
    a `lax.cond` (a select under `vmap`)."""
    if max_steps == 0:
        return init_val
    levels = max(1, math.ceil(math.log(max_steps, _BOUNDED_BASE) - 1e-9))

    def alive(carry):
        i, val = carry
        return (i < max_steps) & cond_fun(val)

    def one(carry):
        i, val = carry
        pred = alive(carry)
        val = lax.cond(pred, body_fun, lambda v: v, val)
        return i + pred.astype(i.dtype), val

    def run(level, carry):
        if level == 0:
            return one(carry)

        @jax.checkpoint
        def chunk(carry, _):
            return run(level - 1, carry), None

        def go(carry):
            return lax.scan(chunk, carry, None, length=_BOUNDED_BASE)[0]

        return lax.cond(alive(carry), go, lambda c: c, carry)

    # The top level runs only as many chunks as `max_steps` needs.
    chunk_size = _BOUNDED_BASE ** (levels - 1)
    top = math.ceil(max_steps / chunk_size)

    @jax.checkpoint
    def top_chunk(carry, _):
        return run(levels - 1, carry), None

    carry = (jnp.asarray(0, jnp.int32), init_val)
    (_, out), _ = lax.scan(top_chunk, carry, None, length=top)
    return out


# ------------------------------------------------------------------ checkpointed

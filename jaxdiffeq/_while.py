"""`while_loop`: the loop primitives that the step loop runs on.

Three kinds, one semantics (`val = init_val; while cond_fun(val) and iterations <
max_steps: val = body_fun(val)`):

- `"lax"`: `lax.while_loop`. Forward mode only.
- `"bounded"`: nested `lax.scan`s under `jax.checkpoint`. Reverse and forward mode
  and higher derivatives, at the cost of running `max_steps` guarded iterations
  (a finished loop skips whole chunks, but under `vmap` the guards become selects).
- `"checkpointed"`: a `lax.while_loop` that stores a bounded number of states on
  the way forward and recomputes the rest on the way back (a `jax.custom_vjp`).
  Reverse mode only.

The checkpointing schedule is online: the number of iterations is not known
while the loop runs.

- When the bound `max_steps` is at most c(c+1)/2 (c checkpoints; the default c
  is the least such), the forward pass stores checkpoints at static positions:
  segment i (from checkpoint i to the next) is at most c - i iterations long,
  and otherwise as short as the bound allows (so c >= `max_steps` stores every
  iteration). Between checkpoints the loop runs as a plain inner loop whose
  carry is the loop's own, so the checkpoint store is touched c times rather
  than every iteration. The backward pass takes the segments from the last:
  it recomputes segment i once from its checkpoint, storing every state in the
  rows of the later segments (free by then: there are c - i - 1 of them), and
  pulls the cotangent back through the stored states. Each iteration is
  recomputed at most once, however many of the `max_steps` iterations run.
  Under `vmap` this backward pass is batch-aware (`_while_lanes`): one loop over
  all lanes, summing the cotangents of `env` leaves that the lanes share inside
  each vector-Jacobian product.
- Otherwise (`max_steps=None`, or fewer checkpoints than that), in both passes:
  the dynamic checkpointing of Wang,
  Moin and Iaccarino (SIAM J. Sci. Comput. 31(4), 2009). Every state is offered
  as it is reached; when all rows are full the rule frees a "dispensable" one (a
  checkpoint followed later by one of a higher level), or else replaces the
  latest checkpoint and raises the new one's level. Measured here: every
  iteration is recomputed at most once up to about c(c+1)/2 iterations; past
  that the recomputations grow slowly.

The checkpointed kind is `_while_checkpointed` (forward pass) and
`_while_backward`; both passes share `_while_spec`; `_while_plain` holds the
other two kinds.
"""

from collections.abc import Callable
from typing import Any, Literal

import jax

from ._while_checkpointed import check_checkpoints, checkpointed_loop
from ._while_plain import bounded_loop, lax_loop


def _check_max_steps(max_steps):
    if max_steps is None:
        return
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 0:
        raise ValueError(f"`max_steps` must be a non-negative int, got {max_steps!r}.")


def while_loop(
    cond_fun: Callable[[Any], Any],
    body_fun: Callable[[Any], Any],
    init_val: Any,
    *,
    max_steps: int | None = None,
    kind: Literal["lax", "bounded", "checkpointed"] = "lax",
    checkpoints: int | None = None,
    buffers: Callable[[Any], Any] | None = None,
) -> Any:
    """A while loop with a bound on its number of iterations, differentiable in
    reverse mode.

    Semantics: `val = init_val; while cond_fun(val) and iterations < max_steps:
    val = body_fun(val)`; return `val`.

    **Arguments:**

    - `cond_fun`, `body_fun`, `init_val`: as in `jax.lax.while_loop`. The
      functions may close over arrays (including ones being differentiated).
    - `max_steps`: the most iterations to run (a Python int), or `None` for no
      bound (only for `"lax"`, and for `"checkpointed"` with `checkpoints` given).
    - `kind`:
        - `"lax"`: a plain `lax.while_loop`. Supports `jax.jvp`; not reverse mode.
        - `"bounded"`: nested scans under `jax.checkpoint` (`max_steps` required).
          Supports forward and reverse mode and higher derivatives. Memory about
          `B log_B(max_steps)` carries (B = 16); every one of the `max_steps`
          iterations is guarded, so under `vmap` it costs `max_steps` bodies.
        - `"checkpointed"`: online checkpointing (see the module documentation).
          Reverse mode only (`jax.grad`, `jax.vjp`); `jax.jvp` raises. Memory:
          `checkpoints` copies of the non-buffer part of the carry; time: one
          forward pass, at most one recomputation of each iteration (up to about
          `checkpoints**2 / 2` iterations) and one vector-Jacobian product per
          iteration. A body is linearised only when its VJP is applied, and
          only with respect to the leaves of the carry that depend on what is
          being differentiated (found by tracing the body once more).
    - `checkpoints`: the number of stored states for `"checkpointed"`. Default:
      the smallest `c` with `c (c + 1) / 2 >= max_steps`, about
      `sqrt(2 max_steps)`, so that each iteration is recomputed at most once.
    - `buffers`: a function of the carry returning the arrays that the body only
      writes into (e.g. `lambda val: val[1]`), each element at most once (say
      with `buf.at[i].set(x)` at a computed index). For `"checkpointed"` they are
      not stored in checkpoints (a solve's outputs are stored once, not once
      per checkpoint), and the backward pass hands the pulled-back cotangent of
      the whole buffer to each iteration without copying it. The body must not
      read a buffer except to decide the value it writes there.

    ```python
    import jaxdiffeq as jd
    n = jd.while_loop(lambda i: i < 10, lambda i: i + 1, 0, max_steps=4)  # 4
    ```

    Reverse mode through a loop whose length depends on the data:

    ```python
    import jax
    import jaxdiffeq as jd

    def sqrt_newton(a):  # x <- (x + a / x) / 2 until converged
        def cond(x):
            return jnp.abs(x * x - a) > 1e-12
        return jd.while_loop(cond, lambda x: 0.5 * (x + a / x), a,
                             max_steps=100, kind="checkpointed")

    import jax.numpy as jnp
    jax.grad(sqrt_newton)(4.0)  # 0.25 (= 1 / (2 sqrt(4)))
    ```
    """
    if kind not in ("lax", "bounded", "checkpointed"):
        raise ValueError(
            f"`while_loop(kind={kind!r})`: `kind` must be 'lax', 'bounded' or "
            "'checkpointed'."
        )
    _check_max_steps(max_steps)
    check_checkpoints(checkpoints)
    if kind == "lax":
        return lax_loop(cond_fun, body_fun, init_val, max_steps)
    if kind == "bounded":
        if max_steps is None:
            raise ValueError(
                "`while_loop(kind='bounded')` needs `max_steps` (an int): the loop "
                "is a fixed number of guarded iterations."
            )
        return bounded_loop(cond_fun, body_fun, init_val, max_steps)
    if max_steps is None and checkpoints is None:
        raise ValueError(
            "`while_loop(kind='checkpointed')` with `max_steps=None` needs "
            "`checkpoints` (an int): the default number of checkpoints is derived "
            "from `max_steps`."
        )
    body_conv, body_consts = jax.closure_convert(body_fun, init_val)
    cond_conv, cond_consts = jax.closure_convert(cond_fun, init_val)
    env = (body_consts, cond_consts)
    return checkpointed_loop(
        lambda val, env: cond_conv(val, *env[1]),
        lambda val, env: body_conv(val, *env[0]),
        init_val,
        env,
        max_steps=max_steps,
        checkpoints=checkpoints,
        buffers=buffers,
    )

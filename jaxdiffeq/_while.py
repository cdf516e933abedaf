"""`while_loop`: the loop primitive that the step loop runs on."""

from collections.abc import Callable
from typing import Any, Literal

import jax.lax as lax
import jax.numpy as jnp


def while_loop(
    cond_fun: Callable[[Any], Any],
    body_fun: Callable[[Any], Any],
    init_val: Any,
    *,
    max_steps: int | None = None,
    kind: Literal["lax"] = "lax",
) -> Any:
    """A while loop with an optional bound on its number of iterations.

    Semantics: `val = init_val; while cond_fun(val) and iterations < max_steps:
    val = body_fun(val)`; return `val`. With `max_steps=None` the loop is unbounded.

    **Arguments:**

    - `cond_fun`, `body_fun`, `init_val`: as in `jax.lax.while_loop`.
    - `max_steps`: the most iterations to run (a Python int), or `None`.
    - `kind`: `"lax"`, a plain `lax.while_loop`: forward-mode differentiable
      (`jax.jvp`), batchable, not reverse-mode differentiable. (The reverse-mode
      kinds `"bounded"` and `"checkpointed"` are planned.)

    Under `jax.vmap` a batched predicate makes `lax.while_loop` run until every
    lane is done and select the whole carry on each iteration. Callers that carry
    large buffers can avoid that by reducing the predicate across the batch and
    masking their own updates, as the step loop of `diffeqsolve` does.

    ```python
    import jaxdiffeq as jd
    n = jd.while_loop(lambda i: i < 10, lambda i: i + 1, 0, max_steps=4)  # 4
    ```
    """
    if kind != "lax":
        raise ValueError(
            f"`while_loop(kind={kind!r})` is not available; the supported kind is "
            "'lax'."
        )
    if max_steps is None:
        return lax.while_loop(cond_fun, body_fun, init_val)
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 0:
        raise ValueError(f"`max_steps` must be a non-negative int, got {max_steps!r}.")

    def cond(carry):
        step, val = carry
        return (step < max_steps) & cond_fun(val)

    def body(carry):
        step, val = carry
        return step + 1, body_fun(val)

    _, out = lax.while_loop(cond, body, (jnp.asarray(0, dtype=jnp.int32), init_val))
    return out

"""`ForwardMode`: forward-mode differentiation through a plain loop."""

from collections.abc import Callable
from typing import Any

from .._loop import State
from .base import AbstractAdjoint


class ForwardMode(AbstractAdjoint):
    """Differentiate in forward mode (`jax.jvp`, `jax.jacfwd`) through the
    solver's operations.

    The step loop is a plain `lax.while_loop`, which JAX differentiates in
    forward mode at the cost of about one more solve per tangent direction, with
    no extra memory. Reverse mode (`jax.grad`, `jax.vjp`) raises; use
    `RecursiveCheckpointAdjoint`. Prefer it when there are fewer inputs to
    differentiate than outputs (e.g. a Jacobian with respect to a few
    parameters).

    ```python
    import jax
    import jax.numpy as jnp
    import jaxdiffeq as jd

    def y1(k):
        term = jd.ODETerm(lambda t, y, k: -k * y)
        sol = jd.diffeqsolve(term, jd.Tsit5(), 0.0, 1.0, 0.1, jnp.array(1.0), k,
                             adjoint=jd.ForwardMode())
        return sol.ys[0]

    jax.jacfwd(y1)(0.5)  # about -exp(-0.5)
    ```
    """

    def loop(self, run: Callable[..., State], **kwargs: Any) -> State:
        return run(kind="lax", checkpoints=None, **kwargs)

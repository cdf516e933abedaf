"""`DirectAdjoint`: a bounded loop that every JAX transformation can
differentiate."""

from collections.abc import Callable
from typing import Any

from .._controller.base import AbstractStepSizeController
from .._loop import State
from .._saveat import SaveAt
from .._solver.base import AbstractSolver
from .base import AbstractAdjoint


class DirectAdjoint(AbstractAdjoint):
    """Differentiate through the solver's operations with a bounded loop: forward
    mode, reverse mode and higher derivatives (Hessians, `jax.jacfwd` of
    `jax.grad`).

    The step loop runs as `jaxdiffeq.while_loop(kind="bounded")`: nested
    `lax.scan`s of 16 iterations under `jax.checkpoint`, as many guarded
    iterations as the loop's bound allows (`max_steps`, plus one per saved
    output). **Cost:** the loop's bound, not the number of steps taken, decides
    the work under `vmap` (every guarded iteration runs) and the memory of
    reverse mode (about `16 log16(max_steps)` copies of the loop's carry,
    output buffers included). Keep `max_steps` tight.

    Use it for higher derivatives, or for forward and reverse mode from one
    setting; for gradients alone `RecursiveCheckpointAdjoint` is cheaper, and
    for `jax.jvp`/`jax.jacfwd` alone `ForwardMode` is.

    ```python
    import jax
    import jax.numpy as jnp
    import jaxdiffeq as jd

    def y1(k):
        term = jd.ODETerm(lambda t, y, k: -k * y)
        sol = jd.diffeqsolve(term, jd.Tsit5(), 0.0, 1.0, 0.1, jnp.array(1.0), k,
                             adjoint=jd.DirectAdjoint(), max_steps=16)
        return sol.ys[0]

    jax.hessian(y1)(0.5)  # about exp(-0.5)
    ```
    """

    def check(
        self,
        *,
        saveat: SaveAt,
        max_steps: int | None,
        event: None,
        solver: AbstractSolver,
        stepsize_controller: AbstractStepSizeController | None = None,
    ) -> None:
        del saveat, event, solver, stepsize_controller
        if max_steps is None:
            raise ValueError(
                "`DirectAdjoint` needs an int `max_steps`: it runs a loop of that "
                "many guarded iterations."
            )

    def loop(self, run: Callable[..., State], **kwargs: Any) -> State:
        return run(kind="bounded", checkpoints=None, **kwargs)

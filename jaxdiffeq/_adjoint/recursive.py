"""`RecursiveCheckpointAdjoint`: reverse mode through the step loop with online
checkpointing."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
from jaxtyping import PyTree

from .._custom_types import Args, RealScalarLike, Y
from .._loop import State
from .._term import AbstractTerm
from .._while_checkpointed import check_checkpoints
from .base import AbstractAdjoint, closure_convert_terms


class RecursiveCheckpointAdjoint(AbstractAdjoint):
    """Differentiate through the operations of the solver (discretise-then-
    optimise), storing a bounded number of checkpoints. The default adjoint.

    Reverse mode (`jax.grad`, `jax.vjp`) runs the step loop as
    `jaxdiffeq.while_loop(kind="checkpointed")`: the forward pass stores the
    state at most `checkpoints` times (online checkpointing; see
    `jaxdiffeq.while_loop`) and the backward pass recomputes the steps in
    between, placing checkpoints by the dynamic rule of Wang, Moin and
    Iaccarino (2009).
    Gradients are exact for the computed solution (the same numbers as
    differentiating the unrolled loop), accepted steps form a frozen mesh
    (the step-size controller carries no gradient), and rejected steps
    contribute nothing.

    **Cost.** Memory: `checkpoints` copies of the solver's state, plus the saved
    outputs once. Time: one forward solve, at most one recomputation of each
    step while the number of loop iterations `n` is at most about
    `checkpoints (checkpoints + 1) / 2`, and one vector-Jacobian product per
    step. Past that, recomputation grows slowly with `n`. Without
    differentiation it costs nothing extra: the solve runs as a plain loop.

    **Under `vmap`.** With the default `checkpoints`, `grad(vmap(...))` runs one
    backward loop over the whole batch and sums the cotangents of parameters
    shared by the batch inside each step (one accumulator, not one per example);
    `vmap(grad(...))` gives each example its own gradient.

    **Arguments:**

    - `checkpoints`: the number of stored states. Default (`None`): the
      smallest `c` with `c (c + 1) / 2` at least the loop's bound (derived from
      `max_steps` and the number of saved outputs), about `sqrt(2 max_steps)`.
      Required for reverse mode when `max_steps=None` (a `ValueError` says so;
      a solve that is not differentiated runs without it).

    Forward mode (`jax.jvp`, `jax.jacfwd`) is not supported: use `ForwardMode`
    (or `DirectAdjoint`, which supports both).

    ```python
    import jax
    import jax.numpy as jnp
    import jaxdiffeq as jd

    def loss(k):
        term = jd.ODETerm(lambda t, y, k: -k * y)
        sol = jd.diffeqsolve(term, jd.Tsit5(), 0.0, 1.0, 0.1, jnp.array(1.0), k,
                             adjoint=jd.RecursiveCheckpointAdjoint())
        return sol.ys[0]

    jax.grad(loss)(0.5)  # about -exp(-0.5)
    ```

    Reference: Q. Wang, P. Moin, G. Iaccarino, "Minimal repetition dynamic
    checkpointing algorithm for unsteady adjoint calculation", SIAM J. Sci.
    Comput. 31(4), 2009.
    """

    checkpoints: int | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        check_checkpoints(self.checkpoints)

    def prepare_terms(
        self, terms: PyTree[AbstractTerm], t0: RealScalarLike, y0: Y, args: Args
    ) -> PyTree[AbstractTerm]:
        # The checkpointed loop is a `custom_vjp`: what it closes over must be
        # explicit.
        return closure_convert_terms(terms, t0, y0, args)

    def loop(self, run: Callable[..., State], **kwargs: Any) -> State:
        return run(kind="checkpointed", checkpoints=self.checkpoints, **kwargs)

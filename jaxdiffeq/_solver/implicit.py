"""What the implicit solvers share: one stage equation solved with `optimistix`,
its outcome as a `RESULTS` code, the error estimate of a step whose stage
equation failed, and a clear error for a vector field that cannot be
linearised."""

import contextlib

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import optimistix as optx

from .._results import RESULTS

# The outcomes of `optimistix` that reject a step (an adaptive controller retries
# it with a smaller one) and their codes here; any other failure is an internal
# error.
_OUTCOMES = (
    (optx.RESULTS.nonlinear_max_steps_reached, RESULTS.nonlinear_max_steps_reached),
    (optx.RESULTS.nonlinear_divergence, RESULTS.nonlinear_divergence),
    (optx.RESULTS.singular, RESULTS.singular),
)
RETRYABLE = tuple(code for _, code in _OUTCOMES)


def solve_stage(residual, z0, root_finder, max_steps: int, init_state=None):
    """The root `z` of `residual(z, None)` from `z0`, and a `RESULTS` code. The
    derivative of `z` with respect to whatever `residual` closes over is taken by
    the implicit function theorem (`optimistix.ImplicitAdjoint`), not through the
    iterations. `init_state` (for `VeryChord`) holds the matrix to iterate with.
    Use `solve_stage_state` for the root finder's final state too."""
    value, code, _ = solve_stage_state(residual, z0, root_finder, max_steps, init_state)
    return value, code


def solve_stage_state(
    residual, z0, root_finder, max_steps: int, init_state=None, options=None
):
    """As `solve_stage`, and the root finder's final state. `options` are the
    root finder's (`VeryChord`'s `scale_by`)."""
    options = {} if options is None else dict(options)
    if init_state is not None:
        options["init_state"] = init_state
    solution = optx.root_find(
        residual,
        root_finder,
        z0,
        options=options,
        max_steps=max_steps,
        throw=False,
    )
    outcome = solution.result
    code = jnp.where(
        outcome == optx.RESULTS.successful, 0, RESULTS.internal_error.value
    )
    for theirs, ours in _OUTCOMES:
        code = jnp.where(outcome == theirs, ours.value, code)
    return solution.value, RESULTS(code), solution.state


def failed_error(y_error, result: RESULTS):
    """`y_error`, infinite where the stage equation failed: an adaptive
    controller then rejects the step and shrinks it."""
    failed = result != RESULTS.successful
    return jtu.tree_map(
        lambda e: jnp.where(failed, jnp.inf, e).astype(e.dtype), y_error
    )


@contextlib.contextmanager
def linearising():
    """Raise a clear error, while tracing, if the linearisation of the vector
    field inside this block fails (say a `jax.pure_callback` without a JVP rule):
    the implicit solvers need its Jacobian. Wrap only the linearisation itself
    (a `jax.jacfwd` or `jax.jvp` of the vector field, which `diffeqsolve` has
    already traced once): any error there comes from linearising it."""
    try:
        yield
    except Exception as error:
        raise TypeError(
            "An implicit solver needs the Jacobian of the vector field, but "
            f"linearising it failed ({type(error).__name__}: {error}). Give the "
            "vector field a JVP rule (`jax.custom_jvp`), or use an explicit solver."
        ) from error


def check_linearisable(terms, t, y, args) -> None:
    """`linearising` for a solver that does not linearise the vector field
    itself while tracing (the root finder does, in its own way): traces
    `jax.jvp` of it abstractly; nothing runs. A solver that computes the
    Jacobian itself wraps that in `linearising` instead, and saves this trace
    (0.01-0.03 s of the first call of a `Kvaerno5` Brusselator solve)."""
    with linearising():
        jax.eval_shape(lambda: jax.jvp(lambda y: terms.vf(t, y, args), (y,), (y,)))

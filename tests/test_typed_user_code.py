"""Programs written as a Diffrax user writes them, type-checked by `pyright` in
`make test` (`pyright jaxdiffeq examples tests/test_typed_user_code.py`) and run
here: the public annotations must accept ordinary calls (Python floats for
times, arrays and PyTrees for states, tuples for `args`) and a user's own
solver and step-size controller, written against the annotated extension
protocols, must type-check as overrides and work."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PyTree

import jaxdiffeq as jd
from jaxdiffeq import Args, BoolScalarLike, DenseInfo, RealScalarLike, Y


def _decay(t: RealScalarLike, y: Y, args: Args) -> Y:
    del t
    return jax.tree_util.tree_map(lambda leaf: -args * leaf, y)


def test_ordinary_calls():
    ts = jnp.linspace(0.0, 1.0, 5)
    sol = jd.diffeqsolve(
        jd.ODETerm(_decay),
        jd.Tsit5(),
        0.0,
        1.0,
        None,
        {"a": jnp.array([1.0, 2.0]), "b": jnp.array(3.0)},
        args=jnp.array(0.5),
        saveat=jd.SaveAt(ts=ts),
        stepsize_controller=jd.PIDController(rtol=1e-8, atol=1e-8),
        max_steps=1000,
        throw=True,
    )
    assert sol.ys is not None and sol.ts is not None
    np.testing.assert_allclose(sol.ys["b"], 3.0 * jnp.exp(-0.5 * ts), rtol=1e-7)
    assert jd.is_successful(sol.result)

    def final(y0: Array) -> Array:
        out = jd.diffeqsolve(
            jd.ODETerm(_decay), jd.Heun(), 0, 1, 0.01, y0, args=jnp.array(1.0)
        )
        assert out.ys is not None
        return jnp.sum(out.ys)

    gradient = jax.grad(final)(jnp.array([1.0, 2.0]))
    np.testing.assert_allclose(gradient, jnp.exp(-1.0), rtol=1e-4)


class ExplicitMidpointEuler(jd.AbstractSolver):
    """A user's own solver: Euler's method with its midpoint-rule error estimate,
    written against `AbstractSolver`'s annotated protocol."""

    term_structure = jd.AbstractTerm
    interpolation_cls = jd.LocalLinearInterpolation

    def order(self, terms: PyTree[jd.AbstractTerm]) -> int:
        del terms
        return 1

    def init(
        self,
        terms: PyTree[jd.AbstractTerm],
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
    ) -> None:
        del terms, t0, t1, y0, args
        return None

    def step(
        self,
        terms: PyTree[jd.AbstractTerm],
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
        solver_state: None,
        made_jump: BoolScalarLike,
    ) -> tuple[Y, Y, DenseInfo, None, jd.RESULTS]:
        del solver_state, made_jump
        k0 = terms.vf_prod(t0, y0, args, terms.contr(t0, t1))
        y1 = y0 + k0
        k1 = terms.vf_prod(t1, y1, args, terms.contr(t0, t1))
        y_error = 0.5 * (k1 - k0)
        return y1, y_error, {"y0": y0, "y1": y1}, None, jd.RESULTS.successful

    def func(
        self, terms: PyTree[jd.AbstractTerm], t0: RealScalarLike, y0: Y, args: Args
    ) -> Y:
        return terms.vf(t0, y0, args)


class HalvingController(jd.ConstantStepSize):
    """A user's own controller: constant steps of half the given `dt0`."""

    def init(
        self,
        terms: PyTree[jd.AbstractTerm],
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        dt0: RealScalarLike | None,
        args: Args,
        func: Callable[[PyTree[jd.AbstractTerm], RealScalarLike, Y, Args], Y],
        error_order: RealScalarLike | None,
    ):
        assert dt0 is not None
        return super().init(
            terms, t0, t1, y0, 0.5 * jnp.asarray(dt0), args, func, error_order
        )


def test_user_solver_and_controller():
    term = jd.ODETerm(_decay)
    y0 = jnp.array([1.0])
    adaptive = jd.diffeqsolve(
        term,
        ExplicitMidpointEuler(),
        0.0,
        1.0,
        0.1,
        y0,
        args=jnp.array(1.0),
        stepsize_controller=jd.ConstantStepSize(),
    )
    halved = jd.diffeqsolve(
        term,
        ExplicitMidpointEuler(),
        0.0,
        1.0,
        0.1,
        y0,
        args=jnp.array(1.0),
        stepsize_controller=HalvingController(),
    )
    assert adaptive.ys is not None and halved.ys is not None
    np.testing.assert_allclose(adaptive.ys[-1], 0.9**10, rtol=1e-12)
    np.testing.assert_allclose(halved.ys[-1], 0.95**20, rtol=1e-12)
    assert halved.stats["num_accepted_steps"] == 20

"""The Newton matrix kept across steps by the diagonally implicit methods (issue
14, item 4): the same solution to tolerance as a fresh Jacobian at every step,
fewer Jacobians (counted in `Solution.stats`), the retry with a fresh one (at
the same step size, even with constant steps), the
other ways of solving the stage equations (`VeryChord` with a Jacobian-free
linear solver, `optimistix.Chord`), gradients, `vmap`, and the failure codes."""

from typing import ClassVar

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
import pytest

import jaxdiffeq as jd
from jaxdiffeq._solver import newton_matrix
from jaxdiffeq.problems import PROBLEMS, brusselator_2d

# 18 states: above `ALWAYS_FRESH_SIZE`, so the Newton matrix is kept.
_BRUSS = brusselator_2d(3)


def _bruss(solver, y0=None, alpha=None, **kwargs):
    return jd.diffeqsolve(
        jd.ODETerm(_BRUSS.f),
        solver,
        0.0,
        _BRUSS.t1,
        None,
        _BRUSS.y0 if y0 is None else y0,
        _BRUSS.args if alpha is None else alpha,
        stepsize_controller=jd.PIDController(rtol=1e-6, atol=1e-8),
        max_steps=10_000,
        **kwargs,
    )


def test_kept_jacobian_same_solution_fewer_jacobians():
    kept = _bruss(jd.Kvaerno5())
    # A QR solve is not kept across steps: a fresh Jacobian at every step.
    fresh_finder = jd.with_stepsize_controller_tols(jd.VeryChord)(linear_solver=lx.QR())
    fresh = _bruss(jd.Kvaerno5(root_finder=fresh_finder))
    assert kept.result == jd.RESULTS.successful
    assert fresh.result == jd.RESULTS.successful
    np.testing.assert_allclose(kept.ys[-1], fresh.ys[-1], rtol=1e-5, atol=1e-7)
    steps = int(kept.stats["num_steps"])
    assert 0 < int(kept.stats["num_jacobians"]) < steps / 2
    assert int(kept.stats["num_jacobians"]) <= int(kept.stats["num_factorisations"])
    assert int(kept.stats["num_factorisations"]) < steps
    assert "num_jacobians" not in fresh.stats


class _ProdTerm(jd.ODETerm):
    """An ODE term whose `prod` is its own: the solver cannot assume the
    increment is the control times the vector field, and keeps the Jacobian of
    the increment over the step it was made at (`NewtonMatrix.jac_h`)."""

    def prod(self, vf, control):
        return jax.tree.map(lambda v: control * v, vf)


def test_a_term_of_its_own_keeps_the_jacobian_of_its_increment():
    ode = _bruss(jd.Kvaerno5(), saveat=jd.SaveAt(t1=True, solver_state=True))
    own = jd.diffeqsolve(
        _ProdTerm(_BRUSS.f),
        jd.Kvaerno5(),
        0.0,
        _BRUSS.t1,
        None,
        _BRUSS.y0,
        _BRUSS.args,
        stepsize_controller=jd.PIDController(rtol=1e-6, atol=1e-8),
        saveat=jd.SaveAt(t1=True, solver_state=True),
    )
    assert ode.solver_state.jac_h is None
    assert own.solver_state.jac_h is not None
    assert own.result == jd.RESULTS.successful
    assert int(own.stats["num_jacobians"]) < int(own.stats["num_steps"])
    np.testing.assert_allclose(own.ys[-1], ode.ys[-1], rtol=1e-5, atol=1e-7)


def test_a_state_kept_for_an_ode_term_is_refused_for_another_term():
    solver = jd.Kvaerno5()
    y0, args = _BRUSS.y0, _BRUSS.args
    state = solver.init(jd.ODETerm(_BRUSS.f), 0.0, 0.1, y0, args)
    with pytest.raises(ValueError, match="vector field"):
        solver.step(_ProdTerm(_BRUSS.f), 0.0, 0.1, y0, args, state, False)


def test_small_states_make_the_jacobian_at_every_step():
    rober = PROBLEMS["rober"]
    sol = jd.diffeqsolve(
        jd.ODETerm(rober.f),
        jd.Kvaerno5(),
        0.0,
        1e3,
        None,
        rober.y0,
        rober.args,
        stepsize_controller=jd.PIDController(rtol=1e-6, atol=1e-10),
    )
    steps = int(sol.stats["num_steps"])
    assert int(sol.stats["num_jacobians"]) == steps
    assert int(sol.stats["num_factorisations"]) == steps


def test_other_root_finders_agree():
    kept = _bruss(jd.Kvaerno3())
    chord = jd.with_stepsize_controller_tols(optx.Chord)(cauchy_termination=False)
    gmres = jd.with_stepsize_controller_tols(jd.VeryChord)(
        linear_solver=lx.GMRES(rtol=1e-10, atol=1e-12)
    )
    for finder in (chord, gmres):
        other = _bruss(jd.Kvaerno3(root_finder=finder))
        assert other.result == jd.RESULTS.successful
        np.testing.assert_allclose(other.ys[-1], kept.ys[-1], rtol=1e-4, atol=1e-6)


def test_kept_state_is_returned_and_counts_agree():
    sol = _bruss(jd.Kvaerno5(), saveat=jd.SaveAt(t1=True, solver_state=True))
    state = sol.solver_state
    assert int(state.num_jacobians) == int(sol.stats["num_jacobians"])
    assert int(state.jac_age) < 50 and int(state.factor_age) < 20


def test_failed_iteration_with_a_kept_jacobian_asks_for_a_retry():
    # A Jacobian kept from a short step at t = 0 (marked not stale by hand) is
    # too poor for a step twice as long: the chord iteration fails with it,
    # and the step asks to be attempted again at the same size (`retries`);
    # that attempt, with a fresh Jacobian, equals the step begun with one.
    solver = jd.Kvaerno5(root_finder=jd.VeryChord(rtol=1e-6, atol=1e-8))
    term = jd.ODETerm(_BRUSS.f)
    y0, args = _BRUSS.y0, _BRUSS.args
    state = solver.init(term, 0.0, 0.1, y0, args)
    y1, _, _, state, _ = solver.step(term, 0.0, 0.1, y0, args, state, False)
    kept = newton_matrix.marked(state, False)
    _, error, _, after, result = solver.step(term, 0.1, 0.3, y1, args, kept, False)
    assert result != jd.RESULTS.successful
    assert not np.isfinite(error).any()
    assert bool(solver.retries(after)) and int(after.num_jacobians) == 1
    y_retry, _, _, again, result = solver.step(term, 0.1, 0.3, y1, args, after, False)
    assert result == jd.RESULTS.successful
    assert not bool(solver.retries(again)) and int(again.num_jacobians) == 2
    y_fresh, *_ = solver.step(term, 0.1, 0.3, y1, args, state, False)
    np.testing.assert_allclose(y_retry, y_fresh, rtol=1e-12)


class _RetriesEveryFirstAttempt(jd.Heun):
    # Heun whose every first attempt at a step returns NaN and asks to be
    # attempted again (`retries`), as a DIRK does after a failed Newton
    # iteration with a kept Jacobian. Its state counts the attempts.
    keeps_state_on_reject: ClassVar[bool] = True

    def retrying(self, args):
        return True

    def init(self, terms, t0, t1, y0, args):
        return jnp.asarray(0)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        y1, error, dense, _, result = super().step(
            terms, t0, t1, y0, args, None, made_jump
        )
        retrying = jnp.asarray(self.retrying(args))
        first = retrying & (solver_state % 2 == 0)
        y1 = jnp.where(first, jnp.nan, y1)
        error = jnp.where(first, jnp.nan, error)
        return y1, error, dense, solver_state + retrying.astype(int), result

    def retries(self, solver_state):
        return solver_state % 2 == 1


class _RetriesWhereArgs(_RetriesEveryFirstAttempt):
    # The same, but only in the lanes whose `args` is true.
    def retrying(self, args):
        return args


@pytest.mark.parametrize("adaptive", [True, False])
def test_a_retried_attempt_changes_nothing_but_the_count(adaptive):
    # The loop's side of the retry: the attempt is not accepted, the times
    # and the controller's state stay (constant steps do not fail), so the
    # solution is the plain method's with one more rejected attempt a step.
    def solve(solver):
        controller = (
            jd.PIDController(rtol=1e-5, atol=1e-7)
            if adaptive
            else jd.ConstantStepSize()
        )
        return jd.diffeqsolve(
            jd.ODETerm(lambda t, y, args: -y * (1 + y**2)),
            solver,
            0.0,
            2.0,
            0.125,
            jnp.array([1.0, 2.0]),
            stepsize_controller=controller,
            saveat=jd.SaveAt(steps=True),
        )

    plain, retried = solve(jd.Heun()), solve(_RetriesEveryFirstAttempt())
    assert retried.result == jd.RESULTS.successful
    np.testing.assert_array_equal(retried.ts, plain.ts)
    np.testing.assert_array_equal(retried.ys, plain.ys)
    accepted = int(plain.stats["num_accepted_steps"])
    assert int(retried.stats["num_accepted_steps"]) == accepted
    attempts = accepted + int(plain.stats["num_rejected_steps"])
    assert int(retried.stats["num_rejected_steps"]) == attempts + attempts - accepted


def test_lanes_that_share_their_steps_retry_together():
    # Under `vmap` with `unvmap_dt=True` a retry in one lane is a retry in
    # all: every lane keeps the steps of the plain method.
    def solve(solver, args):
        return jd.diffeqsolve(
            jd.ODETerm(lambda t, y, args: -y),
            solver,
            0.0,
            2.0,
            0.125,
            jnp.array([1.0, 2.0]),
            args,
            stepsize_controller=jd.PIDController(rtol=1e-5, atol=1e-7, unvmap_dt=True),
            saveat=jd.SaveAt(steps=True),
        )

    lanes = jnp.array([True, False])
    plain = jax.vmap(lambda a: solve(jd.Heun(), a))(lanes)
    retried = jax.vmap(lambda a: solve(_RetriesWhereArgs(), a))(lanes)
    assert (retried.result == jd.RESULTS.successful).all()
    np.testing.assert_array_equal(retried.ts, plain.ts)
    np.testing.assert_array_equal(retried.ys, plain.ys)
    assert (
        retried.stats["num_rejected_steps"] > plain.stats["num_rejected_steps"]
    ).all()


def test_vmap_over_initial_values_and_parameters():
    y0s = jnp.stack([_BRUSS.y0, _BRUSS.y0 * 1.1])
    alphas = jnp.array([0.1, 0.12])

    def final(y0, alpha):
        return _bruss(jd.Kvaerno5(), y0=y0, alpha=alpha, throw=False).ys[-1]

    batched = jax.jit(jax.vmap(final))(y0s, alphas)
    for i in range(2):
        # (A batched LU rounds differently: equal to well within the tolerance.)
        np.testing.assert_allclose(batched[i], final(y0s[i], alphas[i]), rtol=1e-8)


def _decay_loss(k, adjoint, size=20):
    # 20 states: the Newton matrix kept across steps; 2: made at every step.
    term = jd.ODETerm(lambda t, y, k: -k * y * (1 + y**2))
    sol = jd.diffeqsolve(
        term,
        jd.Kvaerno5(),
        0.0,
        1.0,
        None,
        jnp.linspace(0.5, 1.0, size),
        k,
        stepsize_controller=jd.PIDController(rtol=1e-9, atol=1e-11),
        adjoint=adjoint,
    )
    return jnp.sum(sol.ys[-1] ** 2)


@pytest.mark.parametrize(
    "adjoint",
    [
        jd.RecursiveCheckpointAdjoint(),
        jd.DirectAdjoint(),
        jd.ForwardMode(),
        jd.BacksolveAdjoint(),
    ],
    ids=lambda a: type(a).__name__,
)
@pytest.mark.parametrize("size", [2, 20])
def test_gradients_with_kept_jacobians(adjoint, size):
    k = jnp.array(3.0)
    if isinstance(adjoint, jd.ForwardMode):
        g = jax.jacfwd(_decay_loss)(k, adjoint, size)
    else:
        g = jax.grad(_decay_loss)(k, adjoint, size)
    eps = 1e-4
    plain = jd.RecursiveCheckpointAdjoint()
    fd = (_decay_loss(k + eps, plain, size) - _decay_loss(k - eps, plain, size)) / (
        2 * eps
    )
    # The chord iterations converge to the tolerance, so the finite difference
    # is good to about tolerance / eps.
    np.testing.assert_allclose(g, fd, rtol=1e-4)


_MIDPOINT = jd.ButcherTableau(
    c=np.array([]),
    b_sol=np.array([1.0]),
    b_error=np.array([0.0]),
    a_lower=(),
    a_diagonal=np.array([0.5]),
    c1=0.5,
)


class _ImplicitMidpoint(jd.AbstractSDIRK):
    tableau = _MIDPOINT
    root_finder: optx.AbstractRootFinder = jd.VeryChord(rtol=1e-8, atol=1e-8)
    root_find_max_steps: int = 10

    def order(self, terms):
        return 2


def test_singular_newton_matrix_has_its_code():
    # y' = 2 y with h = 1: I - h gamma J = 1 - 0.5 * 2 = 0 exactly.
    sol = jd.diffeqsolve(
        jd.ODETerm(lambda t, y, args: 2.0 * y),
        _ImplicitMidpoint(),
        0.0,
        3.0,
        1.0,
        jnp.array([1.0]),
        throw=False,
    )
    assert sol.result == jd.RESULTS.singular


def test_divergent_iteration_has_its_code_under_constant_steps():
    # A huge step on a strongly nonlinear field: no controller to retry with.
    solver = jd.Kvaerno5(root_finder=jd.VeryChord(rtol=1e-8, atol=1e-8))
    sol = jd.diffeqsolve(
        jd.ODETerm(lambda t, y, args: -(y**5)),
        solver,
        0.0,
        100.0,
        50.0,
        jnp.array([10.0]),
        throw=False,
    )
    assert sol.result in (
        jd.RESULTS.nonlinear_divergence,
        jd.RESULTS.nonlinear_max_steps_reached,
    )
    with pytest.raises(Exception, match="(?i)diverg|converge"):
        jd.diffeqsolve(
            jd.ODETerm(lambda t, y, args: -(y**5)),
            solver,
            0.0,
            100.0,
            50.0,
            jnp.array([10.0]),
        )

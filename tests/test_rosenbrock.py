"""`Rodas5P`, the Rosenbrock–Wanner method: orders, dense output, the Bari stiff
problems, gradients with every adjoint, `vmap`, float32, a Jacobian-free
linear solver, and the errors (a term that is not an ODE, a vector field with
no JVP rule, a singular matrix)."""

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest
import scipy.linalg
from helpers import scaled_error_at_t1

import jaxdiffeq as jd
from jaxdiffeq.problems import PROBLEMS

_Y0 = jnp.array([0.1, 0.3])


def _logistic(t, y, args):
    return y * (1 - y)


def _exact(t):
    e = np.exp(t)
    return np.asarray(_Y0) * e / (1 - np.asarray(_Y0) + np.asarray(_Y0) * e)


def _order(errors, dts):
    return np.polyfit(np.log(dts), np.log(errors), 1)[0]


@pytest.mark.parametrize(
    "name, order, dts",
    [
        ("Rodas5P", 5, [1 / 2, 1 / 4, 1 / 8, 1 / 16]),
        ("Rodas4", 4, [1 / 8, 1 / 16, 1 / 32, 1 / 64]),
    ],
)
def test_order_on_a_nonlinear_problem(name, order, dts):
    errors = []
    for dt in dts:
        solver = getattr(jd, name)()
        sol = jd.diffeqsolve(jd.ODETerm(_logistic), solver, 0.0, 2.0, dt, _Y0)
        errors.append(float(np.max(np.abs(np.asarray(sol.ys[-1]) - _exact(2.0)))))
    assert abs(_order(errors, dts) - order) < 0.3


def test_order_on_a_stiff_linear_problem():
    # Eigenvalues -1 and -1000, started on the slow mode (y0 = (1, 1)): every
    # step must stay stable for the fast one. On a linear problem the error
    # is that of the stability function, which matches exp(z) beyond order 5
    # (measured 5.5 to 5.9 here): at least order 5.
    a = np.array([[-2.0, 1.0], [998.0, -999.0]])
    y0 = np.array([1.0, 1.0])
    exact = scipy.linalg.expm(a) @ y0
    term = jd.ODETerm(lambda t, y, args: jnp.asarray(a) @ y)
    dts = [1 / 2, 1 / 4, 1 / 8, 1 / 16]
    errors = []
    for dt in dts:
        sol = jd.diffeqsolve(term, jd.Rodas5P(), 0.0, 1.0, dt, jnp.asarray(y0))
        errors.append(float(np.max(np.abs(np.asarray(sol.ys[-1]) - exact))))
    assert _order(errors, dts) > 5 - 0.3


@pytest.mark.parametrize("name, bound", [("Rodas5P", 5e-8), ("Rodas4", 1e-6)])
def test_dense_output_is_as_accurate_as_the_steps(name, bound):
    sol = jd.diffeqsolve(
        jd.ODETerm(_logistic),
        getattr(jd, name)(),
        0.0,
        2.0,
        0.125,
        _Y0,
        saveat=jd.SaveAt(dense=True),
    )
    ts = np.linspace(0.0, 2.0, 97)
    error = max(float(np.max(np.abs(sol.evaluate(t) - _exact(t)))) for t in ts)
    # The steps' own errors at t1 are about 1e-8 (Rodas5P) and 2e-7 (Rodas4):
    # the interpolants keep within a small multiple of them between the steps.
    assert error < bound


def test_non_autonomous_problem_uses_the_time_derivative():
    # y' = -50 (y - cos t): without the d_i h f_t terms the order falls to 1.
    term = jd.ODETerm(lambda t, y, args: -50.0 * (y - jnp.cos(t)))
    controller = jd.PIDController(rtol=1e-8, atol=1e-10)
    sol = jd.diffeqsolve(
        term,
        jd.Rodas5P(),
        0.0,
        2.0,
        0.01,
        jnp.array([1.0]),
        stepsize_controller=controller,
    )
    # y = (2500 cos t + 50 sin t)/2501 + C e^{-50 t}, y(0) = 1.
    c = 1 - 2500 / 2501
    exact = (2500 * np.cos(2.0) + 50 * np.sin(2.0)) / 2501 + c * np.exp(-100.0)
    np.testing.assert_allclose(sol.ys[-1], [exact], rtol=1e-7)


@pytest.mark.parametrize(
    "name, solver",
    [
        ("rober", "Rodas5P"),
        ("hires", "Rodas5P"),
        ("hires", "Rodas4"),
        *(
            pytest.param(n, s, marks=pytest.mark.slow)
            for n in ("rober", "orego", "vdpol", "pollu")
            for s in ("Rodas5P", "Rodas4")
            if (n, s) != ("rober", "Rodas5P")
        ),
    ],
)
def test_bari_problems(name, solver):
    error = scaled_error_at_t1(PROBLEMS[name], getattr(jd, solver)())
    # Measured (2026-12-07), Rodas5P / Rodas4: ROBER 0.0052 / 0.049, HIRES 0.69
    # / 0.13, OREGO 0.66 / 3.1, VDPOL 0.37 / 0.12, POLLU 0.060 / 0.039
    # tolerance units.
    assert error < 5


def _loss(k, adjoint):
    sol = jd.diffeqsolve(
        jd.ODETerm(lambda t, y, k: -k * y * (1 + y**2)),
        jd.Rodas5P(),
        0.0,
        1.0,
        None,
        jnp.array([1.0, 0.5]),
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
def test_gradients(adjoint):
    k = jnp.array(3.0)
    if isinstance(adjoint, jd.ForwardMode):
        g = jax.jacfwd(_loss)(k, adjoint)
    else:
        g = jax.grad(_loss)(k, adjoint)
    eps = 1e-4
    plain = jd.RecursiveCheckpointAdjoint()
    fd = (_loss(k + eps, plain) - _loss(k - eps, plain)) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-5)


def test_a_zero_length_step_leaves_the_state_and_can_be_differentiated():
    # The step loop's body takes such a step in a finished lane of a `vmap`.
    def step(k):
        y1, error, _, _, result = jd.Rodas5P().step(
            jd.ODETerm(lambda t, y, k: -k * y**3),
            1.0,
            1.0,
            jnp.array([1.0, 2.0]),
            k,
            None,
            False,
        )
        return y1, error, result

    y1, error, result = step(jnp.array(2.0))
    np.testing.assert_array_equal(y1, [1.0, 2.0])
    np.testing.assert_array_equal(error, [0.0, 0.0])
    assert result == jd.RESULTS.successful
    _, tangent = jax.jvp(lambda k: step(k)[0], (jnp.array(2.0),), (jnp.array(1.0),))
    np.testing.assert_array_equal(tangent, [0.0, 0.0])


def test_gradients_under_vmap_with_lanes_of_different_lengths():
    # The lanes take different numbers of steps, so the batched loop's body
    # also runs in finished lanes; there lineax raised ("non-finite input").
    ks = jnp.array([1.0, 3.0, 10.0])
    per_lane = jnp.stack(
        [jax.grad(_loss)(k, jd.RecursiveCheckpointAdjoint()) for k in ks]
    )
    for adjoint in (jd.RecursiveCheckpointAdjoint(), jd.DirectAdjoint()):
        batched = jax.vmap(jax.grad(_loss), in_axes=(0, None))(ks, adjoint)
        np.testing.assert_allclose(batched, per_lane, rtol=1e-8)


def _overflowing_loss(k, dt0, rtol, adjoint):
    # From y = 2, a first step of 1000 takes the stages where exp(y) overflows:
    # those steps are rejected.
    sol = jd.diffeqsolve(
        jd.ODETerm(lambda t, y, k: -k * y**5 + 1e-3 * jnp.exp(y)),
        jd.Rodas5P(),
        0.0,
        5.0,
        dt0,
        jnp.array([2.0, 1.0]),
        k,
        stepsize_controller=jd.PIDController(rtol=rtol, atol=rtol),
        adjoint=adjoint,
    )
    return jnp.sum(sol.ys[-1])


def test_forward_mode_through_steps_where_the_vector_field_overflowed():
    # lineax raised ("non-finite input") in the tangent solves of the rejected
    # steps. (Reverse mode can still meet a NaN there: see the docs.)
    k = jnp.array(3.0)
    reference = jax.jacfwd(_overflowing_loss)(k, None, 1e-12, jd.ForwardMode())
    tangent = jax.jacfwd(_overflowing_loss)(k, 1e3, 1e-8, jd.ForwardMode())
    np.testing.assert_allclose(tangent, reference, rtol=1e-6)


def test_vmap_and_float32_and_gmres():
    def final(y0, solver=jd.Rodas5P()):
        return jd.diffeqsolve(
            jd.ODETerm(_logistic),
            solver,
            0.0,
            2.0,
            None,
            y0,
            stepsize_controller=jd.PIDController(rtol=1e-6, atol=1e-8),
        ).ys[-1]

    y0s = jnp.stack([_Y0, _Y0 * 2])
    batched = jax.vmap(final)(y0s)
    np.testing.assert_allclose(batched[1], final(y0s[1]), rtol=1e-12)
    single = final(_Y0.astype(jnp.float32))
    assert single.dtype == jnp.float32
    np.testing.assert_allclose(single, _exact(2.0), rtol=1e-4)
    gmres = jd.Rodas5P(linear_solver=lx.GMRES(rtol=1e-12, atol=1e-12))
    np.testing.assert_allclose(final(_Y0, gmres), final(_Y0), rtol=1e-8)


def test_errors():
    with pytest.raises(TypeError, match="Rosenbrock method, for ODEs"):
        jd.diffeqsolve(
            jd.MultiTerm(jd.ODETerm(_logistic), jd.ODETerm(_logistic)),
            jd.Rodas5P(),
            0.0,
            1.0,
            0.1,
            _Y0,
        )

    def opaque(t, y, args):
        shape = jax.ShapeDtypeStruct(y.shape, y.dtype)
        return jax.pure_callback(lambda y: -np.asarray(y), shape, y)

    with pytest.raises(TypeError, match="Jacobian"):
        jd.diffeqsolve(jd.ODETerm(opaque), jd.Rodas5P(), 0.0, 1.0, 0.1, _Y0)
    # W = I/(gamma h) - J is singular for J = 1/(gamma h): with h fixed, code.
    gamma = jd.Rodas5P.tableau.gamma
    sol = jd.diffeqsolve(
        jd.ODETerm(lambda t, y, args: y / (gamma * 0.5)),
        jd.Rodas5P(),
        0.0,
        1.0,
        0.5,
        jnp.array([1.0, 2.0]),
        throw=False,
    )
    assert sol.result == jd.RESULTS.singular


def _logistic_jacobian(t, y, args):
    return lx.DiagonalLinearOperator(1 - 2 * y)


@pytest.mark.parametrize("backwards", [False, True])
def test_user_supplied_jacobian(backwards):
    t0, t1 = (2.0, 0.0) if backwards else (0.0, 2.0)

    def final(solver):
        return jd.diffeqsolve(
            jd.ODETerm(_logistic),
            solver,
            t0,
            t1,
            None,
            _Y0,
            stepsize_controller=jd.PIDController(rtol=1e-8, atol=1e-10),
        ).ys[-1]

    automatic = final(jd.Rodas5P())
    dense = final(jd.Rodas5P(jacobian=_logistic_jacobian))
    np.testing.assert_allclose(dense, automatic, rtol=1e-12)

    def as_function(t, y, args):
        return lx.FunctionLinearOperator(
            lambda v: (1 - 2 * y) * v, jax.eval_shape(lambda: y)
        )

    gmres = jd.Rodas5P(
        linear_solver=lx.GMRES(rtol=1e-12, atol=1e-12), jacobian=as_function
    )
    np.testing.assert_allclose(final(gmres), automatic, rtol=1e-9)

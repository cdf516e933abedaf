"""The implicit–explicit methods (`KenCarp3`, `KenCarp4`, `KenCarp5`, `Sil3`):
empirical orders, the split solve against the unsplit one, Diffrax's numbers,
gradients, `vmap`, float32, and the errors for a single term and for
mismatched tableaux."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import jaxdiffeq as jd

ORDERS = {"KenCarp3": 3, "KenCarp4": 4, "KenCarp5": 5, "Sil3": 2}
_STIFF = np.array([[-2.0, 1.0], [998.0, -999.0]])  # eigenvalues -1 and -1000
_MILD = np.array([[-2.0, 1.0], [1.0, -3.0]])
_ROTATION = np.array([[0.0, 1.0], [-1.0, 0.0]])
_Y0 = np.array([1.0, 3.0])


def _linear(matrix):
    return jd.ODETerm(lambda t, y, args: jnp.asarray(matrix, y.dtype) @ y)


def _constant_step_error(name, explicit, implicit, dt):
    solver = getattr(jd, name)(root_finder=jd.VeryChord(rtol=1e-12, atol=1e-12))
    terms = jd.MultiTerm(_linear(explicit), _linear(implicit))
    sol = jd.diffeqsolve(terms, solver, 0.0, 1.0, dt, jnp.asarray(_Y0))
    exact = scipy.linalg.expm(explicit + implicit) @ _Y0
    return float(np.max(np.abs(np.asarray(sol.ys[-1]) - exact)))


def _order(name, explicit, implicit, dts):
    errors = [_constant_step_error(name, explicit, implicit, dt) for dt in dts]
    return np.polyfit(np.log(dts), np.log(errors), 1)[0]


@pytest.mark.parametrize("name", list(ORDERS))
def test_order_with_both_terms(name):
    # A non-stiff coupled problem: the explicit and implicit tableaux together.
    order = _order(name, _ROTATION, _MILD, [1 / 4, 1 / 8, 1 / 16, 1 / 32])
    assert abs(order - ORDERS[name]) < 0.3


@pytest.mark.parametrize("name", list(ORDERS))
def test_order_on_a_stiff_linear_implicit_term(name):
    zero = np.zeros((2, 2))
    order = _order(name, zero, _STIFF, [1 / 8, 1 / 16, 1 / 32, 1 / 64])
    assert abs(order - ORDERS[name]) < 0.3


# Kennedy and Carpenter's dense output: its order (2 for KenCarp3, 3 for the
# others), and the order of the error at interpolated times, `min(order + 1,
# method order)`.
DENSE_ORDERS = {"KenCarp3": 2, "KenCarp4": 3, "KenCarp5": 3}


@pytest.mark.parametrize("name", list(DENSE_ORDERS))
def test_kencarp_dense_output_satisfies_its_order_conditions(name):
    # The transcribed coefficients, checked against the tableaux: b_i(1) = b_i,
    # and the conditions of order 2 (and 3) as identities in the fraction s.
    solver = getattr(jd, name)
    coefficients = solver.interpolation_cls.coefficients
    s = np.linspace(0.1, 1.0, 5)
    weights = np.stack(
        [
            sum(coefficients[:, j] * x ** (j + 1) for j in range(coefficients.shape[1]))
            for x in s
        ]
    )
    for tableau in solver.tableau.tableaus:
        b, c = np.asarray(tableau.b_sol), np.asarray(tableau.nodes())
        a = np.asarray(tableau.a_matrix())
        if tableau.a_diagonal is not None:
            a = a + np.diag(tableau.a_diagonal)
        np.testing.assert_allclose(weights[-1], b, atol=1e-14)
        np.testing.assert_allclose(weights.sum(1), s, atol=1e-14)
        np.testing.assert_allclose(weights @ c, s**2 / 2, atol=1e-14)
        if DENSE_ORDERS[name] >= 3:
            np.testing.assert_allclose(weights @ c**2, s**3 / 3, atol=1e-12)
            np.testing.assert_allclose(weights @ (a @ c), s**3 / 6, atol=1e-12)


@pytest.mark.parametrize("name", list(DENSE_ORDERS))
def test_kencarp_dense_output_order(name):
    dts = [1 / 8, 1 / 16, 1 / 32, 1 / 64]
    errors = []
    for dt in dts:
        ts = np.arange(0.0, 1.0, dt) + 0.37 * dt  # inside every step
        solver = getattr(jd, name)(root_finder=jd.VeryChord(rtol=1e-12, atol=1e-12))
        terms = jd.MultiTerm(_linear(_ROTATION), _linear(_MILD))
        sol = jd.diffeqsolve(
            terms, solver, 0.0, 1.0, dt, jnp.asarray(_Y0), saveat=jd.SaveAt(ts=ts)
        )
        exact = [scipy.linalg.expm((_ROTATION + _MILD) * t) @ _Y0 for t in ts]
        errors.append(float(np.max(np.abs(np.asarray(sol.ys) - np.stack(exact)))))
    order = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    expected = min(DENSE_ORDERS[name] + 1, ORDERS[name])
    assert abs(order - expected) < 0.3


def _cubic(t, y, args):
    return y - y**3 / 3 + jnp.sin(t).astype(y.dtype)


def _diffusion(t, y, args):
    return jnp.asarray(_STIFF, y.dtype) @ y


def _summed(t, y, args):
    return _cubic(t, y, args) + _diffusion(t, y, args)


def _with(lib, name, rtol):
    return lib.diffeqsolve(
        lib.MultiTerm(lib.ODETerm(_cubic), lib.ODETerm(_diffusion)),
        getattr(lib, name)(),
        0.0,
        2.0,
        0.01,
        jnp.asarray(_Y0),
        stepsize_controller=lib.PIDController(rtol=rtol, atol=rtol * 1e-2),
        max_steps=100_000,
    )


@pytest.mark.parametrize("name", list(ORDERS))
def test_split_solve_matches_unsplit(name):
    split = _with(jd, name, 1e-9)  # atol 1e-11
    whole = jd.diffeqsolve(
        jd.ODETerm(_summed),
        jd.Kvaerno5(),
        0.0,
        2.0,
        0.01,
        jnp.asarray(_Y0),
        stepsize_controller=jd.PIDController(rtol=1e-9, atol=1e-11),
    )
    np.testing.assert_allclose(split.ys[-1], whole.ys[-1], rtol=1e-6, atol=1e-8)


def test_sil3_same_steps_and_solution_as_diffrax():
    ours, theirs = _with(jd, "Sil3", 1e-7), _with(diffrax, "Sil3", 1e-7)
    np.testing.assert_allclose(ours.ys[-1], theirs.ys[-1], rtol=1e-7)
    for key in ("num_accepted_steps", "num_rejected_steps"):
        assert abs(int(ours.stats[key]) - int(theirs.stats[key])) <= 2


@pytest.mark.slow
@pytest.mark.parametrize("name", ["KenCarp3", "KenCarp4", "KenCarp5"])
def test_kencarp_same_solution_as_diffrax(name):
    # On this problem Diffrax's KenCarp methods take about 17,600 accepted and
    # 25,000 rejected steps at rtol 1e-5 (and do not finish in 100,000 at
    # 1e-7); ours take 14 to 50.
    ours, theirs = _with(jd, name, 1e-5), _with(diffrax, name, 1e-5)
    np.testing.assert_allclose(ours.ys[-1], theirs.ys[-1], rtol=1e-4)
    assert int(ours.stats["num_steps"]) < int(theirs.stats["num_steps"])


def test_single_term_is_refused():
    with pytest.raises(TypeError, match="MultiTerm\\(explicit_term, implicit_term\\)"):
        jd.diffeqsolve(
            jd.ODETerm(_summed),
            jd.KenCarp4(),
            0.0,
            1.0,
            0.1,
            _Y0,
            stepsize_controller=jd.PIDController(rtol=1e-6, atol=1e-8),
        )


def test_mismatched_tableaux_are_refused():
    explicit, implicit = jd.KenCarp3.tableau.tableaus
    with pytest.raises(ValueError, match="same number of stages"):
        jd.MultiButcherTableau(explicit, jd.KenCarp4.tableau.tableaus[1])
    with pytest.raises(ValueError, match="explicit"):
        jd.MultiButcherTableau(implicit, implicit)
    with pytest.raises(ValueError, match="two tableaux"):
        jd.MultiButcherTableau(explicit)


def _loss(k, y0):
    def slow(t, y, k):
        return k * jnp.sin(y)

    sol = jd.diffeqsolve(
        jd.MultiTerm(jd.ODETerm(slow), jd.ODETerm(_diffusion)),
        jd.KenCarp4(),
        0.0,
        1.0,
        0.01,
        y0,
        k,
        stepsize_controller=jd.PIDController(rtol=1e-9, atol=1e-11),
    )
    return jnp.sum(sol.ys[-1] ** 2)


def test_gradients_and_vmap():
    k, y0 = jnp.array(0.7), jnp.asarray(_Y0)
    g_k, g_y0 = jax.grad(_loss, argnums=(0, 1))(k, y0)
    eps = 1e-5
    fd_k = (_loss(k + eps, y0) - _loss(k - eps, y0)) / (2 * eps)
    e0 = jnp.array([eps, 0.0])
    fd_y0 = (_loss(k, y0 + e0) - _loss(k, y0 - e0)) / (2 * eps)
    np.testing.assert_allclose(g_k, fd_k, rtol=1e-4)
    np.testing.assert_allclose(g_y0[0], fd_y0, rtol=1e-4)
    ks = jnp.array([0.5, 0.7, 0.9])
    batched = jax.vmap(_loss, in_axes=(0, None))(ks, y0)
    np.testing.assert_allclose(batched[1], _loss(k, y0), rtol=1e-10)


def test_float32():
    sol = jd.diffeqsolve(
        jd.MultiTerm(jd.ODETerm(_cubic), jd.ODETerm(_diffusion)),
        jd.KenCarp3(),
        0.0,
        1.0,
        0.01,
        jnp.asarray(_Y0, jnp.float32),
        stepsize_controller=jd.PIDController(rtol=1e-4, atol=1e-6),
    )
    assert sol.ys is not None and sol.ys.dtype == jnp.float32
    reference = jd.diffeqsolve(
        jd.ODETerm(_summed),
        jd.Kvaerno5(),
        0.0,
        1.0,
        0.01,
        jnp.asarray(_Y0),
        stepsize_controller=jd.PIDController(rtol=1e-10, atol=1e-12),
    )
    np.testing.assert_allclose(sol.ys[-1], reference.ys[-1], rtol=1e-3, atol=1e-5)


def test_multiterm_without_dt0():
    # A `MultiTerm` has no single derivative to size the first step from:
    # Diffrax then starts with 0.01, and so do we (explicit and IMEX solvers).
    def run(lib, name):
        terms = lib.MultiTerm(lib.ODETerm(_cubic), lib.ODETerm(_diffusion))
        controller = lib.PIDController(rtol=1e-6, atol=1e-8)
        return lib.diffeqsolve(
            terms,
            getattr(lib, name)(),
            0.0,
            1.0,
            None,
            jnp.asarray(_Y0),
            stepsize_controller=controller,
            max_steps=100_000,
        )

    ours, theirs = run(jd, "Sil3"), run(diffrax, "Sil3")
    assert int(ours.stats["num_accepted_steps"]) == int(
        theirs.stats["num_accepted_steps"]
    )
    np.testing.assert_allclose(ours.ys[-1], theirs.ys[-1], rtol=1e-6)
    kencarp = run(jd, "KenCarp4")
    np.testing.assert_allclose(kencarp.ys[-1], theirs.ys[-1], rtol=1e-4)

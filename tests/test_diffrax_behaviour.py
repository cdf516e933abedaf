"""Diffrax programs behave the same with jaxdiffeq: the same exception classes,
the same promotion of the state's dtype, the same `isinstance` answers, the same
keyword arguments. Each test runs the program with both libraries and compares.

(Output layouts are compared in test_saveat.py, progress meters in
test_progress.py, step sequences in test_diffrax_parity.py.)
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiffeq as jd

# ---------------------------------------------------------------- exception classes


def _decay(lib):
    return lib.ODETerm(lambda t, y, args: -y)


def _raised(fn):
    try:
        out = fn()
        jax.block_until_ready(out)
    except Exception as error:  # noqa: BLE001 - the class is what is compared
        return error
    raise AssertionError("no exception")


def _solve(lib, **kwargs):
    options = dict(
        terms=_decay(lib),
        solver=lib.Tsit5(),
        t0=0.0,
        t1=1.0,
        dt0=0.1,
        y0=jnp.array([1.0, 2.0]),
    )
    options.update(kwargs)
    return lib.diffeqsolve(**options).ys


_MISUSES = {
    "dt0 pointing away from t1": lambda lib: _solve(lib, dt0=-0.1),
    "SaveAt(ts) outside [t0, t1]": lambda lib: _solve(
        lib, saveat=lib.SaveAt(ts=jnp.array([0.5, 1.5]))
    ),
    "SaveAt(ts) not sorted": lambda lib: _solve(
        lib, saveat=lib.SaveAt(ts=jnp.array([0.5, 0.2]))
    ),
    "StepTo ends differ from t0, t1": lambda lib: _solve(
        lib, dt0=None, stepsize_controller=lib.StepTo(jnp.array([0.0, 0.5, 0.8]))
    ),
    "StepTo not monotonic": lambda lib: _solve(
        lib,
        dt0=None,
        stepsize_controller=lib.StepTo(jnp.array([0.0, 0.6, 0.3, 1.0])),
    ),
    "max_steps reached": lambda lib: _solve(lib, dt0=0.001, max_steps=10),
    "ConstantStepSize with dt0=None": lambda lib: _solve(lib, dt0=None),
    "StepTo with dt0": lambda lib: _solve(
        lib, stepsize_controller=lib.StepTo(jnp.array([0.0, 0.5, 1.0]))
    ),
    "SaveAt(steps) with max_steps=None": lambda lib: _solve(
        lib, saveat=lib.SaveAt(steps=True), max_steps=None
    ),
    "empty SubSaveAt": lambda lib: lib.SubSaveAt(),
    "SaveAt(subs=..., ts=...)": lambda lib: lib.SaveAt(
        subs=lib.SubSaveAt(t1=True), ts=jnp.array([0.5])
    ),
    "BacksolveAdjoint with SaveAt(steps)": lambda lib: jax.grad(
        lambda y0: jnp.sum(
            _solve(
                lib,
                y0=y0,
                saveat=lib.SaveAt(steps=True),
                adjoint=lib.BacksolveAdjoint(),
            )
        )
    )(jnp.array([1.0, 2.0])),
    "BacksolveAdjoint with SaveAt(dense)": lambda lib: _solve(
        lib, saveat=lib.SaveAt(t1=True, dense=True), adjoint=lib.BacksolveAdjoint()
    ),
    "evaluate without dense output": lambda lib: lib.diffeqsolve(
        _decay(lib), lib.Tsit5(), 0.0, 1.0, 0.1, jnp.array([1.0])
    ).evaluate(0.5),
    "jvp through RecursiveCheckpointAdjoint": lambda lib: jax.jvp(
        lambda y0: _solve(lib, y0=y0), (jnp.array([1.0, 2.0]),), (jnp.ones(2),)
    ),
}


@pytest.mark.parametrize("name", list(_MISUSES))
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_same_exception_class_as_diffrax(name, jit):
    """Where Diffrax raises, we raise an exception of the same class or a
    subclass of it (so that Diffrax code catching the error still catches it),
    with the inputs concrete and under `jax.jit` (traced)."""
    misuse = _MISUSES[name]

    def run(lib):
        if jit:
            return eqx.filter_jit(lambda: misuse(lib))()
        return misuse(lib)

    theirs = _raised(lambda: run(diffrax))
    ours = _raised(lambda: run(jd))
    assert isinstance(ours, type(theirs)), (type(ours), type(theirs), str(ours))


def test_known_invalid_values_are_value_errors_too():
    # Found before compiling, they are also `ValueError`s (as documented).
    with pytest.raises(ValueError, match="points away"):
        _solve(jd, dt0=-0.1)
    with pytest.raises(eqx.EquinoxRuntimeError, match="inside"):
        _solve(jd, saveat=jd.SaveAt(ts=jnp.array([0.5, 1.5])))


# ---------------------------------------------------------------- the state's dtype


@pytest.mark.parametrize(
    "y0",
    [
        1,
        True,
        jnp.array([1, 2]),
        np.array([True, False]),
        1.0,
        jnp.asarray(1.0),  # weakly typed
        {"a": 1, "b": (jnp.arange(3), 2.5)},
    ],
    ids=["int", "bool", "int-array", "bool-array", "float", "weak-array", "pytree"],
)
@pytest.mark.parametrize("time_dtype", [jnp.float32, jnp.float64])
def test_state_promotion_equals_diffrax(y0, time_dtype):
    """Integers, booleans and Python numbers are solved in the dtype Diffrax
    chooses (promoted with the time dtype), with the same values."""

    def solve(lib):
        return lib.diffeqsolve(
            lib.ODETerm(lambda t, y, args: jax.tree.map(lambda x: -x, y)),
            lib.Heun(),
            time_dtype(0.0),
            time_dtype(1.0),
            time_dtype(0.1),
            y0,
        ).ys

    ours, theirs = solve(jd), solve(diffrax)
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_integer_times_and_state():
    # `diffeqsolve(..., 0, 1, 0.1, 1)`: everything an integer but dt0.
    sol = jd.diffeqsolve(_decay(jd), jd.Tsit5(), 0, 1, 0.1, 1)
    assert jnp.issubdtype(sol.ys.dtype, jnp.floating)
    np.testing.assert_allclose(sol.ys, [np.exp(-1.0)], rtol=1e-6)


# ---------------------------------------------------------------- wrapped solvers


@pytest.mark.parametrize(
    "wrapped, cls",
    [
        ("HalfSolver(Euler)", "Euler"),
        ("HalfSolver(Euler)", "Heun"),
        ("HalfSolver(Euler)", "HalfSolver"),
        ("HalfSolver(Euler)", "AbstractAdaptiveSolver"),
        ("HalfSolver(Euler)", "AbstractRungeKutta"),
        ("HalfSolver(Tsit5)", "AbstractRungeKutta"),
        ("HalfSolver(Tsit5)", "Tsit5"),
        ("HalfSolver(Tsit5)", "Dopri5"),
        ("HalfSolver(HalfSolver(Heun))", "Heun"),
    ],
)
def test_wrapped_solver_isinstance_equals_diffrax(wrapped, cls):
    def build(lib):
        solver = wrapped
        inner = solver[solver.rindex("(") + 1 : solver.index(")")]
        result = getattr(lib, inner)()
        for _ in range(solver.count("HalfSolver")):
            result = lib.HalfSolver(result)
        return isinstance(result, getattr(lib, cls))

    assert build(jd) == build(diffrax)


def test_reversible_adjoint_still_wraps_a_half_solver():
    """The library's own capability checks look at the wrapper itself:
    `HalfSolver(ReversibleHeun())` passes `isinstance(..., ReversibleHeun)` but
    has no `backward_step`, so `ReversibleAdjoint` wraps it in `Reversible`."""
    solver = jd.HalfSolver(jd.ReversibleHeun())
    assert isinstance(solver, jd.AbstractReversibleSolver)
    prepared = jd.ReversibleAdjoint().prepare_solver(solver)
    assert type(prepared) is jd.Reversible


# ---------------------------------------------------------------- tolerances


@pytest.mark.parametrize(
    "rtol, atol, message",
    [
        (-1e-3, 1e-6, "non-negative"),
        (1e-3, -1e-6, "non-negative"),
        (0.0, 0.0, "rtol > 0` or `atol > 0"),
        (float("nan"), 1e-6, "finite"),
        (jnp.asarray(-1e-3), 1e-6, "non-negative"),
    ],
)
def test_bad_tolerances(rtol, atol, message):
    """Diffrax accepts these silently; here they are errors."""
    with pytest.raises(ValueError, match=message):
        jd.PIDController(rtol=rtol, atol=atol)


def test_bad_tolerances_traced():
    @jax.jit
    def solve(rtol):
        return _solve(
            jd, dt0=None, stepsize_controller=jd.PIDController(rtol=rtol, atol=0.0)
        )

    np.testing.assert_allclose(solve(1e-6), [[np.exp(-1), 2 * np.exp(-1)]], rtol=1e-5)
    with pytest.raises(Exception, match="tolerances"):
        jax.block_until_ready(solve(0.0))


# ---------------------------------------------------------------- scan_kind


@pytest.mark.parametrize("scan_kind", [None, "lax", "checkpointed", "bounded"])
def test_scan_kind_accepted(scan_kind):
    for name in ("Heun", "Midpoint", "Ralston", "Bosh3", "Tsit5", "Dopri5", "Dopri8"):
        ours = getattr(jd, name)(scan_kind=scan_kind)
        theirs = getattr(diffrax, name)(scan_kind=scan_kind)
        assert ours.scan_kind == theirs.scan_kind == scan_kind
    with pytest.raises(ValueError, match="scan_kind"):
        jd.Tsit5(scan_kind="unrolled")  # pyright: ignore[reportArgumentType]


def test_hessian_through_scan_kind_bounded():
    """The Diffrax recipe for Hessians (forward over reverse mode through
    `DirectAdjoint`, with `scan_kind="bounded"`) gives the same Hessian as
    Diffrax, which is the exact one to the tolerance."""

    def final(lib, params):
        k, c = params[0], params[1]
        sol = lib.diffeqsolve(
            lib.ODETerm(lambda t, y, args: -args[0] * y + args[1] * jnp.sin(t)),
            lib.Tsit5(scan_kind="bounded"),
            0.0,
            2.0,
            None,
            jnp.array(1.0),
            (k, c),
            stepsize_controller=lib.PIDController(rtol=1e-10, atol=1e-10),
            adjoint=lib.DirectAdjoint(),
            max_steps=512,
        )
        return sol.ys[0]

    params = jnp.array([0.7, 0.3])
    ours = jax.hessian(lambda p: final(jd, p))(params)
    theirs = jax.hessian(lambda p: final(diffrax, p))(params)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9)
    # y(2) = e^{-2k} + c g(k) with g linear in c: d2/dc2 = 0; d2/dk2 of the
    # homogeneous part is 4 e^{-2k} plus c g''(k).
    assert abs(float(ours[1, 1])) < 1e-9
    np.testing.assert_allclose(ours, ours.T, rtol=1e-9, atol=1e-12)

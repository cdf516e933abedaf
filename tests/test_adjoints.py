"""Adjoints: gradients against central finite differences, against each other,
under `vmap`, in forward mode and to second order; their errors."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiffeq as jd

Y0 = jnp.array([1.0, 0.5])
K = jnp.array([2.0, 0.3])
TS = jnp.linspace(0.0, 2.0, 7)


def _vdp(t, y, k):
    return jnp.stack([y[1], -k[0] * y[0] - k[1] * y[1] * (1 - y[0] ** 2)])


CONFIGS = {
    "Tsit5+PID": (jd.Tsit5(), jd.PIDController(rtol=1e-8, atol=1e-8), None),
    "Dopri5+constant": (jd.Dopri5(), jd.ConstantStepSize(), 0.05),
    "Heun+constant": (jd.Heun(), jd.ConstantStepSize(), 0.02),
}


def _loss(y0, k, adjoint, config):
    solver, controller, dt0 = CONFIGS[config]
    sol = jd.diffeqsolve(
        jd.ODETerm(_vdp),
        solver,
        0.0,
        2.0,
        dt0,
        y0,
        k,
        saveat=jd.SaveAt(ts=TS),
        stepsize_controller=controller,
        adjoint=adjoint,
        max_steps=256,
    )
    return jnp.sum(sol.ys**2 * jnp.arange(1.0, 8.0)[:, None])


_value = jax.jit(_loss, static_argnums=(2, 3))
_grad = jax.jit(jax.grad(_loss, argnums=(0, 1)), static_argnums=(2, 3))


def _finite_differences(config, eps=1e-6):
    def fd(f, x):
        return np.array(
            [(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in np.eye(x.shape[0])]
        )

    fm = jd.ForwardMode()
    return (
        fd(lambda y: _value(y, K, fm, config), Y0),
        fd(lambda k: _value(Y0, k, fm, config), K),
    )


ADJOINTS = {
    "recursive": jd.RecursiveCheckpointAdjoint(),
    "recursive(3)": jd.RecursiveCheckpointAdjoint(checkpoints=3),
    "direct": jd.DirectAdjoint(),
    "backsolve": jd.BacksolveAdjoint(),
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def config_and_fd(request):
    return request.param, _finite_differences(request.param)


@pytest.mark.parametrize("name", list(ADJOINTS))
def test_gradient_matches_finite_differences(config_and_fd, name):
    config, (fd_y0, fd_k) = config_and_fd
    g_y0, g_k = _grad(Y0, K, ADJOINTS[name], config)
    # Backsolve's gradient is that of the exact solution: as accurate as the
    # solves, not to rounding. With adaptive steps the others' gradient holds
    # the accepted steps fixed, which finite differences do not.
    if name == "backsolve":
        rtol = 1e-4 if config != "Tsit5+PID" else 1e-5
    else:
        rtol = 1e-6 if config == "Tsit5+PID" else 1e-7
    np.testing.assert_allclose(g_y0, fd_y0, rtol=rtol)
    np.testing.assert_allclose(g_k, fd_k, rtol=rtol)


def test_discrete_adjoints_agree_to_rounding(config_and_fd):
    """Checkpointing (any number of checkpoints) and the bounded loop
    differentiate the same operations: equal gradients up to rounding."""
    config, _ = config_and_fd
    reference = _grad(Y0, K, ADJOINTS["recursive"], config)
    for name in ("recursive(3)", "direct"):
        got = _grad(Y0, K, ADJOINTS[name], config)
        for a, b in zip(got, reference):
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)


def test_forward_mode_jacobians():
    """`jacfwd` with `ForwardMode` and `DirectAdjoint` equals `jacrev` with the
    default adjoint."""

    def final(k, adjoint):
        return jd.diffeqsolve(
            jd.ODETerm(_vdp),
            jd.Tsit5(),
            0.0,
            1.0,
            0.05,
            Y0,
            k,
            adjoint=adjoint,
            max_steps=64,
        ).ys[0]

    reverse = jax.jacrev(final)(K, jd.RecursiveCheckpointAdjoint())
    for adjoint in (jd.ForwardMode(), jd.DirectAdjoint()):
        np.testing.assert_allclose(
            jax.jacfwd(final)(K, adjoint), reverse, rtol=1e-12, atol=1e-14
        )


def test_hessian_with_direct_adjoint():
    def loss(k):
        sol = jd.diffeqsolve(
            jd.ODETerm(_vdp),
            jd.Heun(),
            0.0,
            1.0,
            0.05,
            Y0,
            k,
            adjoint=jd.DirectAdjoint(),
            max_steps=32,
        )
        return jnp.sum(sol.ys**2)

    hessian = jax.hessian(loss)(K)
    eps = 1e-5
    grad = jax.grad(loss)
    fd = np.array(
        [(grad(K + eps * e) - grad(K - eps * e)) / (2 * eps) for e in np.eye(2)]
    )
    np.testing.assert_allclose(hessian, fd, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(hessian, hessian.T, rtol=1e-12)


@pytest.mark.parametrize("name", ["recursive", "backsolve"])
def test_vmap_of_grad_and_grad_of_vmap(name):
    adjoint = ADJOINTS[name]
    y0s = jnp.stack([Y0, 1.5 * Y0, -Y0])
    grad_y0 = jax.grad(_loss)
    per_lane = jax.vmap(lambda y0: grad_y0(y0, K, adjoint, "Tsit5+PID"))(y0s)
    for y0, g in zip(y0s, per_lane):
        np.testing.assert_allclose(g, grad_y0(y0, K, adjoint, "Tsit5+PID"), rtol=1e-10)
    summed = jax.grad(
        lambda k: jnp.sum(jax.vmap(lambda y0: _loss(y0, k, adjoint, "Tsit5+PID"))(y0s))
    )(K)
    expected = sum(
        jax.grad(_loss, argnums=1)(y0, K, adjoint, "Tsit5+PID") for y0 in y0s
    )
    np.testing.assert_allclose(summed, expected, rtol=1e-10)


class _Field(eqx.Module):
    weight: jax.Array

    def __call__(self, t, y, args):
        return jnp.tanh(self.weight @ y) - 0.1 * y


@pytest.mark.parametrize("name", ["recursive", "direct", "backsolve"])
def test_module_parameters_and_closed_over_arrays(name):
    """Parameters of an `equinox.Module` vector field, and an array the vector
    field's function closes over, get the same gradient as through `args`."""
    weight = jnp.array([[0.3, -1.0], [0.8, 0.1]])
    adjoint = ADJOINTS[name]

    def solve(term, args=None):
        sol = jd.diffeqsolve(
            term, jd.Tsit5(), 0.0, 1.0, 0.05, Y0, args, adjoint=adjoint
        )
        return jnp.sum(sol.ys**2)

    via_args = jax.grad(
        lambda w: solve(jd.ODETerm(lambda t, y, w: _Field(w)(t, y, None)), w)
    )(weight)
    via_module = jax.grad(lambda w: solve(jd.ODETerm(_Field(w))))(weight)
    via_closure = jax.grad(
        lambda w: solve(jd.ODETerm(lambda t, y, args: _Field(w)(t, y, args)))
    )(weight)
    np.testing.assert_allclose(via_module, via_args, rtol=1e-10)
    np.testing.assert_allclose(via_closure, via_args, rtol=1e-10)


@pytest.mark.parametrize("name", ["recursive", "direct", "backsolve"])
def test_gradient_wrt_t0_t1_and_ts(name):
    """Gradients with respect to the interval and the output times equal the
    forward-mode derivatives."""
    adjoint = ADJOINTS[name]

    def loss(t0, t1, ts, adjoint):
        sol = jd.diffeqsolve(
            jd.ODETerm(lambda t, y, k: jnp.stack([y[1], -k[0] * y[0]])),
            jd.Tsit5(),
            t0,
            t1,
            0.01,
            Y0,
            K,
            saveat=jd.SaveAt(ts=ts, t1=True),
            adjoint=adjoint,
            max_steps=512,
        )
        return jnp.sum(sol.ys**2 * jnp.arange(1.0, 4.0)[:, None])

    args = (0.1, 1.5, jnp.array([0.3, 0.9]))
    reverse = jax.grad(loss, argnums=(0, 1, 2))(*args, adjoint)
    forward = jax.jacfwd(loss, argnums=(0, 1, 2))(*args, jd.ForwardMode())
    rtol = 1e-6 if name == "backsolve" else 1e-10
    for a, b in zip(reverse, forward):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-10)


def test_implicit_adjoint_steady_state():
    """dy/dt = c - y^3 settles at y* = c^(1/3): dy*/dc = c^(-2/3) / 3."""

    def steady(c):
        sol = jd.diffeqsolve(
            jd.ODETerm(lambda t, y, c: c - y**3),
            jd.Tsit5(),
            0.0,
            50.0,
            0.05,
            jnp.array([0.5, 1.0]),
            c,
            adjoint=jd.ImplicitAdjoint(),
            max_steps=2000,
        )
        return sol.ys[0]

    c = jnp.array([2.0, 3.0])
    expected = np.diag(np.asarray(c) ** (-2 / 3) / 3)
    np.testing.assert_allclose(jax.jacrev(steady)(c), expected, rtol=1e-8)
    np.testing.assert_allclose(jax.jacfwd(steady)(c), expected, rtol=1e-8)


# ------------------------------------------------------------------ errors


def _solve(adjoint, k=0.5, **kwargs):
    kwargs.setdefault("saveat", jd.SaveAt(t1=True))
    return jd.diffeqsolve(
        jd.ODETerm(lambda t, y, k: -k * y),
        jd.Tsit5(),
        0.0,
        1.0,
        0.1,
        jnp.array(1.0),
        k,
        adjoint=adjoint,
        **kwargs,
    )


def test_reverse_mode_with_forward_mode_raises():
    with pytest.raises(ValueError, match="Reverse-mode differentiation does not work"):
        jax.grad(lambda k: _solve(jd.ForwardMode(), k).ys[0])(0.5)


@pytest.mark.parametrize(
    "saveat, message",
    [
        (jd.SaveAt(steps=True), "steps"),
        (jd.SaveAt(t1=True, dense=True), "dense"),
    ],
)
def test_backsolve_unsupported_saveat(saveat, message):
    # Both a ValueError and, as in Diffrax, a NotImplementedError.
    with pytest.raises(ValueError, match=message):
        _solve(jd.BacksolveAdjoint(), saveat=saveat)
    with pytest.raises(NotImplementedError, match=message):
        _solve(jd.BacksolveAdjoint(), saveat=saveat)


def test_implicit_needs_t1_only():
    with pytest.raises(ValueError, match="SaveAt\\(t1=True\\)"):
        _solve(jd.ImplicitAdjoint(), saveat=jd.SaveAt(ts=jnp.array([0.5])))


def test_unbounded_reverse_mode_needs_checkpoints():
    # A solve that is not differentiated runs without a bound.
    _solve(jd.RecursiveCheckpointAdjoint(), max_steps=None)
    with pytest.raises(ValueError, match="checkpoints"):
        jax.grad(
            lambda k: _solve(jd.RecursiveCheckpointAdjoint(), k, max_steps=None).ys[0]
        )(0.5)
    adjoint = jd.RecursiveCheckpointAdjoint(checkpoints=4)
    g = jax.grad(lambda k: _solve(adjoint, k, max_steps=None).ys[0])(0.5)
    np.testing.assert_allclose(g, -np.exp(-0.5), rtol=1e-6)
    with pytest.raises(ValueError, match="max_steps"):
        _solve(jd.DirectAdjoint(), max_steps=None)


def test_bad_checkpoints():
    with pytest.raises(ValueError, match="checkpoints"):
        jd.RecursiveCheckpointAdjoint(checkpoints=0)


@pytest.mark.parametrize(
    "saveat",
    [
        jd.SaveAt(steps=True, ts=jnp.linspace(0.0, 1.0, 4)),
        jd.SaveAt(dense=True),
        jd.SaveAt(subs=[jd.SubSaveAt(ts=jnp.array([0.2, 0.7])), jd.SubSaveAt(t1=True)]),
    ],
    ids=["steps+ts", "dense", "subs"],
)
def test_output_buffers(saveat):
    """Outputs written inside the loop (the checkpointed loop's buffers) get the
    same gradient as forward mode computes."""

    def loss(k, adjoint):
        sol = jd.diffeqsolve(
            jd.ODETerm(_vdp),
            jd.Tsit5(),
            0.0,
            1.0,
            None,
            Y0,
            k,
            saveat=saveat,
            stepsize_controller=jd.PIDController(rtol=1e-6, atol=1e-6),
            adjoint=adjoint,
            max_steps=64,
        )
        if saveat.dense:
            return jnp.sum(sol.evaluate(0.37) ** 2)
        ys = jax.tree_util.tree_leaves(sol.ys)
        return sum(jnp.sum(jnp.where(jnp.isfinite(y), y, 0.0) ** 2) for y in ys)

    reverse = jax.grad(loss)(K, jd.RecursiveCheckpointAdjoint(checkpoints=3))
    forward = jax.jacfwd(loss)(K, jd.ForwardMode())
    np.testing.assert_allclose(reverse, forward, rtol=1e-10)


@pytest.mark.parametrize("name", ["recursive", "reversible"])
def test_output_time_on_a_step_end(name):
    """An output time that is exactly a step's end (0.3 with dt 0.01 from 0.1)
    still moves along the solution: d y(s) / ds = f(s, y(s))."""
    adjoint = {
        "recursive": jd.RecursiveCheckpointAdjoint(),
        "reversible": jd.ReversibleAdjoint(),
    }[name]

    def output(s):
        sol = jd.diffeqsolve(
            jd.ODETerm(lambda t, y, args: -y + jnp.sin(t)),
            jd.Heun(),
            0.1,
            1.0,
            0.01,
            jnp.array(1.0),
            saveat=jd.SaveAt(ts=jnp.stack([s])),
            adjoint=adjoint,
            max_steps=128,
        )
        return sol.ys[0]

    s = jnp.asarray(0.3)
    slope = jax.grad(output)(s)
    expected = -output(s) + jnp.sin(s)
    np.testing.assert_allclose(slope, expected, rtol=1e-3)

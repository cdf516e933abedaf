"""`ReversibleAdjoint` and the reversible solvers: exact inversion of a step,
gradients equal to those of `RecursiveCheckpointAdjoint` through the same
forward solve, under `vmap`, drift and `checkpoint_every`, and the errors of
unsupported combinations."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiffeq as jd

Y0 = jnp.array([1.0, 0.5])
K = jnp.array([1.2, 0.7])
TS = jnp.array([0.0, 0.13, 0.5, 0.5, 1.1, 1.6, 2.0])


class _Field(eqx.Module):
    """A damped pendulum with a parameter of its own (differentiated through the
    term) and `args`."""

    w: jax.Array

    def __call__(self, t, y, k):
        return jnp.stack(
            [
                k[0] * y[1] - self.w[0] * y[0],
                -k[1] * jnp.sin(y[0]) + self.w[1] * jnp.cos(t),
            ]
        )


W = jnp.array([0.1, 0.05])

CONSTANT = jd.ConstantStepSize()
PID = jd.PIDController(rtol=1e-5, atol=1e-7)
CASES = {
    "Euler": (jd.Euler(), [CONSTANT]),
    "Heun": (jd.Heun(), [CONSTANT, PID]),
    "Midpoint": (jd.Midpoint(), [CONSTANT, PID]),
    "Tsit5": (jd.Tsit5(), [CONSTANT, PID]),
    "Dopri5": (jd.Dopri5(), [CONSTANT, PID]),
    "ReversibleHeun": (jd.ReversibleHeun(), [CONSTANT, PID]),
    "LeapfrogMidpoint": (jd.LeapfrogMidpoint(), [CONSTANT]),
}
MATRIX = [(name, type(c).__name__) for name, (_, cs) in CASES.items() for c in cs]


def _as_reversible(solver):
    if isinstance(solver, jd.AbstractReversibleSolver):
        return solver
    return jd.Reversible(solver)


def _loss(y0, k, w, ts, adjoint, name, controller, saveat):
    solver = _as_reversible(CASES[name][0])
    # "all": one solve saves at t1, at `ts` and at every step (three
    # `SubSaveAt`s), so that one compilation checks all three pullbacks.
    if saveat == "all":
        saveat = jd.SaveAt(
            subs=[
                jd.SubSaveAt(t1=True),
                jd.SubSaveAt(ts=ts),
                jd.SubSaveAt(steps=True),
            ]
        )
    else:
        saveat = {
            "t1": jd.SaveAt(t1=True),
            "ts": jd.SaveAt(ts=ts),
            "steps": jd.SaveAt(steps=True),
        }[saveat]
    sol = jd.diffeqsolve(
        jd.ODETerm(_Field(w)),
        solver,
        0.0,
        2.0,
        0.05,
        y0,
        k,
        saveat=saveat,
        stepsize_controller=_controller(controller),
        adjoint=adjoint,
        max_steps=512,
    )
    total = 0.0
    for i, ys in enumerate(jax.tree_util.tree_leaves(sol.ys)):
        ys = jnp.where(jnp.isfinite(ys), ys, 0.0)  # unused `steps` rows are inf
        weights = jnp.arange(1.0, ys.shape[0] + 1.0)[:, None]
        total = total + (i + 1) * jnp.sum(weights * jnp.sin(ys))
    return total


_grad = jax.jit(
    jax.grad(_loss, argnums=(0, 1, 2, 3)),
    static_argnames=("adjoint", "name", "controller", "saveat"),
)


def _rel_error(a, b):
    a = jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(a)])
    b = jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(b)])
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


def _controller(kind):
    return {"ConstantStepSize": CONSTANT, "PIDController": PID}[kind]


@pytest.mark.parametrize("name,controller", MATRIX)
def test_gradient_equals_checkpointed_gradient(name, controller):
    """The gradient with respect to `y0`, `args`, the vector field's parameters
    and `ts`, with outputs at `t1`, `ts` and every step, equals
    `RecursiveCheckpointAdjoint`'s through the same reversible solve."""
    args = (Y0, K, W, TS)
    rev = _grad(*args, jd.ReversibleAdjoint(), name, controller, "all")
    ref = _grad(*args, jd.RecursiveCheckpointAdjoint(), name, controller, "all")
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(rev))
    assert _rel_error(rev, ref) < 1e-8
    # Every input gets a non-trivial gradient (the test would miss nothing).
    for g in rev:
        assert float(jnp.max(jnp.abs(g))) > 0


# Slow (about 30 s): every case of the matrix above already saves all three kinds.
@pytest.mark.slow
@pytest.mark.parametrize("saveat", ["t1", "ts", "steps"])
def test_each_output_kind_alone(saveat):
    args = (Y0, K, W, TS)
    rev = _grad(*args, jd.ReversibleAdjoint(), "Tsit5", "PIDController", saveat)
    ref = _grad(
        *args, jd.RecursiveCheckpointAdjoint(), "Tsit5", "PIDController", saveat
    )
    assert _rel_error(rev, ref) < 1e-8


def test_closed_over_arrays_and_semi_implicit_euler():
    """Arrays the vector fields close over are differentiated; and the
    partitioned `SemiImplicitEuler` (two terms, tuple state)."""

    def loss(c, y0, adjoint):
        terms = (
            jd.ODETerm(lambda t, p, args: c[0] * p),
            jd.ODETerm(lambda t, q, args: -c[1] * jnp.sin(q)),
        )
        sol = jd.diffeqsolve(
            terms,
            jd.SemiImplicitEuler(),
            0.0,
            3.0,
            0.01,
            y0,
            saveat=jd.SaveAt(ts=jnp.linspace(0.5, 3.0, 6)),
            adjoint=adjoint,
            max_steps=400,
        )
        return jnp.sum(sol.ys[0] ** 2) + jnp.sum(jnp.cos(sol.ys[1]))

    c = jnp.array([1.0, 2.0])
    y0 = (jnp.array(0.3), jnp.array(-0.2))
    grad = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)
    rev = grad(c, y0, jd.ReversibleAdjoint())
    ref = grad(c, y0, jd.RecursiveCheckpointAdjoint())
    assert _rel_error(rev, ref) < 1e-8


def _lane_loss(k, adjoint):
    def one(y0):
        sol = jd.diffeqsolve(
            jd.ODETerm(_Field(W)),
            jd.Reversible(jd.Tsit5()),
            0.0,
            2.0,
            0.05,
            y0,
            k,
            saveat=jd.SaveAt(ts=TS, t1=True),
            stepsize_controller=PID,
            adjoint=adjoint,
            max_steps=128,
            throw=False,
        )
        return jnp.sum(jnp.sin(sol.ys))

    return one


def test_grad_of_vmap_and_vmap_of_grad():
    """Under `grad(vmap(...))` the shared parameters' cotangent is the sum over
    the batch; under `vmap(grad(...))` each lane gets its own. Lanes take
    different numbers of steps."""
    y0s = jnp.array([[1.0, 0.5], [0.2, -0.1], [2.5, 1.0]])
    results = {}
    for name, adjoint in [
        ("rev", jd.ReversibleAdjoint()),
        ("ref", jd.RecursiveCheckpointAdjoint()),
    ]:

        def summed(y0s, k, adjoint=adjoint):
            return jnp.sum(jax.vmap(_lane_loss(k, adjoint))(y0s))

        def per_lane(y0, k, adjoint=adjoint):
            return _lane_loss(k, adjoint)(y0)

        results[name] = (
            jax.jit(jax.grad(summed, argnums=(0, 1)))(y0s, K),
            jax.jit(jax.vmap(jax.grad(per_lane, argnums=(0, 1)), (0, None)))(y0s, K),
        )
    (gv_rev, vg_rev), (gv_ref, vg_ref) = results["rev"], results["ref"]
    assert _rel_error(gv_rev, gv_ref) < 1e-8
    assert _rel_error(vg_rev, vg_ref) < 1e-8
    # Per-lane parameter gradients differ between lanes and sum to the total.
    assert float(jnp.max(jnp.abs(vg_rev[1][0] - vg_rev[1][1]))) > 1e-3
    np.testing.assert_allclose(jnp.sum(vg_rev[1], axis=0), gv_rev[1], rtol=1e-10)


def _drift_loss(a, adjoint, coupling=0.999):
    # A decaying linear problem over 10,000 Euler steps: reconstruction runs the
    # decay backwards (amplifying rounding by exp(a t1)) and divides by the
    # coupling at every step (another coupling^-n).
    sol = jd.diffeqsolve(
        jd.ODETerm(lambda t, y, a: -a * y),
        jd.Reversible(jd.Euler(), coupling=coupling),
        0.0,
        10.0,
        1e-3,
        jnp.array([1.0, -0.5]),
        a,
        adjoint=adjoint,
        max_steps=10_000,
    )
    return jnp.sum(sol.ys)


def test_drift_and_checkpoint_every():
    a = jnp.array(2.0)
    grad = jax.jit(jax.grad(_drift_loss), static_argnums=1)
    ref = grad(a, jd.RecursiveCheckpointAdjoint())
    drift = abs(float(grad(a, jd.ReversibleAdjoint()) - ref) / float(ref))
    bounded = abs(
        float(grad(a, jd.ReversibleAdjoint(checkpoint_every=100)) - ref) / float(ref)
    )
    # The drift is real without checkpoints (so the check below means something)
    # and stored states every 100 steps bound it.
    assert drift > 1e-7, drift
    assert bounded <= 1e-8, bounded


@pytest.mark.parametrize(
    "solver",
    [jd.Euler(), jd.Tsit5(), jd.ReversibleHeun(), jd.LeapfrogMidpoint()],
    ids=lambda s: type(s).__name__,
)
def test_backward_step_inverts_step(solver):
    solver = _as_reversible(solver)
    term = jd.ODETerm(_Field(W))
    y0 = Y0
    t0, t1 = 0.3, 0.42
    state = solver.init(term, t0, t1, y0, K)
    y1, _, _, state1, _ = solver.step(term, t0, t1, y0, K, state, False)
    y0_back, _, state_back, _ = solver.backward_step(term, t0, t1, y1, K, state1, False)
    np.testing.assert_allclose(y0_back, y0, rtol=1e-14, atol=1e-14)
    for a, b in zip(
        jax.tree_util.tree_leaves(state_back), jax.tree_util.tree_leaves(state)
    ):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-14)


def test_reversible_adjoint_does_not_modify_the_solver():
    solver = jd.Tsit5()
    before = (solver.tableau.fsal, eqx.tree_equal(solver, jd.Tsit5()))
    _grad(Y0, K, W, TS, jd.ReversibleAdjoint(), "Tsit5", "PIDController", "t1")
    assert before == (True, True)
    assert solver.tableau.fsal and eqx.tree_equal(solver, jd.Tsit5())
    # The forward solve with `ReversibleAdjoint` is the one of `Reversible(solver)`.
    kw = dict(max_steps=64, saveat=jd.SaveAt(ts=TS))
    term = jd.ODETerm(_Field(W))
    a = jd.diffeqsolve(term, solver, 0.0, 2.0, 0.05, Y0, K, **kw)
    b = jd.diffeqsolve(
        term, solver, 0.0, 2.0, 0.05, Y0, K, adjoint=jd.ReversibleAdjoint(), **kw
    )
    c = jd.diffeqsolve(term, jd.Reversible(solver), 0.0, 2.0, 0.05, Y0, K, **kw)
    np.testing.assert_array_equal(b.ys, c.ys)
    assert float(jnp.max(jnp.abs(a.ys - b.ys))) < 1e-6


def _solve(**kwargs):
    settings = dict(
        terms=jd.ODETerm(lambda t, y, args: -y),
        solver=jd.Tsit5(),
        t0=0.0,
        t1=1.0,
        dt0=0.1,
        y0=jnp.array(1.0),
        adjoint=jd.ReversibleAdjoint(),
    )
    settings.update(kwargs)
    return jd.diffeqsolve(**settings)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(saveat=jd.SaveAt(dense=True)), r"SaveAt\(dense=True\)"),
        (dict(max_steps=None), "needs `max_steps`"),
        (
            dict(
                stepsize_controller=jd.PIDController(
                    rtol=1e-6, atol=1e-6, jump_ts=jnp.array([0.5])
                )
            ),
            "jump_ts",
        ),
        (
            dict(
                solver=jd.LeapfrogMidpoint(),
                stepsize_controller=jd.StepTo(ts=jnp.array([0.0, 0.3, 1.0])),
                dt0=None,
            ),
            "constant step sizes only",
        ),
    ],
)
def test_unsupported_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _solve(**kwargs)


def test_events_raise():
    with pytest.raises((ValueError, NotImplementedError), match="[Ee]vents"):
        _solve(event=object())


@pytest.mark.parametrize("wrt", ["t0", "t1", "dt0"])
def test_gradient_with_respect_to_times_raises(wrt):
    def loss(x):
        kwargs = dict(t0=0.0, t1=1.0, dt0=0.1)
        kwargs[wrt] = x
        return _solve(**kwargs).ys[0]

    with pytest.raises(ValueError, match="does not differentiate with respect to"):
        jax.grad(loss)(jnp.asarray(dict(t0=0.0, t1=1.0, dt0=0.1)[wrt]))


def test_unwrappable_solvers_and_bad_arguments_raise():
    with pytest.raises(ValueError, match="already reversible"):
        jd.Reversible(jd.ReversibleHeun())
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        jd.Reversible(jd.Euler(), coupling=1.5)
    with pytest.raises(ValueError, match="checkpoint_every"):
        jd.ReversibleAdjoint(checkpoint_every=0)
    with pytest.raises(TypeError, match="wraps a solver"):
        jd.Reversible("Euler")  # pyright: ignore


def test_forward_mode_raises():
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda y: _solve(y0=y).ys, (jnp.array(1.0),), (jnp.array(1.0),))


class _Neural(eqx.Module):
    """A small neural vector field: its weights outweigh the state, so the
    backward pass defers their cotangents and pulls them back in blocks."""

    w_in: jax.Array
    w_hidden: jax.Array
    w_out: jax.Array

    def __call__(self, t, y, args):
        h = jnp.tanh(self.w_in @ y + jnp.sin(t))
        return self.w_out @ jax.nn.softplus(self.w_hidden @ h) - args * y


def _neural_loss(field, y0, t1, adjoint):
    dtype = y0.dtype
    sol = jd.diffeqsolve(
        jd.ODETerm(field),
        jd.Reversible(jd.Heun()),
        jnp.zeros((), dtype),
        t1,
        jnp.asarray(0.05, dtype),
        y0,
        jnp.asarray(0.3, dtype),
        saveat=jd.SaveAt(ts=jnp.linspace(0.0, 1.0, 5, dtype=dtype) * t1, t1=True),
        adjoint=adjoint,
        max_steps=128,
    )
    return jnp.sum(jnp.sin(sol.ys))


@pytest.mark.parametrize(
    "dtype", [jnp.float64, pytest.param(jnp.float32, marks=pytest.mark.slow)]
)
def test_block_pulled_parameter_cotangents(dtype, monkeypatch):
    """More steps than one block (40 and 70, and a lane with none), alone and
    under `grad(vmap(...))`: equal to checkpointing through the same solve."""
    from jaxdiffeq._adjoint import reversible_backward

    taken = []
    inner = reversible_backward.deferral

    def spy(*args):
        found = inner(*args)
        taken.append(found is not None)
        return found

    monkeypatch.setattr(reversible_backward, "deferral", spy)
    rng = np.random.default_rng(1)
    width = 128
    field = _Neural(
        jnp.asarray(rng.normal(size=(width, 2)), dtype),
        jnp.asarray(rng.normal(size=(width, width)) / width, dtype),
        jnp.asarray(0.3 * rng.normal(size=(2, width)) / width, dtype),
    )
    y0s = jnp.asarray([[0.4, -0.3], [1.0, 0.2], [0.1, 0.1]], dtype)
    t1s = jnp.asarray([2.0, 3.5, 0.0], dtype)

    def total(field, y0s, adjoint):
        lanes = jax.vmap(_neural_loss, in_axes=(None, 0, 0, None))
        return jnp.sum(lanes(field, y0s, t1s, adjoint))

    grad_one = jax.jit(jax.grad(_neural_loss, argnums=(0, 1)), static_argnums=3)
    grad_all = jax.jit(jax.grad(total, argnums=(0, 1)), static_argnums=2)
    rev, ref = jd.ReversibleAdjoint(), jd.RecursiveCheckpointAdjoint()
    tol = 1e-4 if dtype == jnp.float32 else 1e-9
    one = grad_one(field, y0s[1], t1s[1], rev)
    assert _rel_error(one, grad_one(field, y0s[1], t1s[1], ref)) < tol
    assert _rel_error(grad_all(field, y0s, rev), grad_all(field, y0s, ref)) < tol
    assert len(taken) >= 2 and all(taken)


def _heat(t, y, k):
    inner = y[2:] - 2 * y[1:-1] + y[:-2]
    return k * jnp.concatenate([y[1:2] - y[:1], inner, y[-2:-1] - y[-1:]]) - 0.1 * y


@pytest.mark.parametrize("controller", ["ConstantStepSize", "PIDController"])
def test_large_state_gradient_equals_checkpointed_gradient(controller):
    """A state of 3 x 4096 points (`_rows.LARGE` a lane: the step times reach
    the backward step as values): the gradient with respect to `y0` and `args`
    equals `RecursiveCheckpointAdjoint`'s through the same reversible solve."""
    x = jnp.linspace(0.0, 3.0, 3 * 4096)
    y0 = jnp.sin(x) + 0.3 * jnp.cos(40 * x)

    def loss(y0, k, adjoint):
        sol = jd.diffeqsolve(
            jd.ODETerm(_heat),
            jd.Reversible(jd.Heun()),
            0.0,
            0.3,
            0.01,
            y0,
            k,
            saveat=jd.SaveAt(ts=jnp.asarray([0.1, 0.2, 0.3])),
            stepsize_controller=_controller(controller),
            adjoint=adjoint,
            max_steps=64,
        )
        return jnp.sum(jnp.sin(sol.ys))

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)
    # Mild diffusion: the reconstruction of a strongly contracting solve on
    # the way back amplifies rounding (`k = 20` here: a 50% difference in
    # d/dk, with or without the large-state form).
    k = jnp.asarray(2.0)
    rev = grad(y0, k, jd.ReversibleAdjoint())
    ref = grad(y0, k, jd.RecursiveCheckpointAdjoint())
    assert _rel_error(rev, ref) < 1e-9

"""The batch-aware backward passes (the checkpointed loop's and
`ReversibleAdjoint`'s): under `grad(vmap(...))` one backward loop runs over all
lanes and sums the cotangents of shared parameters inside each step. Their
gradients must equal per-lane gradients summed (and `vmap(grad(...))` a loop of
gradients), whichever of parameters and initial states are batched, with lanes
that take different numbers of steps (one takes none), in float32 and
float64."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiffeq as jd

LANES = 5
WIDTH = 16


class _Field(eqx.Module):
    w_in: jax.Array
    w_out: jax.Array

    def __call__(self, t, y, args):
        hidden = jnp.tanh(self.w_in @ y + args * jnp.sin(t))
        return self.w_out @ hidden - 0.3 * y


def _problem(dtype):
    rng = np.random.default_rng(0)
    field = _Field(
        jnp.asarray(rng.normal(size=(WIDTH, 2)), dtype),
        jnp.asarray(0.5 * rng.normal(size=(2, WIDTH)), dtype),
    )
    y0s = jnp.asarray(rng.uniform(-1, 1, size=(LANES, 2)), dtype)
    # Different end times: the lanes take different numbers of (constant) steps,
    # and the last one none at all.
    t1s = jnp.asarray([1.0, 2.5, 0.7, 1.6, 0.0], dtype)
    return field, y0s, t1s


def _loss(field, y0, t1, adjoint, solver=jd.Heun()):
    ts = jnp.linspace(0.0, 1.0, 7, dtype=y0.dtype) * t1
    sol = jd.diffeqsolve(
        jd.ODETerm(field),
        solver,
        jnp.zeros((), y0.dtype),
        t1,
        jnp.asarray(0.1, y0.dtype),
        y0,
        jnp.asarray(0.4, y0.dtype),
        saveat=jd.SaveAt(ts=ts, t1=True),
        adjoint=adjoint,
        max_steps=256,
    )
    return jnp.sum(jnp.sin(sol.ys))


_grad = jax.jit(jax.grad(_loss, argnums=(0, 1)), static_argnums=3)


def _loop_of_grads(field, y0s, t1s, adjoint, field_batched):
    grads = []
    for i in range(LANES):
        f = jax.tree.map(lambda x, i=i: x[i], field) if field_batched else field
        grads.append(_grad(f, y0s[i], t1s[i], adjoint))
    return grads


def _close(a, b, dtype):
    # Relative to the largest entry: the lanes' sums are added in another order.
    rtol = 1e-4 if dtype == jnp.float32 else 1e-9
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(
            x, y, rtol=rtol, atol=rtol * float(jnp.max(jnp.abs(y)))
        )


ADJOINTS = {
    "static": jd.RecursiveCheckpointAdjoint(),
    # Too few checkpoints for the static schedule: the dynamic rule, batched
    # by JAX lane by lane.
    "dynamic": jd.RecursiveCheckpointAdjoint(checkpoints=4),
    # Heun made reversible (`Reversible(Heun())`): its own discretisation, so
    # the per-lane references are `ReversibleAdjoint` gradients too.
    "reversible": jd.ReversibleAdjoint(),
}


# Each case compiles two gradients (about 5 s each on the CI machine): the
# default suite runs one per dtype, `make test-slow` the rest.
_SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "dtype, schedule",
    [
        (jnp.float64, "static"),
        pytest.param(jnp.float32, "static", marks=_SLOW),
        pytest.param(jnp.float64, "dynamic", marks=_SLOW),
        pytest.param(jnp.float32, "dynamic", marks=_SLOW),
        (jnp.float64, "reversible"),
        pytest.param(jnp.float32, "reversible", marks=_SLOW),
    ],
)
def test_grad_of_vmap_shared_parameters(dtype, schedule):
    adjoint = ADJOINTS[schedule]
    field, y0s, t1s = _problem(dtype)

    def total(field, y0s):
        lanes = jax.vmap(_loss, in_axes=(None, 0, 0, None))
        return jnp.sum(lanes(field, y0s, t1s, adjoint))

    g_field, g_y0s = jax.jit(jax.grad(total, argnums=(0, 1)))(field, y0s)
    per_lane = _loop_of_grads(field, y0s, t1s, adjoint, field_batched=False)
    summed = jax.tree.map(lambda *g: sum(g), *[g[0] for g in per_lane])
    _close(g_field, summed, dtype)
    _close(g_y0s, jnp.stack([g[1] for g in per_lane]), dtype)
    # The lane with no steps has the identity's gradient for its `y0`.
    np.testing.assert_allclose(g_y0s[-1], 8 * jnp.cos(y0s[-1]), rtol=1e-5)


@pytest.mark.parametrize(
    "dtype, schedule",
    [
        (jnp.float32, "static"),
        pytest.param(jnp.float64, "static", marks=_SLOW),
        (jnp.float32, "reversible"),
        pytest.param(jnp.float64, "reversible", marks=_SLOW),
    ],
)
def test_grad_of_vmap_batched_parameters(dtype, schedule):
    """Batched parameters and batched `y0`."""
    adjoint = ADJOINTS[schedule]
    field, y0s, t1s = _problem(dtype)
    scales = jnp.linspace(0.5, 1.5, LANES, dtype=dtype)
    fields = jax.tree.map(lambda x: scales.reshape(-1, 1, 1) * x[None], field)
    per_lane = _loop_of_grads(fields, y0s, t1s, adjoint, field_batched=True)

    def both(fields, y0s):
        lanes = jax.vmap(_loss, in_axes=(0, 0, 0, None))
        return jnp.sum(lanes(fields, y0s, t1s, adjoint))

    g_fields, g_y0s = jax.jit(jax.grad(both, argnums=(0, 1)))(fields, y0s)
    _close(
        g_fields,
        jax.tree.map(lambda *g: jnp.stack(g), *[g[0] for g in per_lane]),
        dtype,
    )
    _close(g_y0s, jnp.stack([g[1] for g in per_lane]), dtype)


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["static", "reversible"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_grad_of_vmap_batched_parameters_shared_y0(dtype, schedule):
    """Batched parameters with an unbatched `y0`."""
    adjoint = ADJOINTS[schedule]
    field, y0s, t1s = _problem(dtype)
    scales = jnp.linspace(0.5, 1.5, LANES, dtype=dtype)
    fields = jax.tree.map(lambda x: scales.reshape(-1, 1, 1) * x[None], field)
    y0 = y0s[0]

    def shared_y0(fields, y0):
        lanes = jax.vmap(_loss, in_axes=(0, None, 0, None))
        return jnp.sum(lanes(fields, y0, t1s, adjoint))

    g_fields, g_y0 = jax.jit(jax.grad(shared_y0, argnums=(0, 1)))(fields, y0)
    y0s_same = jnp.broadcast_to(y0, y0s.shape)
    per_lane = _loop_of_grads(fields, y0s_same, t1s, adjoint, field_batched=True)
    _close(
        g_fields,
        jax.tree.map(lambda *g: jnp.stack(g), *[g[0] for g in per_lane]),
        dtype,
    )
    _close(g_y0, sum(g[1] for g in per_lane), dtype)


@pytest.mark.parametrize(
    "dtype, schedule",
    [
        (jnp.float64, "static"),
        pytest.param(jnp.float32, "static", marks=_SLOW),
        (jnp.float32, "reversible"),
        pytest.param(jnp.float64, "reversible", marks=_SLOW),
    ],
)
def test_vmap_of_grad_gives_each_lane_its_gradient(dtype, schedule):
    adjoint = ADJOINTS[schedule]
    field, y0s, t1s = _problem(dtype)
    grad = jax.grad(_loss, argnums=(0, 1))
    g_field, g_y0s = jax.jit(
        jax.vmap(grad, in_axes=(None, 0, 0, None)), static_argnums=3
    )(field, y0s, t1s, adjoint)
    per_lane = _loop_of_grads(field, y0s, t1s, adjoint, field_batched=False)
    _close(
        g_field, jax.tree.map(lambda *g: jnp.stack(g), *[g[0] for g in per_lane]), dtype
    )
    _close(g_y0s, jnp.stack([g[1] for g in per_lane]), dtype)


def _shapes(jaxpr, found):
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            found.add(tuple(getattr(v.aval, "shape", ())))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    _shapes(sub.jaxpr, found)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    _shapes(sub, found)
    return found


@pytest.mark.parametrize("schedule", ["static", "reversible"])
def test_shared_parameter_cotangent_is_not_per_lane(schedule):
    """Under `grad(vmap(...))` no intermediate holds one copy of a shared
    weight matrix per lane: the cotangents are summed inside each step (JAX's
    own batching of the backward rule builds a `lanes x weights` array)."""
    field, y0s, t1s = _problem(jnp.float64)
    adjoint = ADJOINTS[schedule]

    def total(field):
        lanes = jax.vmap(_loss, in_axes=(None, 0, 0, None))
        return jnp.sum(lanes(field, y0s, t1s, adjoint))

    shapes = _shapes(jax.make_jaxpr(jax.grad(total))(field).jaxpr, set())
    assert (WIDTH, 2) in shapes
    assert (LANES, WIDTH, 2) not in shapes
    assert (LANES, 2, WIDTH) not in shapes

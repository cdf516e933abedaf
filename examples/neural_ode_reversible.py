"""Train a neural ODE with optax and `ReversibleAdjoint`: exact gradients of the
computed solution in memory that does not grow with the number of steps.

The data are trajectories of a damped oscillator, `y'' = -y - 0.1 y'`, from a
batch of initial conditions; the model is `dy/dt = MLP(y)`, solved with Tsit5
(which `ReversibleAdjoint` wraps in `Reversible`) and adaptive steps; the loss
compares the solutions at 20 times with the data.

Run: `python examples/neural_ode_reversible.py` (prints the loss as it falls;
`--steps N` to train longer).
"""

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax

import jaxdiffeq as jd

jax.config.update("jax_enable_x64", True)

TS = jnp.linspace(0.0, 4.0, 20)


def oscillator(t, y, args):
    return jnp.stack([y[1], -y[0] - 0.1 * y[1]])


def solve(vector_field, y0, rtol, atol, **kwargs):
    """The solution at `TS`: Tsit5 with adaptive steps on [0, 4]."""
    sol = jd.diffeqsolve(
        jd.ODETerm(vector_field),
        jd.Tsit5(),
        0.0,
        4.0,
        0.1,
        y0,
        saveat=jd.SaveAt(ts=TS),
        stepsize_controller=jd.PIDController(rtol=rtol, atol=atol),
        **kwargs,
    )
    return sol.ys


def make_data(key, batch=32):
    y0s = jr.uniform(key, (batch, 2), minval=-1.0, maxval=1.0)
    return y0s, jax.vmap(lambda y0: solve(oscillator, y0, 1e-8, 1e-8))(y0s)


class NeuralODE(eqx.Module):
    mlp: eqx.nn.MLP

    def __init__(self, key):
        self.mlp = eqx.nn.MLP(2, 2, 32, 2, activation=jnp.tanh, key=key)

    def __call__(self, t, y, args):
        return self.mlp(y)

    def solve(self, y0):
        # Memory constant in the number of steps; the gradient is that of the
        # (reversible) solve itself. See docs/choosing-an-adjoint.md.
        return solve(
            self, y0, 1e-5, 1e-7, adjoint=jd.ReversibleAdjoint(), max_steps=1024
        )


def main(num_steps):
    data_key, model_key = jr.split(jr.key(0))
    y0s, ys = make_data(data_key)
    model = NeuralODE(model_key)
    optimiser = optax.adam(3e-3)
    opt_state = optimiser.init(eqx.filter(model, eqx.is_inexact_array))

    @eqx.filter_value_and_grad
    def loss(model):
        predicted = jax.vmap(model.solve)(y0s)
        return jnp.mean((predicted - ys) ** 2)

    @eqx.filter_jit
    def train_step(model, opt_state):
        value, grads = loss(model)
        # optax's Adam mixes Python floats with int32 step counts, which strict
        # dtype promotion refuses; jaxdiffeq itself runs under either mode.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimiser.update(grads, opt_state, model)
        return eqx.apply_updates(model, updates), opt_state, value

    losses = []
    for step in range(num_steps):
        model, opt_state, value = train_step(model, opt_state)
        losses.append(float(value))
        if step % 10 == 0 or step == num_steps - 1:
            print(f"step {step:4d}  loss {losses[-1]:.5f}")
    print(f"loss {losses[0]:.5f} -> {losses[-1]:.5f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=40)
    # `parse_known_args`: the test suite runs this file under its own arguments.
    main(parser.parse_known_args()[0].steps)

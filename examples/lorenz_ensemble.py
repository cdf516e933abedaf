"""Solve an ensemble of Lorenz systems with `vmap`, save at fixed times, and compare
independent step sizes with one step size shared across the batch (`unvmap_dt`).

Run: `python examples/lorenz_ensemble.py` (prints a small table).
"""

import time

import jax
import jax.numpy as jnp

import jaxdiffeq as jd

jax.config.update("jax_enable_x64", True)


def lorenz(t, y, args):
    sigma, rho, beta = args
    x, v, z = y[0], y[1], y[2]
    return jnp.stack([sigma * (v - x), x * (rho - z) - v, x * v - beta * z])


def make_solver(unvmap_dt: bool):
    controller = jd.PIDController(rtol=1e-6, atol=1e-6, unvmap_dt=unvmap_dt)
    saveat = jd.SaveAt(ts=jnp.linspace(0.0, 5.0, 51))

    @jax.jit
    @jax.vmap
    def solve(y0):
        sol = jd.diffeqsolve(
            jd.ODETerm(lorenz),
            jd.Tsit5(),
            t0=0.0,
            t1=5.0,
            dt0=0.01,
            y0=y0,
            args=(10.0, 28.0, 8.0 / 3.0),
            saveat=saveat,
            stepsize_controller=controller,
            max_steps=100_000,
            throw=False,  # under vmap, report failures per lane instead of raising
        )
        return sol.ys, sol.stats["num_steps"], sol.result.value

    return solve


def main():
    key = jax.random.PRNGKey(0)
    y0 = jnp.ones((1, 3)) + 0.1 * jax.random.normal(key, (256, 3))
    for unvmap_dt in (False, True):
        solve = make_solver(unvmap_dt)
        ys, num_steps, result = jax.block_until_ready(solve(y0))
        start = time.perf_counter()
        jax.block_until_ready(solve(y0))
        elapsed = time.perf_counter() - start
        print(
            f"unvmap_dt={unvmap_dt!s:5}  steps per lane: min {int(num_steps.min())}, "
            f"max {int(num_steps.max())}  all successful: {bool((result == 0).all())}"
            f"  run time {elapsed * 1e3:.1f} ms  final x of lane 0: {float(ys[0, -1, 0]):.6f}"
        )


if __name__ == "__main__":
    main()

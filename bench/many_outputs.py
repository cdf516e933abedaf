"""Many saved times: ours against Diffrax 0.7.2 as the number of `SaveAt(ts)`
outputs grows (case (g) of `bench/forward.py` and of `bench/gradients.py`; also
runs alone).

    .venv/bin/python bench/many_outputs.py            # up to 10^5 outputs (minutes)
    .venv/bin/python bench/many_outputs.py --quick    # up to 10^4, few repeats

* Lorenz, Tsit5 + PIDController(1e-6) on [0, 10] (about 340 steps), float64,
  `SaveAt(ts)` with 10 to 10^5 times: the forward solve and the gradient of the
  sum of the outputs with respect to `y0` (`RecursiveCheckpointAdjoint`), alone
  and under `vmap` over 16 initial states.
* A small neural ODE (MLP 2 -> 64 -> 64 -> 2, softplus, tanh output), Tsit5 +
  PIDController(rtol 1e-3, atol 1e-6), float32, `vmap` over a batch of 32,
  mean-square loss against data at 10 or 100 saved times on [0, 1]: the
  gradient with respect to the MLP (and the forward solve).

Prints ours / Diffrax per case (measured in this run, the libraries timed
alternately), and the cost per extra output of each library (the slope of time
against the number of outputs), and writes `bench/results/many_outputs.json`.
"""

import argparse
import json
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_enable_compilation_cache", False)

import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
from common import (  # noqa: E402
    environment,
    lorenz,
    ratio,
    summary,
    time_interleaved,
)

import jaxdiffeq as jd  # noqa: E402

LIBS = {"ours": jd, "diffrax": diffrax}
RESULTS_PATH = Path(__file__).parent / "results" / "many_outputs.json"
TARGET = 0.7  # ours / Diffrax (issue 12, item 3)
LORENZ_BATCH = 16
NODE_BATCH = 32


def lorenz_fn(lib, n_saves, gradient, batched):
    ts = jnp.linspace(0.0, 10.0, n_saves)

    def solve(y0):
        return lib.diffeqsolve(
            lib.ODETerm(lorenz),
            lib.Tsit5(),
            0.0,
            10.0,
            0.01,
            y0,
            saveat=lib.SaveAt(ts=ts),
            stepsize_controller=lib.PIDController(rtol=1e-6, atol=1e-6),
        ).ys

    if batched:
        solve = jax.vmap(solve)
    if gradient:
        return jax.jit(jax.grad(lambda y0: jnp.sum(solve(y0))))
    return jax.jit(solve)


class MLPField(eqx.Module):
    mlp: eqx.nn.MLP

    def __init__(self, key):
        self.mlp = eqx.nn.MLP(
            2,
            2,
            64,
            2,
            activation=jax.nn.softplus,
            final_activation=jnp.tanh,
            key=key,
        )

    def __call__(self, t, y, args):
        return self.mlp(y)


def node_problem(n_saves):
    """The model, the batch of initial states and the data, in float32."""
    key_model, key_y0 = jr.split(jr.key(0))
    model = MLPField(key_model)
    model = jax.tree.map(
        lambda x: x.astype(jnp.float32) if eqx.is_inexact_array(x) else x, model
    )
    y0s = jr.uniform(key_y0, (NODE_BATCH, 2), jnp.float32, -0.6, 0.6)
    ts = jnp.linspace(0.0, 1.0, n_saves, dtype=jnp.float32)
    circle = 0.5 * jnp.stack([jnp.cos(ts), jnp.sin(ts)], -1)
    data = jnp.broadcast_to(circle, (NODE_BATCH, n_saves, 2))
    return model, y0s, ts, data


def node_fn(lib, ts, gradient):
    def solve(model, y0):
        return lib.diffeqsolve(
            lib.ODETerm(model),
            lib.Tsit5(),
            ts[0],
            ts[-1],
            jnp.asarray(0.1, ts.dtype),
            y0,
            saveat=lib.SaveAt(ts=ts),
            stepsize_controller=lib.PIDController(rtol=1e-3, atol=1e-6),
        ).ys

    def loss(model, y0s, data):
        ys = jax.vmap(solve, in_axes=(None, 0))(model, y0s)
        return jnp.mean((ys - data) ** 2)

    if gradient:
        return eqx.filter_jit(eqx.filter_value_and_grad(loss))
    return eqx.filter_jit(loss)


def timed(fns, arg, repeats, min_sample_s):
    samples, _ = time_interleaved(fns, arg, repeats, min_sample_s)
    times = {name: summary(s) for name, s in samples.items()}
    return {"times": times, "ratio": ratio(times, "ours", "diffrax")}


def lorenz_rows(quick, repeats, min_sample_s, parts):
    sizes = [10, 100, 1_000, 10_000] + ([] if quick else [100_000])
    rows = []
    for gradient in parts:
        for batched in (False, True):
            for n in sizes:
                label = ("gradient" if gradient else "forward") + (
                    f" vmap {LORENZ_BATCH}" if batched else ""
                )
                print(f"  lorenz {label} {n}", file=sys.stderr, flush=True)
                y0 = jnp.asarray([1.0, 1.0, 1.0])
                if batched:
                    y0 = y0 + 0.01 * jnp.arange(LORENZ_BATCH)[:, None]
                fns = {
                    name: lorenz_fn(lib, n, gradient, batched)
                    for name, lib in LIBS.items()
                }
                res = timed(fns, y0, repeats, min_sample_s)
                rows.append({"problem": "lorenz", "case": label, "n_saves": n, **res})
    return rows


def node_rows(repeats, min_sample_s, parts):
    rows = []
    for gradient in parts:
        for n in (10, 100):
            label = "gradient" if gradient else "forward"
            print(f"  neural ODE {label} {n}", file=sys.stderr, flush=True)
            model, y0s, ts, data = node_problem(n)
            fns = {
                name: (lambda a, f=node_fn(lib, ts, gradient): f(*a))
                for name, lib in LIBS.items()
            }
            res = timed(fns, (model, y0s, data), repeats, min_sample_s)
            rows.append(
                {
                    "problem": f"neural ODE f32 batch {NODE_BATCH}",
                    "case": label,
                    "n_saves": n,
                    **res,
                }
            )
    return rows


def slopes(rows):
    """Per (problem, case, library): seconds per extra output, between the
    smallest and the largest number of outputs."""
    out = {}
    for row in rows:
        out.setdefault(f"{row['problem']} {row['case']}", []).append(row)
    result = {}
    for key, group in out.items():
        lo, hi = group[0], group[-1]
        result[key] = {
            name: (hi["times"][name]["median_s"] - lo["times"][name]["median_s"])
            / (hi["n_saves"] - lo["n_saves"])
            for name in LIBS
        }
    return result


def report(res):
    print("(g) many saved times: SaveAt(ts), ours / Diffrax (target <= 0.7)")
    for row in res["rows"]:
        paired = row["ratio"]["paired"]
        flag = "" if paired <= TARGET else "  MISS"
        print(
            f"    {row['problem']:22s} {row['case']:18s} n={row['n_saves']:>7d}  "
            f"ours {row['times']['ours']['median_s'] * 1e3:9.3f} ms  "
            f"ratio {paired:5.2f}{flag}"
        )
    print("    cost per extra output (median time slope)")
    for key, slope in res["slopes"].items():
        print(
            f"    {key:42s} ours {slope['ours'] * 1e6:8.3f} us  "
            f"Diffrax {slope['diffrax'] * 1e6:8.3f} us"
        )


def run_case(cfg, parts=(False, True)):
    """The rows of `parts` (False: forward solves, True: gradients)."""
    repeats, min_sample_s = (3, 0.005) if cfg.quick else (9, 0.02)
    rows = lorenz_rows(cfg.quick, repeats, min_sample_s, parts)
    rows += node_rows(repeats, min_sample_s, parts)
    return {"rows": rows, "slopes": slopes(rows), "target": TARGET}


def run_forward(cfg):
    """Case (g) of `bench/forward.py`: the forward solves."""
    return run_case(cfg, parts=(False,))


def run_gradients(cfg):
    """Case (g) of `bench/gradients.py`: the gradients."""
    return run_case(cfg, parts=(True,))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    cfg = parser.parse_args()
    res = run_case(cfg)
    report(res)
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    cfg.output.write_text(
        json.dumps({"meta": environment(quick=cfg.quick), "results": res}, indent=1)
    )
    print(f"wrote {cfg.output}")


if __name__ == "__main__":
    main()

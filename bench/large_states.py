"""Large states: the heat equation by the method of lines, ours against Diffrax 0.7.2
across state sizes (case (f) of `bench/forward.py`; also runs alone).

    .venv/bin/python bench/large_states.py            # full sweep (minutes)
    .venv/bin/python bench/large_states.py --quick    # sizes up to 10^5, few repeats
    .venv/bin/python bench/large_states.py --gradients  # the gradient sweep

1-D: a 3-point stencil on n points, 2-D: a 5-point stencil on an m x m grid. Each
solve is 100 constant steps (or Tsit5 + PIDController 1e-6), SaveAt(t1=True), in
float64 and float32. Prints ours / Diffrax per solver and size (measured in this
run, the libraries timed alternately) and the cost growth per 10x state size
(linear is 10), and writes `bench/results/large_states.json`. With
`--gradients` (case (f) of `bench/gradients.py`): the gradient of the 1-D solve
with respect to `y0`, ours checkpointed and reversible against Diffrax's
checkpointing, 10^2 to 10^6 points, float64 and float32 (writes
`bench/results/large_state_gradients.json`).
"""

import argparse
import json
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_enable_compilation_cache", False)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from common import environment, ratio, summary, time_interleaved  # noqa: E402

import jaxdiffeq as jd  # noqa: E402

LIBS = {"ours": jd, "diffrax": diffrax}
RESULTS_PATH = Path(__file__).parent / "results" / "large_states.json"
NUM_STEPS = 100
DT = 1e-3
TARGET = 0.8  # ours / Diffrax, every solver and size (issue 12)
SOLVERS = ["Euler", "Heun", "Bosh3", "Tsit5", "Dopri5", "Dopri8"]


def heat_1d(t, y, args):
    del t
    inner = y[2:] - 2 * y[1:-1] + y[:-2]
    return args * jnp.concatenate([y[1:2] - y[:1], inner, y[-2:-1] - y[-1:]])


def heat_2d(t, y, args):
    del t
    padded = jnp.pad(y, 1, mode="edge")
    lap = (
        padded[2:, 1:-1]
        + padded[:-2, 1:-1]
        + padded[1:-1, 2:]
        + padded[1:-1, :-2]
        - 4 * y
    )
    return args * lap


def _solve_fn(lib, vf, solver, adaptive, dtype):
    kappa = jnp.asarray(0.1, dtype)
    controller = (
        lib.PIDController(rtol=1e-6, atol=1e-6) if adaptive else lib.ConstantStepSize()
    )

    def solve(y0):
        sol = lib.diffeqsolve(
            lib.ODETerm(vf),
            getattr(lib, solver)(),
            0.0,
            NUM_STEPS * DT,
            DT,
            y0,
            kappa,
            stepsize_controller=controller,
            max_steps=100 * NUM_STEPS,
        )
        return sol.ys

    return jax.jit(solve)


def _initial_state(shape, dtype):
    grid = [jnp.linspace(0.0, 3.0, n, dtype=dtype) for n in shape]
    if len(shape) == 1:
        return jnp.sin(grid[0])
    return jnp.sin(grid[0])[:, None] * jnp.cos(grid[1])[None, :]


def one_case(vf, shape, solver, adaptive, dtype, repeats, min_sample_s):
    y0 = _initial_state(shape, dtype)
    fns = {
        name: _solve_fn(lib, vf, solver, adaptive, dtype) for name, lib in LIBS.items()
    }
    samples, _ = time_interleaved(fns, y0, repeats, min_sample_s)
    times = {name: summary(s) for name, s in samples.items()}
    return {"times": times, "ratio": ratio(times, "ours", "diffrax")}


def sweep(quick):
    sizes = [10, 100, 1_000, 10_000, 100_000] + ([] if quick else [1_000_000])
    grids = [32, 316] + ([] if quick else [1000])
    repeats, min_sample_s = (3, 0.005) if quick else (7, 0.02)
    rows = []

    def run(label, vf, shape, solver, adaptive, dtype):
        print(
            f"  {label} {solver} {shape} {dtype.__name__}", file=sys.stderr, flush=True
        )
        res = one_case(vf, shape, solver, adaptive, dtype, repeats, min_sample_s)
        rows.append(
            {
                "problem": label,
                "size": int(jnp.prod(jnp.asarray(shape))),
                "solver": solver + (" + PID" if adaptive else ""),
                "dtype": dtype.__name__,
                **res,
            }
        )

    for n in sizes:
        for solver in SOLVERS:
            run("heat-1d", heat_1d, (n,), solver, False, jnp.float64)
        run("heat-1d", heat_1d, (n,), "Tsit5", True, jnp.float64)
        run("heat-1d", heat_1d, (n,), "Tsit5", False, jnp.float32)
    for m in grids:
        run("heat-2d", heat_2d, (m, m), "Tsit5", False, jnp.float64)
    return rows


def growth(rows):
    """Per (problem, solver, dtype): time ratio between consecutive sizes."""
    out = {}
    for row in rows:
        key = f"{row['problem']} {row['solver']} {row['dtype']}"
        out.setdefault(key, []).append((row["size"], row["times"]["ours"]["median_s"]))
    return {
        key: [
            {"from": a[0], "to": b[0], "time_ratio": b[1] / a[1]}
            for a, b in zip(points, points[1:])
        ]
        for key, points in out.items()
    }


def _gradient_fn(lib, solver, adjoint):
    """`y0 -> d/dy0 sum(y(t1)^2)` of the 1-D heat equation, 100 constant steps."""
    kappa = 0.1

    def loss(y0):
        sol = lib.diffeqsolve(
            lib.ODETerm(heat_1d),
            getattr(lib, solver)(),
            0.0,
            NUM_STEPS * DT,
            DT,
            y0,
            jnp.asarray(kappa, y0.dtype),
            adjoint=adjoint,
            max_steps=NUM_STEPS,
        )
        return jnp.sum(sol.ys**2)

    return jax.jit(jax.grad(loss))


def gradient_sweep(quick):
    """The gradient of a large-state solve: ours with `RecursiveCheckpointAdjoint`
    and with `ReversibleAdjoint`, both against Diffrax's checkpointing."""
    sizes = [100, 1_000, 10_000, 100_000] + ([] if quick else [1_000_000])
    repeats, min_sample_s = (3, 0.005) if quick else (7, 0.02)
    rows = []
    for dtype in (jnp.float64, jnp.float32):
        for n in sizes:
            for solver in ("Euler", "Tsit5"):
                print(
                    f"  heat-1d gradient {solver} {n} {dtype.__name__}", file=sys.stderr
                )
                fns = {
                    "ours": _gradient_fn(jd, solver, jd.RecursiveCheckpointAdjoint()),
                    "reversible": _gradient_fn(jd, solver, jd.ReversibleAdjoint()),
                    "diffrax": _gradient_fn(
                        diffrax, solver, diffrax.RecursiveCheckpointAdjoint()
                    ),
                }
                y0 = _initial_state((n,), dtype)
                samples, _ = time_interleaved(fns, y0, repeats, min_sample_s)
                times = {name: summary(s) for name, s in samples.items()}
                rows.append(
                    {
                        "problem": "heat-1d gradient",
                        "size": n,
                        "solver": solver,
                        "dtype": dtype.__name__,
                        "times": times,
                        "ratio": ratio(times, "ours", "diffrax"),
                        "ratio_reversible": ratio(times, "reversible", "diffrax"),
                    }
                )
    return rows


def run_gradients(cfg):
    """Case (f) of `bench/gradients.py`."""
    rows = gradient_sweep(cfg.quick)
    return {"rows": rows, "growth": growth(rows), "target": TARGET}


def report_gradients(res):
    print("(f) heat equation gradient d/dy0 sum(y(t1)^2), 100 constant steps")
    print(f"    ours / Diffrax checkpointing (target <= {TARGET}); ours median time")
    for row in res["rows"]:
        paired = row["ratio"]["paired"]
        flag = "" if paired <= TARGET else "  MISS"
        print(
            f"    {row['dtype']:8s} {row['solver']:6s} n={row['size']:>8d}  "
            f"{row['times']['ours']['median_s'] * 1e3:10.3f} ms  ratio {paired:5.2f}"
            f"{flag}  reversible {row['ratio_reversible']['paired']:5.2f}"
        )


def report(res):
    print("(f) heat equation, 100 constant steps (or PID 1e-6), SaveAt(t1=True)")
    print(f"    ours / Diffrax (target <= {TARGET}); ours median time")
    for row in res["rows"]:
        paired = row["ratio"]["paired"]
        flag = "" if paired <= TARGET else "  MISS"
        print(
            f"    {row['problem']:8s} {row['dtype']:8s} {row['solver']:12s} "
            f"n={row['size']:>8d}  {row['times']['ours']['median_s'] * 1e3:10.3f} ms  "
            f"ratio {paired:5.2f}{flag}"
        )


def run_case(cfg):
    rows = sweep(cfg.quick)
    return {"rows": rows, "growth": growth(rows), "target": TARGET}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--gradients", action="store_true", help="the gradient sweep")
    parser.add_argument("--output", type=Path, default=None)
    cfg = parser.parse_args()
    if cfg.gradients:
        res = run_gradients(cfg)
        report_gradients(res)
        cfg.output = cfg.output or RESULTS_PATH.with_name("large_state_gradients.json")
    else:
        res = run_case(cfg)
        report(res)
        cfg.output = cfg.output or RESULTS_PATH
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    cfg.output.write_text(
        json.dumps({"meta": environment(quick=cfg.quick), "results": res}, indent=1)
    )
    print(f"wrote {cfg.output}")


if __name__ == "__main__":
    main()

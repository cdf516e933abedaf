"""Many lanes, a batch of large states, and PyTree states of many leaves: ours
against Diffrax 0.7.2 (issue 12, item 2).

    .venv/bin/python bench/batches.py            # full sweep (minutes)
    .venv/bin/python bench/batches.py --quick    # fewer sizes and repeats

Three sweeps, Tsit5, float64 and float32, the libraries timed alternately in this
run (ratios are ours / Diffrax, paired medians; target <= 0.8):

* lanes: `vmap` of a damped oscillator (2 states, one frequency per lane) over
  1 to 10^5 lanes, PIDController 1e-6, t in [0, 10], SaveAt(t1=True);
* large batch: `vmap` over 8 lanes of the 1-D heat equation on 10^4 points
  (100 constant steps, and PIDController 1e-6);
* leaves: one solve whose state is a dict of 1 to 100 oscillators (2 states each),
  PIDController 1e-6.

Writes `bench/results/batches.json`.
"""

import argparse
import json
import sys
from functools import partial
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_enable_compilation_cache", False)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from common import environment, ratio, summary, time_interleaved  # noqa: E402
from large_states import DT, NUM_STEPS, heat_1d  # noqa: E402

import jaxdiffeq as jd  # noqa: E402

LIBS = {"ours": jd, "diffrax": diffrax}
RESULTS_PATH = Path(__file__).parent / "results" / "batches.json"
TARGET = 0.8


def oscillator(t, y, omega):
    del t
    return jnp.stack([y[1], -(omega**2) * y[0] - 0.1 * y[1]])


def oscillators(t, y, omegas):
    return {k: oscillator(t, y[k], omegas[k]) for k in y}


def _pid(lib):
    return lib.PIDController(rtol=1e-6, atol=1e-6)


def lanes_fn(lib, dtype):
    def solve(omega):
        y0 = jnp.ones(2, dtype)
        sol = lib.diffeqsolve(
            lib.ODETerm(oscillator), lib.Tsit5(), 0.0, 10.0, 0.01, y0, omega,
            stepsize_controller=_pid(lib), max_steps=100_000,
        )  # fmt: skip
        return sol.ys

    return jax.jit(jax.vmap(solve))


def large_batch_fn(lib, adaptive):
    controller = _pid(lib) if adaptive else lib.ConstantStepSize()

    def solve(y0):
        sol = lib.diffeqsolve(
            lib.ODETerm(heat_1d), lib.Tsit5(), 0.0, NUM_STEPS * DT, DT, y0,
            jnp.asarray(0.1, y0.dtype), stepsize_controller=controller,
            max_steps=100 * NUM_STEPS,
        )  # fmt: skip
        return sol.ys

    return jax.jit(jax.vmap(solve))


def leaves_fn(lib, dtype):
    def solve(omegas):
        y0 = {k: jnp.ones(2, dtype) for k in omegas}
        sol = lib.diffeqsolve(
            lib.ODETerm(oscillators), lib.Tsit5(), 0.0, 10.0, 0.01, y0, omegas,
            stepsize_controller=_pid(lib), max_steps=100_000,
        )  # fmt: skip
        return sol.ys

    return jax.jit(solve)


def _row(sweep, size, dtype, make, arg, repeats, min_sample_s, **extra):
    print(f"  {sweep} {size} {dtype.__name__} {extra}", file=sys.stderr, flush=True)
    fns = {name: make(lib) for name, lib in LIBS.items()}
    samples, _ = time_interleaved(fns, arg, repeats, min_sample_s)
    times = {name: summary(s) for name, s in samples.items()}
    return {
        "sweep": sweep,
        "size": size,
        "dtype": dtype.__name__,
        **extra,
        "times": times,
        "ratio": ratio(times, "ours", "diffrax"),
    }


def sweeps(quick):
    lanes = [1, 10, 100, 1_000, 10_000] + ([] if quick else [100_000])
    leaves = [1, 10, 50, 100]
    repeats, min_sample_s = (3, 0.005) if quick else (9, 0.02)
    rows = []
    for dtype in (jnp.float64, jnp.float32):
        for b in lanes:
            omega = jnp.linspace(0.5, 2.0, b, dtype=dtype)
            rows.append(
                _row(
                    "lanes",
                    b,
                    dtype,
                    partial(lanes_fn, dtype=dtype),
                    omega,
                    repeats,
                    min_sample_s,
                )
            )
        for adaptive in (False, True):
            x = jnp.linspace(0.0, 3.0, 10_000, dtype=dtype)
            y0 = jnp.sin(x[None, :] * jnp.arange(1, 9, dtype=dtype)[:, None])
            rows.append(
                _row(
                    "large batch",
                    8 * 10_000,
                    dtype,
                    partial(large_batch_fn, adaptive=adaptive),
                    y0,
                    repeats,
                    min_sample_s,
                    adaptive=adaptive,
                )
            )
        for n in leaves:
            omegas = {
                f"x{i:03d}": jnp.asarray(0.5 + i / max(n, 1), dtype) for i in range(n)
            }
            rows.append(
                _row(
                    "leaves",
                    n,
                    dtype,
                    partial(leaves_fn, dtype=dtype),
                    omegas,
                    repeats,
                    min_sample_s,
                )
            )
    return rows


def report(rows):
    print(f"lanes, large batch, leaves: ours / Diffrax (target <= {TARGET})")
    for row in rows:
        paired = row["ratio"]["paired"]
        flag = "" if paired <= TARGET else "  MISS"
        label = row["sweep"] + (" PID" if row.get("adaptive") else "")
        print(
            f"    {label:16s} {row['dtype']:8s} size {row['size']:>7d}  "
            f"ours {row['times']['ours']['median_s'] * 1e3:9.3f} ms  "
            f"Diffrax {row['times']['diffrax']['median_s'] * 1e3:9.3f} ms  "
            f"ratio {paired:5.2f}{flag}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    cfg = parser.parse_args()
    rows = sweeps(cfg.quick)
    report(rows)
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    result = {"rows": rows, "target": TARGET}
    cfg.output.write_text(
        json.dumps({"meta": environment(quick=cfg.quick), "results": result}, indent=1)
    )
    print(f"wrote {cfg.output}")


if __name__ == "__main__":
    main()

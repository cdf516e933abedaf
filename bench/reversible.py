"""`ReversibleAdjoint` against checkpointing: ours and Diffrax 0.7.2.

Run from the repository root:

    .venv/bin/python bench/reversible.py            # full run (several minutes)
    .venv/bin/python bench/reversible.py --quick    # smoke run (few repeats)

The seeds' neural ODE (an MLP 100 -> 100 of width 100 or 1000, depth 4; Euler,
dt 0.01, 1,000 steps, `SaveAt(t1=True)`, gradient of a mean-square loss of the
`vmap`ped solutions with respect to the MLP's parameters; batch 1, 100 and 1,000
at width 100, batch 1 at width 1000; float64, and float32 as `*_f32`), timed in one
interleaved run for: ours with `ReversibleAdjoint()` (which wraps Euler in
`Reversible`, two Euler steps per step), ours with
`RecursiveCheckpointAdjoint()`, and Diffrax with `RecursiveCheckpointAdjoint()`.
Then the compiled memory (XLA's temporary bytes) of the batch-1, width-100
gradient at 100, 1,000 and 10,000 steps. Prints tables and writes
`bench/results/reversible.json` (full runs only). See `bench/README.md`.
"""

import argparse
import json
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_enable_compilation_cache", False)

import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
from common import environment, ratio, summary, time_interleaved, verdict  # noqa: E402
from gradients import DIM, VectorField, max_rel_diff, neural_ode_grad  # noqa: E402

import jaxdiffeq as jd  # noqa: E402

RESULTS_PATH = Path(__file__).parent / "results" / "reversible.json"
# name -> (width, batch, target for ours ReversibleAdjoint / Diffrax
# checkpointing, dtype); the targets are issue 13's for a CPU (0.5 at batch 1 on
# a GPU). Each case in float64, and in float32 as "<name>_f32".
CASES = {
    f"{name}{suffix}": (width, batch, target, dtype)
    for suffix, dtype in (("", jnp.float64), ("_f32", jnp.float32))
    for name, width, batch, target in (
        ("a1", 100, 1, 1.0),
        ("a100", 100, 100, 0.7),
        ("a1000", 100, 1000, 0.7),
        ("b", 1000, 1, 1.0),
    )
}
MEMORY_STEPS = (100, 1000, 10_000)
TARGET_MEMORY_GROWTH = 1.1  # temp bytes at 10,000 steps / at 100 steps


def functions():
    return {
        "reversible": neural_ode_grad(jd, jd.ReversibleAdjoint()),
        "ours_checkpointed": neural_ode_grad(jd),
        "diffrax": neural_ode_grad(diffrax),
    }


def speed_case(cfg, width, batch, target, dtype):
    model = VectorField(width, jr.PRNGKey(10))
    model = jax.tree_util.tree_map(
        lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, model
    )
    y0s = jnp.ones((batch, DIM), dtype)
    fns = {n: (lambda m, g=g: g(m, y0s)) for n, g in functions().items()}
    samples, numbers = time_interleaved(fns, model, cfg.repeats, cfg.min_sample_s)
    times = {n: summary(s) for n, s in samples.items()}
    # The reversible solve is a different (coupled) discretisation, so its
    # gradient differs from the checkpointed ones by the discretisation error;
    # ours and Diffrax's checkpointed gradients are the same numbers.
    return {
        "description": (
            f"neural ODE, MLP width {width} depth 4, Euler, 1000 steps, batch "
            f"{batch}, {jnp.dtype(dtype).name}, grad wrt MLP parameters"
        ),
        "times": times,
        "calls_per_sample": numbers,
        "ratio_reversible_diffrax": ratio(times, "reversible", "diffrax"),
        "ratio_reversible_ours_checkpointed": ratio(
            times, "reversible", "ours_checkpointed"
        ),
        "ratio_ours_checkpointed_diffrax": ratio(times, "ours_checkpointed", "diffrax"),
        "target": target,
        "max_rel_diff_checkpointed_grads": max_rel_diff(
            fns["ours_checkpointed"](model), fns["diffrax"](model)
        ),
        "max_rel_diff_reversible_vs_checkpointed": max_rel_diff(
            fns["reversible"](model), fns["ours_checkpointed"](model)
        ),
    }


def temp_bytes(grad):
    model = VectorField(100, jr.PRNGKey(10))
    params, static = eqx.partition(model, eqx.is_array)
    y0s = jnp.ones((1, DIM))

    def fn(params):
        return grad(eqx.combine(params, static), y0s)

    compiled = jax.jit(fn).lower(params).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def memory():
    rows = {}
    for steps in MEMORY_STEPS:
        grads = {
            "reversible": neural_ode_grad(jd, jd.ReversibleAdjoint(), steps),
            "ours_checkpointed": neural_ode_grad(jd, steps=steps),
            "diffrax": neural_ode_grad(diffrax, steps=steps),
        }
        rows[steps] = {n: temp_bytes(g) for n, g in grads.items()}
        print(f"memory at {steps} steps: {rows[steps]}", flush=True)
    first, last = rows[MEMORY_STEPS[0]], rows[MEMORY_STEPS[-1]]
    growth = {n: last[n] / first[n] for n in first}
    return {"temp_bytes": rows, "growth_100_to_10000": growth}


def fmt(seconds):
    return f"{seconds * 1e3:9.1f} ms"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cases", default=",".join(CASES), help="e.g. 'a1,b'")
    args = parser.parse_args()
    cfg = argparse.Namespace(repeats=3 if args.quick else 7, min_sample_s=0.02)
    wanted = [c for c in CASES if c in args.cases.split(",")]
    results = {}
    for name in wanted:
        print(f"case {name} ...", flush=True)
        results[name] = speed_case(cfg, *CASES[name])
    mem = memory()

    print(
        f"\n{'case':6} {'reversible':>12} {'ours ckpt':>12} {'Diffrax':>12} "
        f"{'rev/Dfx':>8} {'ckpt/Dfx':>9} target verdict"
    )
    for name, r in results.items():
        t = r["times"]
        value = r["ratio_reversible_diffrax"]["paired"]
        print(
            f"({name:4}) {fmt(t['reversible']['median_s'])} "
            f"{fmt(t['ours_checkpointed']['median_s'])} "
            f"{fmt(t['diffrax']['median_s'])} {value:8.2f} "
            f"{r['ratio_ours_checkpointed_diffrax']['paired']:9.2f} "
            f"<= {r['target']:<4} {verdict(value, r['target'])}"
        )
    print(f"\n{'steps':>6} {'reversible':>12} {'ours ckpt':>12} {'Diffrax':>12}  (kB)")
    for steps, row in mem["temp_bytes"].items():
        print(
            f"{steps:6d} {row['reversible'] / 1e3:12.1f} "
            f"{row['ours_checkpointed'] / 1e3:12.1f} {row['diffrax'] / 1e3:12.1f}"
        )
    growth = mem["growth_100_to_10000"]["reversible"]
    print(
        f"reversible growth 100 -> 10,000 steps: {growth:.3f} "
        f"<= {TARGET_MEMORY_GROWTH} {verdict(growth, TARGET_MEMORY_GROWTH)}"
    )
    if not args.quick and len(wanted) == len(CASES):
        RESULTS_PATH.parent.mkdir(exist_ok=True)
        payload = {"meta": environment(), "cases": results, "memory": mem}
        RESULTS_PATH.write_text(json.dumps(payload, indent=1))
        print(f"wrote {RESULTS_PATH}")


if __name__ == "__main__":
    main()

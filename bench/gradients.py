"""Gradient speed of jaxdiffeq against Diffrax 0.7.2 (and a hand-written scan).

Run from the repository root:

    .venv/bin/python bench/gradients.py            # full run (several minutes)
    .venv/bin/python bench/gradients.py --quick    # smoke run (few repeats)

Prints a table and writes `bench/results/gradients.json`. Both libraries use
`RecursiveCheckpointAdjoint()` with their default checkpoints; every ratio is
measured in this one run. See `bench/README.md`.
"""

import argparse
import json
import sys
import time
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
    lorenz_with_args,
    ratio,
    summary,
    time_interleaved,
    verdict,
)

import jaxdiffeq as jd  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import fresh_compile  # noqa: E402
import large_states  # noqa: E402
import many_outputs  # noqa: E402

LIBS = {"ours": jd, "diffrax": diffrax}
RESULTS_PATH = Path(__file__).parent / "results" / "gradients.json"
TARGET_GRAD = 0.7  # (a)-(c): ours / Diffrax
TARGET_WIDE = 0.8  # (b): checkpointed, width 1000 (issue 13)
TARGET_REV_WIDE = 0.7  # reversible at batch 100 and 1000 (issue 13)
TARGET_REV_ONE = 1.0  # reversible at batch 1 and at width 1000, on a CPU
TARGET_COMPILE = 0.6  # (d)
TARGET_SCAN = 1.3  # (e): ours / scan under jax.checkpoint
DIM, DT, T1, STEPS = 100, 0.01, 10.0, 1000


class VectorField(eqx.Module):
    """The seeds' neural ODE: an MLP 100 -> 100 of the given width, depth 4."""

    mlp: eqx.nn.MLP

    def __init__(self, width, key):
        self.mlp = eqx.nn.MLP(DIM, DIM, width, 4, key=key)

    def __call__(self, t, y, args):
        return self.mlp(y)


def neural_ode_solve(lib, adjoint=None, steps=STEPS):
    """`(model, y0) -> y(t1)`: `steps` Euler steps on [0, 10] with `adjoint`
    (`RecursiveCheckpointAdjoint()` unless given)."""
    if adjoint is None:
        adjoint = lib.RecursiveCheckpointAdjoint()

    def solve(model, y0):
        return lib.diffeqsolve(
            lib.ODETerm(model),
            lib.Euler(),
            0.0,
            T1,
            T1 / steps,
            y0,
            saveat=lib.SaveAt(t1=True),
            adjoint=adjoint,
            max_steps=steps,
        ).ys

    return solve


def neural_ode_grad(lib, adjoint=None, steps=STEPS):
    """`(model, y0s) -> (loss, grads)`: mean-square loss of the `vmap`ped
    solutions at t1 (`neural_ode_solve`), gradient with respect to the MLP's
    parameters."""
    solve = neural_ode_solve(lib, adjoint, steps)

    @eqx.filter_jit
    @eqx.filter_value_and_grad
    def loss(model, y0s):
        ys = jax.vmap(solve, in_axes=(None, 0))(model, y0s)
        return jnp.mean(ys**2)

    return loss


def neural_ode_per_lane_grad(lib, adjoint=None, steps=STEPS):
    """`(model, y0s) -> (losses, grads)`: the `vmap(grad(...))` form of
    `neural_ode_grad`, each lane's gradient of its own mean-square loss (one
    parameter gradient per lane)."""
    solve = neural_ode_solve(lib, adjoint, steps)

    @eqx.filter_value_and_grad
    def loss(model, y0):
        return jnp.mean(solve(model, y0) ** 2)

    return eqx.filter_jit(eqx.filter_vmap(loss, in_axes=(None, 0)))


LORENZ_ARGS = jnp.array([10.0, 28.0, 8.0 / 3.0])
LORENZ_Y0 = jnp.array([1.0, 1.0, 1.0])


def lorenz_grad(lib, vf=lorenz_with_args):
    """`(y0, args) -> gradients` of the sum of squares of 100 saved states, Tsit5
    with PID(1e-6, 1e-6) on [0, 10]."""
    ts = jnp.linspace(0.0, 10.0, 100)

    def loss(y0, args):
        sol = lib.diffeqsolve(
            lib.ODETerm(vf),
            lib.Tsit5(),
            0.0,
            10.0,
            0.01,
            y0,
            args,
            saveat=lib.SaveAt(ts=ts),
            stepsize_controller=lib.PIDController(rtol=1e-6, atol=1e-6),
            adjoint=lib.RecursiveCheckpointAdjoint(),
        )
        return jnp.sum(sol.ys**2)

    return jax.grad(loss, argnums=(0, 1))


def time_pair(fns, arg, cfg):
    samples, numbers = time_interleaved(fns, arg, cfg.repeats, cfg.min_sample_s)
    times = {n: summary(s) for n, s in samples.items()}
    return times, numbers


def max_rel_diff(a, b):
    a, b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return max(
        float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(y)) + 1e-300))
        for x, y in zip(a, b)
    )


def timed_case(cfg, description, fns, arg, target, reference="diffrax"):
    """Time `fns` (ours and a reference) on `arg`; the paired ratio ours/reference,
    and how far ours's gradient is from the reference's."""
    times, numbers = time_pair(fns, arg, cfg)
    return {
        "description": description,
        "times": times,
        "calls_per_sample": numbers,
        f"ratio_ours_{reference}": ratio(times, "ours", reference),
        "target": target,
        "max_rel_diff_grads": max_rel_diff(fns["ours"](arg), fns[reference](arg)),
    }


def case_neural(cfg, width, batch, dtype=jnp.float64):
    """Ours checkpointed, ours reversible and Diffrax checkpointed in one run."""
    model = VectorField(width, jr.PRNGKey(10))
    model = jax.tree_util.tree_map(
        lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, model
    )
    y0s = jnp.ones((batch, DIM), dtype)
    grads = {n: neural_ode_grad(lib) for n, lib in LIBS.items()}
    grads["ours_rev"] = neural_ode_grad(jd, jd.ReversibleAdjoint())
    fns = {n: (lambda m, g=g: g(m, y0s)) for n, g in grads.items()}
    description = (
        f"neural ODE, MLP width {width} depth 4, Euler, 1000 steps, "
        f"batch {batch}, {jnp.dtype(dtype).name}, grad wrt MLP parameters"
    )
    target = TARGET_GRAD if width == 100 else TARGET_WIDE
    result = timed_case(cfg, description, fns, model, target)
    result["ratio_ours_rev_diffrax"] = ratio(result["times"], "ours_rev", "diffrax")
    result["target_rev"] = TARGET_REV_WIDE if batch > 1 else TARGET_REV_ONE
    if width != 100:
        result["target_rev"] = TARGET_REV_ONE
    result["max_rel_diff_grads_rev"] = max_rel_diff(
        fns["ours_rev"](model), fns["diffrax"](model)
    )
    return result


def case_forms(cfg, width=100, batch=100, dtype=jnp.float32):
    """Issue 13, item 3: `grad(vmap(...))` (the mean loss of the batch) and
    `vmap(grad(...))` (one gradient per lane) at batch 100 in float32, ours
    (checkpointed and reversible) against Diffrax checkpointed, in one run."""
    model = VectorField(width, jr.PRNGKey(10))
    model = jax.tree_util.tree_map(
        lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, model
    )
    y0s = jnp.ones((batch, DIM), dtype)
    makers = {"grad_vmap": neural_ode_grad, "vmap_grad": neural_ode_per_lane_grad}
    fns = {}
    for form, make in makers.items():
        fns[f"ours_{form}"] = make(jd)
        fns[f"ours_rev_{form}"] = make(jd, jd.ReversibleAdjoint())
        fns[f"diffrax_{form}"] = make(diffrax)
    fns = {n: (lambda m, g=g: g(m, y0s)) for n, g in fns.items()}
    times, numbers = time_pair(fns, model, cfg)
    result = {
        "description": (
            f"neural ODE, MLP width {width} depth 4, Euler, 1000 steps, batch "
            f"{batch}, {jnp.dtype(dtype).name}: grad(vmap) and vmap(grad)"
        ),
        "times": times,
        "calls_per_sample": numbers,
        "target": TARGET_GRAD,
        "target_rev": TARGET_REV_WIDE,
    }
    for form in makers:
        ref = f"diffrax_{form}"
        result[f"ratio_ours_{form}"] = ratio(times, f"ours_{form}", ref)
        result[f"ratio_ours_rev_{form}"] = ratio(times, f"ours_rev_{form}", ref)
        result[f"max_rel_diff_grads_{form}"] = max_rel_diff(
            fns[f"ours_{form}"](model), fns[ref](model)
        )
    return result


def report_forms(r):
    """The rows of `case_forms`: one per form, ours / Diffrax."""
    t = r["times"]
    for form in ("grad_vmap", "vmap_grad"):
        for who, target in (("ours", r["target"]), ("ours_rev", r["target_rev"])):
            value = r[f"ratio_{who}_{form}"]["paired"]
            print(
                f"({form[:6]}) {who:8} {fmt(t[f'{who}_{form}']['median_s'])} "
                f"{fmt(t[f'diffrax_{form}']['median_s'])} {value:7.2f} "
                f"<= {target:<4} {verdict(value, target)}"
            )


def case_c(cfg):
    fns = {
        n: jax.jit(lambda a, g=lorenz_grad(lib): g(LORENZ_Y0, a))
        for n, lib in LIBS.items()
    }
    description = (
        "Lorenz, Tsit5 + PID(1e-6, 1e-6), t in [0, 10], "
        "SaveAt(ts=100), grad wrt y0 and (sigma, rho, beta)"
    )
    return timed_case(cfg, description, fns, LORENZ_ARGS, TARGET_GRAD)


def case_d(cfg):
    """Compile time of (c): tracing + XLA compile of a fresh function each time."""
    walls = {n: [] for n in LIBS}
    for r in range(cfg.compile_repeats):
        for name in list(LIBS) if r % 2 == 0 else list(LIBS)[::-1]:

            def vf(t, y, args):
                return lorenz_with_args(t, y, args)

            g = jax.jit(lambda a, g=lorenz_grad(LIBS[name], vf): g(LORENZ_Y0, a))
            start = time.perf_counter()
            g.lower(LORENZ_ARGS).compile()
            walls[name].append(time.perf_counter() - start)
    times = {n: summary(s) for n, s in walls.items()}
    return {
        "description": "compile time of (c) (lower + compile, fresh functions)",
        "times": times,
        "ratio_ours_diffrax": ratio(times, "ours", "diffrax"),
        "target": TARGET_COMPILE,
    }


def case_e(cfg):
    """1000 Euler steps of the width-100 neural ODE, forward and backward: ours
    against a `lax.scan` whose body is under `jax.checkpoint`."""
    model = VectorField(100, jr.PRNGKey(10))
    y0 = jnp.ones(DIM)

    @eqx.filter_jit
    @eqx.filter_value_and_grad
    def scan_loss(model):
        @jax.checkpoint
        def step(y, _):
            return y + DT * model(0.0, y, None), None

        y1, _ = jax.lax.scan(step, y0, None, length=STEPS)
        return jnp.mean(y1**2)

    ours = neural_ode_grad(jd)
    diffrax_grad = neural_ode_grad(diffrax)
    fns = {
        "ours": lambda m: ours(m, y0[None]),
        "scan": scan_loss,
        "diffrax": lambda m: diffrax_grad(m, y0[None]),
    }
    description = (
        "1000 Euler steps (width-100 neural ODE, batch 1), forward + "
        "backward, vs lax.scan under jax.checkpoint"
    )
    result = timed_case(cfg, description, fns, model, TARGET_SCAN, reference="scan")
    result["ratio_diffrax_scan"] = ratio(result["times"], "diffrax", "scan")
    return result


CASES = {
    **{
        f"{name}{suffix}": (
            lambda cfg, w=width, b=batch, d=dtype: case_neural(cfg, w, b, d)
        )
        for suffix, dtype in (("", jnp.float64), ("_f32", jnp.float32))
        for name, width, batch in (
            ("a1", 100, 1),
            ("a100", 100, 100),
            ("a1000", 100, 1000),
            ("b", 1000, 1),
        )
    },
    "forms_f32": case_forms,
    "c": case_c,
    "d": case_d,
    "e": case_e,
    "f": lambda cfg: large_states.run_gradients(cfg),
    "g": lambda cfg: many_outputs.run_gradients(cfg),
    "h": lambda cfg: fresh_compile.run_gradients(cfg),
}


def fmt(seconds):
    return f"{seconds * 1e3:9.2f} ms"


def print_table(results):
    print(f"\n{'case':6} {'ours':>12} {'other':>12} {'ratio':>7} target  verdict")
    for name, r in results.items():
        if name == "f":
            large_states.report_gradients(r)
            continue
        if name == "g":
            many_outputs.report(r)
            continue
        if name == "h":
            fresh_compile.report(r)
            continue
        if name == "forms_f32":
            report_forms(r)
            continue
        t = r["times"]
        if name == "e":
            key, other = "ratio_ours_scan", "scan"
        else:
            key, other = "ratio_ours_diffrax", "diffrax"
        value = r[key]["paired"] if name != "d" else r[key]["median"]
        ours = t["ours"]["median_s"]
        print(
            f"({name:4}) {fmt(ours)} {fmt(t[other]['median_s'])} {value:7.2f} "
            f"<= {r['target']:<4} {verdict(value, r['target'])}"
        )
        if "ours_rev" in t:
            rev = r["ratio_ours_rev_diffrax"]["paired"]
            print(
                f"  rev  {fmt(t['ours_rev']['median_s'])} {'':12} {rev:7.2f} "
                f"<= {r['target_rev']:<4} {verdict(rev, r['target_rev'])}"
            )
        if name == "e":
            print(f"       Diffrax / scan: {r['ratio_diffrax_scan']['paired']:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cases", default="".join(CASES), help="e.g. 'a1,c'")
    args = parser.parse_args()
    cfg = argparse.Namespace(
        quick=args.quick,
        repeats=3 if args.quick else 9,
        min_sample_s=0.02,
        compile_repeats=1 if args.quick else 3,
    )
    wanted = [c for c in CASES if c in args.cases.split(",")] or list(CASES)
    results = {}
    for name in wanted:
        print(f"case {name} ...", flush=True)
        results[name] = CASES[name](cfg)
    print_table(results)
    if not args.quick and len(wanted) == len(CASES):
        # Only a full run replaces the results file.
        RESULTS_PATH.parent.mkdir(exist_ok=True)
        meta = environment()
        RESULTS_PATH.write_text(json.dumps({"meta": meta, "cases": results}, indent=1))
        print(f"wrote {RESULTS_PATH}")


if __name__ == "__main__":
    main()

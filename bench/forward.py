"""Forward-solve speed of jaxdiffeq against Diffrax 0.7.2 (and a hand-written scan).

Run from the repository root:

    .venv/bin/python bench/forward.py            # full run (several minutes)
    .venv/bin/python bench/forward.py --quick    # smoke run (few repeats)

Prints a table and writes `bench/results/forward.json`. Every ratio is measured in
this one run (both libraries timed alternately, after compilation), because
absolute times on a shared machine drift. See `bench/README.md`.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_enable_compilation_cache", False)

import diffrax  # noqa: E402
import fresh_compile  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jaxlib  # noqa: E402
import large_states  # noqa: E402
import many_outputs  # noqa: E402
import numpy as np  # noqa: E402
from common import lorenz, ratio, summary, time_interleaved, verdict  # noqa: E402

import jaxdiffeq as jd  # noqa: E402

LIBS = {"ours": jd, "diffrax": diffrax}
RESULTS_PATH = Path(__file__).parent / "results" / "forward.json"

# Problem settings shared by cases (a), (b), (d), (e).
LORENZ_Y0 = (1.0, 1.0, 1.0)
RTOL = ATOL = 1e-6
DT0 = 0.01
# Large enough for t in [0, 100]; the same value in every adaptive case so that (e)
# compares like with like. It sizes no buffer here (SaveAt(ts) only).
ADAPTIVE_MAX_STEPS = 100_000
BATCH = 1000
# Case (c).
LINEAR_DIM = 100
FIXED_DT = 1e-3
FIXED_STEPS = 10_000
# Targets.
TARGET_SOLVE = 0.8  # (a), (b): ours / Diffrax
TARGET_SCAN = 1.1  # (c): ours / hand-written scan
TARGET_COMPILE = 0.6  # (d): ours / Diffrax
TARGET_LINEAR = 15.0  # (e): time ratio for 10x work (linear ~10, quadratic ~100)


# --------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------


def make_lorenz():
    """A fresh copy of the Lorenz vector field (a new function object, so that no
    trace or compile cache keyed on the function can be hit)."""

    def vf(t, y, args):
        return lorenz(t, y, args)

    return vf


def lorenz_solve(lib, solver_name, t1, n_saves, vf=lorenz):
    """`y0 -> sol` for the adaptive Lorenz problem, with library `lib`."""
    ts = jnp.linspace(0.0, t1, n_saves)

    def solve(y0):
        return lib.diffeqsolve(
            lib.ODETerm(vf),
            getattr(lib, solver_name)(),
            0.0,
            t1,
            DT0,
            y0,
            saveat=lib.SaveAt(ts=ts),
            stepsize_controller=lib.PIDController(rtol=RTOL, atol=ATOL),
            max_steps=ADAPTIVE_MAX_STEPS,
        )

    return solve


def step_counts(solve, y0, batched=False):
    """Accepted and rejected steps (summed over the batch, plus the largest number
    of attempted steps of one lane, which is what a vmapped loop runs)."""

    def stats(y):
        s = solve(y).stats
        return s["num_accepted_steps"], s["num_rejected_steps"]

    fn = jax.vmap(stats) if batched else stats
    acc, rej = jax.jit(fn)(y0)
    acc, rej = np.asarray(acc), np.asarray(rej)
    out = {"accepted": int(acc.sum()), "rejected": int(rej.sum())}
    if batched:
        out["max_lane_steps"] = int((acc + rej).max())
    return out


def max_abs_diff(a, b):
    return float(jnp.max(jnp.abs(jnp.asarray(a) - jnp.asarray(b))))


# --------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------


def case_a_single(cfg):
    """(a) Lorenz, one adaptive solve, 100 saved times on [0, 10]."""
    y0 = jnp.asarray(LORENZ_Y0)
    solves = {n: lorenz_solve(lib, cfg.solver, 10.0, 100) for n, lib in LIBS.items()}
    fns = {n: jax.jit(lambda y, s=s: s(y).ys) for n, s in solves.items()}
    samples, numbers = time_interleaved(fns, y0, cfg.repeats, cfg.min_sample_s)
    times = {n: summary(s) for n, s in samples.items()}
    return {
        "description": "Lorenz, adaptive PID(1e-6, 1e-6), t in [0, 10], SaveAt(ts=100)",
        "steps": {n: step_counts(s, y0) for n, s in solves.items()},
        "times": times,
        "calls_per_sample": numbers,
        "ratio_ours_diffrax": ratio(times, "ours", "diffrax"),
        "target": TARGET_SOLVE,
        "max_abs_diff_ys": max_abs_diff(fns["ours"](y0), fns["diffrax"](y0)),
    }


def batch_y0():
    rng = np.random.default_rng(0)
    return jnp.asarray(LORENZ_Y0) + 0.1 * jnp.asarray(rng.standard_normal((BATCH, 3)))


def case_b_vmap(cfg):
    """(b) (a) under `jax.vmap` over 1000 initial conditions."""
    y0 = batch_y0()
    solves = {n: lorenz_solve(lib, cfg.solver, 10.0, 100) for n, lib in LIBS.items()}
    fns = {n: jax.jit(jax.vmap(lambda y, s=s: s(y).ys)) for n, s in solves.items()}
    repeats = max(3, cfg.repeats // 2)
    samples, numbers = time_interleaved(fns, y0, repeats, cfg.min_sample_s)
    times = {n: summary(s) for n, s in samples.items()}
    return {
        "description": f"(a) under jax.vmap over {BATCH} initial conditions",
        "steps": {n: step_counts(s, y0, batched=True) for n, s in solves.items()},
        "times": times,
        "calls_per_sample": numbers,
        "ratio_ours_diffrax": ratio(times, "ours", "diffrax"),
        "target": TARGET_SOLVE,
        "max_abs_diff_ys": max_abs_diff(fns["ours"](y0), fns["diffrax"](y0)),
    }


# Tsitouras (2011) 5(4) tableau: nodes c, stage rows a, weights b (FSAL: the last
# stage is f(t1, y1)). Bosh3 (Bogacki-Shampine 3(2), also FSAL) as the fallback.
TABLEAUX = {
    "Tsit5": dict(
        c=(0.161, 0.327, 0.9, 0.9800255409045097, 1.0),
        a=(
            (0.161,),
            (-0.008480655492356989, 0.335480655492357),
            (2.897153057105493, -6.359448489975075, 4.3622954328695815),
            (
                5.325864828439257,
                -11.748883564062828,
                7.4955393428898365,
                -0.09249506636175525,
            ),
            (
                5.86145544294642,
                -12.92096931784711,
                8.159367898576159,
                -0.071584973281401,
                -0.028269050394068383,
            ),
        ),
        b=(
            0.09646076681806523,
            0.01,
            0.4798896504144996,
            1.379008574103742,
            -3.290069515436081,
            2.324710524099774,
        ),
    ),
    "Bosh3": dict(
        c=(0.5, 0.75),
        a=((0.5,), (0.0, 0.75)),
        b=(2 / 9, 1 / 3, 4 / 9),
    ),
}


def scan_solve(vf, tableau, h, n_steps):
    """`y0 -> y(t0 + n_steps h)`: fixed explicit RK steps in a `lax.scan`, written
    out stage by stage with constant coefficients, first-same-as-last."""
    c, a, b = tableau["c"], tableau["a"], tableau["b"]

    def body(carry, i):
        y, f0 = carry
        t = i * h
        ks = [f0]
        for c_i, a_i in zip(c, a):
            y_i = y + h * sum(a_ij * k for a_ij, k in zip(a_i, ks) if a_ij != 0)
            ks.append(vf(t + c_i * h, y_i, None))
        y1 = y + h * sum(b_i * k for b_i, k in zip(b, ks) if b_i != 0)
        return (y1, vf(t + h, y1, None)), None

    def solve(y0):
        (y1, _), _ = jax.lax.scan(body, (y0, vf(0.0, y0, None)), jnp.arange(n_steps))
        return y1

    return solve


def case_c_fixed(cfg):
    """(c) 10,000 fixed steps of a 100-dimensional linear ODE, vs a `lax.scan`."""
    rng = np.random.default_rng(0)
    n = LINEAR_DIM
    matrix = jnp.asarray(-np.eye(n) + 0.1 * rng.standard_normal((n, n)) / np.sqrt(n))
    y0 = jnp.asarray(rng.standard_normal(n))
    t1 = FIXED_STEPS * FIXED_DT

    def vf(t, y, args):
        del t, args
        return matrix @ y

    def lib_solve(lib):
        def solve(y):
            return lib.diffeqsolve(
                lib.ODETerm(vf),
                getattr(lib, cfg.solver)(),
                0.0,
                t1,
                FIXED_DT,
                y,
                saveat=lib.SaveAt(t1=True),
                stepsize_controller=lib.ConstantStepSize(),
                max_steps=FIXED_STEPS,
            )

        return solve

    solves = {n: lib_solve(lib) for n, lib in LIBS.items()}
    fns = {n: jax.jit(lambda y, s=s: s(y).ys[-1]) for n, s in solves.items()}
    fns["scan"] = jax.jit(scan_solve(vf, TABLEAUX[cfg.solver], FIXED_DT, FIXED_STEPS))
    repeats = max(3, cfg.repeats // 2)
    samples, numbers = time_interleaved(fns, y0, repeats, cfg.min_sample_s)
    times = {n: summary(s) for n, s in samples.items()}
    steps = {n: step_counts(s, y0) for n, s in solves.items()}
    steps["scan"] = {"accepted": FIXED_STEPS, "rejected": 0}
    return {
        "description": (
            f"{FIXED_STEPS} fixed steps (dt={FIXED_DT}) of y' = A y, dim {n}, "
            "SaveAt(t1=True)"
        ),
        "steps": steps,
        "times": times,
        "calls_per_sample": numbers,
        "ratio_ours_scan": ratio(times, "ours", "scan"),
        "ratio_ours_diffrax": ratio(times, "ours", "diffrax"),
        "ratio_diffrax_scan": ratio(times, "diffrax", "scan"),
        "target": TARGET_SCAN,
        "max_abs_diff_ys": {
            "ours_vs_scan": max_abs_diff(fns["ours"](y0), fns["scan"](y0)),
            "diffrax_vs_scan": max_abs_diff(fns["diffrax"](y0), fns["scan"](y0)),
        },
    }


def case_d_compile(cfg):
    """(d) Trace + lower + compile time of (a), fresh functions every time."""
    y0 = jnp.asarray(LORENZ_Y0)
    trials = 3
    raw = {
        n: {"lower_s": [], "compile_s": [], "total_s": [], "cpu_total_s": []}
        for n in LIBS
    }
    hlo_chars = {}
    for trial in range(trials):
        names = list(LIBS) if trial % 2 == 0 else list(LIBS)[::-1]
        for name in names:
            solve = lorenz_solve(LIBS[name], cfg.solver, 10.0, 100, vf=make_lorenz())

            def f(y, solve=solve):
                return solve(y).ys

            cpu_start = time.process_time()
            start = time.perf_counter()
            lowered = jax.jit(f).lower(y0)
            mid = time.perf_counter()
            lowered.compile()
            end = time.perf_counter()
            raw[name]["cpu_total_s"].append(time.process_time() - cpu_start)
            raw[name]["lower_s"].append(mid - start)
            raw[name]["compile_s"].append(end - mid)
            raw[name]["total_s"].append(end - start)
            hlo_chars[name] = len(lowered.as_text())
    medians = {
        n: {k: statistics.median(v) for k, v in d.items()} for n, d in raw.items()
    }
    return {
        "description": "jax.jit(f).lower(y0) (trace) + .compile() of (a), median of 3",
        "medians": medians,
        "raw": raw,
        "stablehlo_chars": hlo_chars,
        "ratio_ours_diffrax": medians["ours"]["total_s"]
        / medians["diffrax"]["total_s"],
        "ratio_ours_diffrax_cpu": medians["ours"]["cpu_total_s"]
        / medians["diffrax"]["cpu_total_s"],
        "target": TARGET_COMPILE,
    }


def case_e_growth(cfg):
    """(e) Cost grows linearly with the number of steps and of saved times."""
    y0 = jnp.asarray(LORENZ_Y0)
    variants = {
        "base": (10.0, 100),
        "10x_steps": (100.0, 100),
        "10x_saves": (10.0, 1000),
        "10x_both": (100.0, 1000),
    }
    out = {}
    for name, lib in LIBS.items():
        solves = {
            v: lorenz_solve(lib, cfg.solver, t1, n) for v, (t1, n) in variants.items()
        }
        fns = {v: jax.jit(lambda y, s=s: s(y).ys) for v, s in solves.items()}
        samples, numbers = time_interleaved(fns, y0, cfg.repeats, cfg.min_sample_s)
        times = {v: summary(s) for v, s in samples.items()}
        steps = {v: step_counts(s, y0) for v, s in solves.items()}
        base_steps = steps["base"]["accepted"] + steps["base"]["rejected"]
        out[name] = {
            "steps": steps,
            "times": times,
            "calls_per_sample": numbers,
            "time_ratio_vs_base": {
                v: times[v]["min_s"] / times["base"]["min_s"] for v in variants
            },
            "step_ratio_vs_base": {
                v: (steps[v]["accepted"] + steps[v]["rejected"]) / base_steps
                for v in variants
            },
        }
    return {
        "description": "Lorenz: t1 in {10, 100} x saves in {100, 1000}; ratio vs base",
        "variants": {v: {"t1": t1, "n_saves": n} for v, (t1, n) in variants.items()},
        "libs": out,
        "target": TARGET_LINEAR,
    }


# --------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------


def fmt_s(s):
    if s < 1e-3:
        return f"{s * 1e6:8.1f} us"
    if s < 1:
        return f"{s * 1e3:8.2f} ms"
    return f"{s:8.3f} s "


def fmt_steps(d):
    text = f"{d['accepted']}/{d['rejected']}"
    if "max_lane_steps" in d:
        text += f" (lane max {d['max_lane_steps']})"
    return text


def print_timed(title, res, names, ratios):
    print(f"\n{title}\n  {res['description']}")
    print(f"  {'':10s} {'min':>11s} {'median':>11s}   steps acc/rej")
    for n in names:
        t = res["times"][n]
        print(
            f"  {n:10s} {fmt_s(t['min_s'])} {fmt_s(t['median_s'])}"
            f"   {fmt_steps(res['steps'][n])}"
        )
    for label, key, target in ratios:
        r = res[key]
        mark = f"target <= {target}: {verdict(r['paired'], target)}" if target else ""
        print(
            f"  {label:16s} paired {r['paired']:.3f}  min {r['min']:.3f}  "
            f"median {r['median']:.3f}   {mark}"
        )
    print(f"  max |ys diff|: {res['max_abs_diff_ys']}")


def report_a(res):
    print_timed(
        "(a) single solve",
        res,
        ["ours", "diffrax"],
        [("ours/diffrax", "ratio_ours_diffrax", TARGET_SOLVE)],
    )


def report_b(res):
    print_timed(
        "(b) vmap",
        res,
        ["ours", "diffrax"],
        [("ours/diffrax", "ratio_ours_diffrax", TARGET_SOLVE)],
    )


def report_c(res):
    print_timed(
        "(c) fixed steps",
        res,
        ["ours", "diffrax", "scan"],
        [
            ("ours/scan", "ratio_ours_scan", TARGET_SCAN),
            ("ours/diffrax", "ratio_ours_diffrax", None),
            ("diffrax/scan", "ratio_diffrax_scan", None),
        ],
    )


def report_d(d):
    print(f"\n(d) compile time\n  {d['description']}")
    print(
        f"  {'':10s} {'trace+lower':>11s} {'compile':>11s} {'total':>11s} "
        f"{'CPU total':>11s}  StableHLO chars"
    )
    for n, m in d["medians"].items():
        print(
            f"  {n:10s} {fmt_s(m['lower_s'])} {fmt_s(m['compile_s'])} "
            f"{fmt_s(m['total_s'])} {fmt_s(m['cpu_total_s'])}  "
            f"{d['stablehlo_chars'][n]}"
        )
    wall, cpu = d["ratio_ours_diffrax"], d["ratio_ours_diffrax_cpu"]
    print(
        f"  ours/diffrax     wall {wall:.3f}: {verdict(wall, TARGET_COMPILE)}   "
        f"CPU {cpu:.3f}: {verdict(cpu, TARGET_COMPILE)}   (target <= {TARGET_COMPILE})"
    )


def report_e(e):
    print(f"\n(e) linear growth\n  {e['description']}")
    print(
        f"  {'':8s} {'variant':10s} {'min':>11s} {'steps acc/rej':>14s} "
        f"{'time x':>7s} {'steps x':>7s}  target time x <= {TARGET_LINEAR}"
    )
    for n, res in e["libs"].items():
        for v in e["variants"]:
            tr = res["time_ratio_vs_base"][v]
            mark = "" if v == "base" else verdict(tr, TARGET_LINEAR)
            print(
                f"  {n:8s} {v:10s} {fmt_s(res['times'][v]['min_s'])} "
                f"{fmt_steps(res['steps'][v]):>14s} {tr:7.2f} "
                f"{res['step_ratio_vs_base'][v]:7.2f}  {mark}"
            )


def report(results, meta):
    print("=" * 78)
    print(
        f"jaxdiffeq vs diffrax {meta['diffrax']} -- forward solves, float64 "
        f"(jax_enable_x64=True), solver {meta['solver']}"
    )
    print(
        f"jax {meta['jax']}, jaxlib {meta['jaxlib']}, backend {meta['backend']}, "
        f"{meta['cpu_count']} CPUs, {meta['platform']}"
    )
    print(
        f"XLA_FLAGS={meta['xla_flags']!r}; load average at start/end "
        f"{meta['loadavg_start'][0]:.1f}/{meta['loadavg_end'][0]:.1f}"
    )
    print(
        f"repeats {meta['repeats']} (quick={meta['quick']}); times per call after "
        "compilation; PASS/MISS judged on the paired ratio"
    )
    print("=" * 78)
    printers = {"a": report_a, "b": report_b, "c": report_c, "d": report_d}
    printers["e"] = report_e
    printers["f"] = large_states.report
    printers["g"] = many_outputs.report
    printers["h"] = fresh_compile.report
    for key, res in results.items():
        printers[key](res)
    print("=" * 78)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats (smoke run)")
    parser.add_argument(
        "--solver",
        default="Tsit5" if hasattr(jd, "Tsit5") else "Bosh3",
        choices=sorted(TABLEAUX),
        help="Runge-Kutta method (default Tsit5; Bosh3 if jaxdiffeq lacks Tsit5)",
    )
    parser.add_argument(
        "--cases", default="abcdef", help="which cases to run, e.g. 'ae' (default all)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    cfg = parser.parse_args()
    cfg.repeats = 3 if cfg.quick else 15
    cfg.min_sample_s = 0.005 if cfg.quick else 0.02
    if not hasattr(jd, cfg.solver):
        sys.exit(f"jaxdiffeq has no {cfg.solver}; use --solver Bosh3")

    meta = {
        "solver": cfg.solver,
        "quick": cfg.quick,
        "repeats": cfg.repeats,
        "x64": bool(jax.config.jax_enable_x64),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "diffrax": diffrax.__version__,
        "jaxdiffeq": jd.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "loadavg_start": os.getloadavg(),
    }
    cases = {
        "a": case_a_single,
        "b": case_b_vmap,
        "c": case_c_fixed,
        "d": case_d_compile,
        "e": case_e_growth,
        "f": large_states.run_case,
        "g": many_outputs.run_forward,
        "h": fresh_compile.run_forward,
    }
    results = {}
    for key, case in cases.items():
        if key not in cfg.cases:
            continue
        print(f"running ({key}) ...", file=sys.stderr, flush=True)
        results[key] = case(cfg)
    meta["loadavg_end"] = os.getloadavg()
    report(results, meta)

    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    cfg.output.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"wrote {cfg.output}")


if __name__ == "__main__":
    main()

"""Stiff problems: jaxdiffeq's implicit solvers against Diffrax 0.7.2 and SciPy.

Run from the repository root:

    .venv/bin/python bench/stiff.py                 # all problems, work-precision sweep
    .venv/bin/python bench/stiff.py --quick         # fewer repeats, no sweep
    .venv/bin/python bench/stiff.py --plot wp.png   # and the work-precision diagram
    .venv/bin/python bench/stiff.py --sizes         # only the Brusselator size sweep

Issue 14, item 9. For each problem (ROBER, HIRES, POLLU, VDPOL and the 2-D
Brusselator with 2 x 16^2 states), at its suggested tolerances
(`jaxdiffeq.problems`): ours `Kvaerno5` against Diffrax's `Kvaerno5`, timed
after compilation in one interleaved run (paired ratio of the medians, see
`common.ratio`), their compile times, accepted and rejected steps,Jacobians and factorisations (ours
counted; Diffrax's are one each per step attempt), and the error at `t1`
against the reference in units of the tolerance (`atol + rtol |reference|`);
SciPy's `Radau` and `BDF` at the same tolerances as reference rows (their wall
time: plain Python, no compilation). With the sweep: our `Kvaerno3`,
`Kvaerno5`, `Rodas4` and `Rodas5P` and Diffrax's `Kvaerno3` and `Kvaerno5` over `rtol`
from 1e-3 to 1e-8 (`atol` scaled alike), the error against the time; from it
the time of each library's fastest solver at equal error (interpolated in
log-log at five errors both reach) and their ratio. Prints tables and writes
`bench/results/stiff.json`.

Compile time is the first call as a user meets it, as in `fresh_compile.py`:
each measurement is a new Python process (the libraries alternate, the order
flipping every round; both are imported in each) that traces, lowers and
compiles the jitted solve; the ratio is the median of the paired ratios. The
`warm` column compiles a new jitted solve in this process, after the timing
runs: JAX then reuses what it traced for the libraries' inner jitted functions
(Diffrax's `diffeqsolve` is one) and one-off set-up, so that figure is lowering
and XLA's compile, not what a first call costs.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_enable_compilation_cache", False)

import diffrax  # noqa: E402
import numpy as np  # noqa: E402
from common import (  # noqa: E402
    environment,
    fresh_runs,
    ratio,
    summary,
    time_interleaved,
)
from scipy.integrate import solve_ivp  # noqa: E402

import jaxdiffeq as jd  # noqa: E402
from jaxdiffeq.problems import PROBLEMS, brusselator_2d  # noqa: E402

RESULTS_PATH = Path(__file__).parent / "results" / "stiff.json"
SIZES_PATH = Path(__file__).parent / "results" / "stiff_sizes.json"
# `--sizes`: the Brusselator on an N x N grid (2 N^2 states). Diffrax is run up
# to N = 16 (512 states, 13 s a solve): it factorises at every step attempt, and
# beyond that one solve takes minutes.
SIZES = (4, 8, 12, 16, 24, 32)
DIFFRAX_MAX_SIZE = 16
NAMES = ("rober", "hires", "pollu", "vdpol", "brusselator")
LIBS = {"ours": jd, "diffrax": diffrax}
TARGET_RUN, TARGET_COMPILE = 0.5, 0.6  # ours / Diffrax, Kvaerno5 (issue 14)
TARGET_EQUAL_ACCURACY = 0.3  # our fastest / Diffrax's fastest (issue 14)
SWEEP_SOLVERS = {
    "ours": ("Kvaerno3", "Kvaerno5", "Rodas4", "Rodas5P"),
    "diffrax": ("Kvaerno3", "Kvaerno5"),
}
SWEEP_RTOLS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
EQUAL_ACCURACY_LEVELS = 5


def solve_fn(lib, problem, solver_name, rtol, atol, solver=None):
    """A jitted `y0 -> (y(t1), accepted, rejected, success, jacobians,
    factorisations)`. Ours counts its Jacobians and factorisations
    (`Solution.stats`); Diffrax's `VeryChord` linearises and factorises once
    per step attempt, by construction, so its counts are its attempts.
    `solver`, if given, replaces `solver_name`'s default instance."""

    def solve(y0):
        sol = lib.diffeqsolve(
            lib.ODETerm(problem.f),
            getattr(lib, solver_name)() if solver is None else solver,
            problem.t0,
            problem.t1,
            None,
            y0,
            problem.args,
            stepsize_controller=lib.PIDController(rtol=rtol, atol=atol),
            max_steps=100_000,
            throw=False,
        )
        steps = sol.stats["num_steps"]
        return (
            sol.ys[-1],
            sol.stats["num_accepted_steps"],
            sol.stats["num_rejected_steps"],
            sol.result == lib.RESULTS.successful,
            sol.stats.get("num_jacobians", steps),
            sol.stats.get("num_factorisations", steps),
        )

    return jax.jit(solve)


def scaled_error(problem, y1, rtol, atol):
    if problem.reference_values is None:
        return None
    reference = np.asarray(problem.reference_values)
    return float(
        np.max(np.abs(np.asarray(y1) - reference) / (atol + rtol * np.abs(reference)))
    )


def compile_time(lib, problem, solver_name, rtol, atol):
    """Lowering and XLA's compile of a new jitted solve, in this process."""
    fn = solve_fn(lib, problem, solver_name, rtol, atol)
    y0 = problem.y0
    start = time.perf_counter()
    fn.lower(y0).compile()
    return time.perf_counter() - start


def compile_worker(lib_name, name):
    """One fresh-process measurement of the first call's trace, lowering and
    compile (`Kvaerno5`, the problem's tolerances), printed as JSON. The initial
    state is made before the clock starts: the first array of a process also
    starts JAX's CPU backend (about 0.04 s), which is not the solve's compile."""
    problem = PROBLEMS[name]
    fn = solve_fn(LIBS[lib_name], problem, "Kvaerno5", problem.rtol, problem.atol)
    y0 = jax.block_until_ready(problem.y0)
    t0 = time.perf_counter()
    traced = fn.trace(y0)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    lowered.compile()
    t3 = time.perf_counter()
    parts = dict(trace_s=t1 - t0, lower_s=t2 - t1, compile_s=t3 - t2, total_s=t3 - t0)
    print(json.dumps(parts))


def fresh_compile(name, rounds):
    """`rounds` fresh processes per library (`compile_worker`): the median
    parts of each, and the median of the paired ratios of their totals."""
    runs = fresh_runs(
        lambda lib_name: [sys.executable, __file__, "--compile-worker", lib_name, name],
        rounds,
    )
    medians = {
        n: {k: statistics.median(run[k] for run in rs) for k in rs[0]}
        for n, rs in runs.items()
    }
    ratios = [
        a["total_s"] / b["total_s"] for a, b in zip(runs["ours"], runs["diffrax"])
    ]
    return dict(runs=runs, medians=medians, ratio=statistics.median(ratios))


def scipy_row(problem, method, rtol, atol):
    f = jax.jit(problem.f)
    jac = jax.jit(jax.jacfwd(problem.f, argnums=1))
    start = time.perf_counter()
    sol = solve_ivp(
        lambda t, y: np.asarray(f(t, y, problem.args)),
        (problem.t0, problem.t1),
        np.asarray(problem.initial_values),
        method=method,
        rtol=rtol,
        atol=atol,
        jac=lambda t, y: np.asarray(jac(t, y, problem.args)),
    )
    return {
        "time_s": time.perf_counter() - start,
        "steps": len(sol.t) - 1,
        "success": bool(sol.success),
        "error": scaled_error(problem, sol.y[:, -1], rtol, atol),
    }


def case(cfg, name):
    problem = PROBLEMS[name]
    rtol, atol = problem.rtol, problem.atol
    fns = {n: solve_fn(lib, problem, "Kvaerno5", rtol, atol) for n, lib in LIBS.items()}
    samples, numbers = time_interleaved(fns, problem.y0, cfg.repeats, cfg.min_sample_s)
    times = {n: summary(s) for n, s in samples.items()}
    row = {"times": times, "calls_per_sample": numbers, "rtol": rtol, "atol": atol}
    row["ratio_ours_diffrax"] = ratio(times, "ours", "diffrax")
    for n, fn in fns.items():
        y1, accepted, rejected, ok, jacobians, factorisations = fn(problem.y0)
        row[n] = {
            "accepted": int(accepted),
            "rejected": int(rejected),
            "success": bool(ok),
            "error": scaled_error(problem, y1, rtol, atol),
            "jacobians": int(jacobians),
            "factorisations": int(factorisations),
        }
    warm = {n: [] for n in LIBS}
    for r in range(cfg.compile_repeats):
        for n in list(LIBS) if r % 2 == 0 else list(LIBS)[::-1]:
            warm[n].append(compile_time(LIBS[n], problem, "Kvaerno5", rtol, atol))
    row["compile_warm_s"] = {n: float(np.median(c)) for n, c in warm.items()}
    row["compile_warm_ratio"] = (
        row["compile_warm_s"]["ours"] / row["compile_warm_s"]["diffrax"]
    )
    row["compile_fresh"] = fresh_compile(name, cfg.compile_repeats)
    row["compile_ratio"] = row["compile_fresh"]["ratio"]
    row["scipy"] = {m: scipy_row(problem, m, rtol, atol) for m in ("Radau", "BDF")}
    return row


def sweep(cfg, name):
    """Error and run time of each solver of both libraries over `SWEEP_RTOLS`."""
    problem = PROBLEMS[name]
    scale = problem.atol / problem.rtol
    points = []
    for lib_name, lib in LIBS.items():
        for solver_name in SWEEP_SOLVERS[lib_name]:
            for rtol in SWEEP_RTOLS:
                fn = solve_fn(lib, problem, solver_name, rtol, rtol * scale)
                samples, _ = time_interleaved({"f": fn}, problem.y0, cfg.repeats, 0.0)
                y1, accepted, _, ok, _, _ = fn(problem.y0)
                points.append(
                    {
                        "library": lib_name,
                        "solver": solver_name,
                        "rtol": rtol,
                        "time_s": min(samples["f"]),
                        "success": bool(ok),
                        "accepted": int(accepted),
                        "abs_error": float(
                            np.max(
                                np.abs(np.asarray(y1) - np.asarray(problem.reference))
                            )
                        ),
                    }
                )
    return points


def _time_at(points, error):
    """The run time at `error` on the work-precision line of `points` (one
    solver of one library), interpolated in log-log; `None` outside it."""
    line = sorted((p["abs_error"], p["time_s"]) for p in points if p["success"])
    line = [(e, t) for e, t in line if e > 0]
    if len(line) < 2 or not line[0][0] <= error <= line[-1][0]:
        return None
    logs = np.log([e for e, _ in line])
    return float(np.exp(np.interp(np.log(error), logs, np.log([t for _, t in line]))))


def equal_accuracy(points):
    """Our fastest solver's time over Diffrax's fastest at equal error, at
    `EQUAL_ACCURACY_LEVELS` errors spread (log) over the range both reach."""

    def fastest(lib, error):
        times = [
            _time_at(
                [p for p in points if p["library"] == lib and p["solver"] == s], error
            )
            for s in SWEEP_SOLVERS[lib]
        ]
        times = [t for t in times if t is not None]
        return min(times) if times else None

    def reach(lib):
        errors = [
            p["abs_error"] for p in points if p["library"] == lib and p["success"]
        ]
        return (min(errors), max(errors)) if errors else (np.inf, 0.0)

    lo = max(reach("ours")[0], reach("diffrax")[0])
    hi = min(reach("ours")[1], reach("diffrax")[1])
    if not 0 < lo < hi:
        return {"levels": [], "median_ratio": None}
    levels = []
    for error in np.geomspace(lo, hi, EQUAL_ACCURACY_LEVELS):
        ours = fastest("ours", float(error))
        theirs = fastest("diffrax", float(error))
        if ours is not None and theirs is not None:
            levels.append({"error": float(error), "ours_s": ours, "diffrax_s": theirs})
    ratios = [v["ours_s"] / v["diffrax_s"] for v in levels]
    return {
        "levels": levels,
        "median_ratio": float(np.median(ratios)) if ratios else None,
    }


def report_sweeps(sweeps):
    print(f"\n{'problem':12} {'equal-accuracy ratio (our fastest / Diffrax fastest)'}")
    for name, points in sweeps.items():
        summary_ = equal_accuracy(points)
        ratios = [f"{v['ours_s'] / v['diffrax_s']:.2f}" for v in summary_["levels"]]
        median = summary_["median_ratio"]
        shown = "-" if median is None else f"{median:.2f}"
        print(f"{name:12} median {shown:>5}  at each error level: {', '.join(ratios)}")
    print(f"target: <= {TARGET_EQUAL_ACCURACY}")


def report(results):
    print(
        f"\n{'problem':12} {'ours ms':>9} {'Dfx ms':>9} {'run':>5} {'compile':>8} "
        f"{'warm':>5} "
        f"{'steps ours':>11} {'steps Dfx':>10} {'J/LU ours':>10} {'J/LU Dfx':>10} "
        f"{'err ours':>9} {'err Dfx':>9} "
        f"{'Radau ms':>9} {'err':>8} {'BDF ms':>8} {'err':>8}"
    )
    for name, r in results.items():
        t, sp = r["times"], r["scipy"]

        def err(x):
            return "-" if x is None else f"{x:.2g}"

        print(
            f"{name:12} {t['ours']['median_s'] * 1e3:9.2f} "
            f"{t['diffrax']['median_s'] * 1e3:9.2f} "
            f"{r['ratio_ours_diffrax']['paired']:5.2f} {r['compile_ratio']:8.2f} "
            f"{r['compile_warm_ratio']:5.2f} "
            f"{r['ours']['accepted']:>5}/{r['ours']['rejected']:<5} "
            f"{r['diffrax']['accepted']:>4}/{r['diffrax']['rejected']:<5} "
            f"{r['ours']['jacobians']:>4}/{r['ours']['factorisations']:<5} "
            f"{r['diffrax']['jacobians']:>4}/{r['diffrax']['factorisations']:<5} "
            f"{err(r['ours']['error']):>9} {err(r['diffrax']['error']):>9} "
            f"{sp['Radau']['time_s'] * 1e3:9.1f} {err(sp['Radau']['error']):>8} "
            f"{sp['BDF']['time_s'] * 1e3:8.1f} {err(sp['BDF']['error']):>8}"
        )
    print(
        f"targets (ours / Diffrax, Kvaerno5): run <= {TARGET_RUN}, "
        f"compile <= {TARGET_COMPILE} (first call, fresh processes; warm: a new "
        "jitted solve in this process); err in units of atol + rtol |reference|"
    )
    print("compile, median seconds over fresh processes (trace / lower / compile):")
    for name, r in results.items():
        parts = "   ".join(
            f"{lib} {m['total_s']:.2f} ({m['trace_s']:.2f} / {m['lower_s']:.2f} / "
            f"{m['compile_s']:.2f})"
            for lib, m in r["compile_fresh"]["medians"].items()
        )
        print(f"  {name:12} {parts}")


def plot(path, sweeps):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5 * len(sweeps), 4), layout="constrained")
    FigureCanvasAgg(fig)
    for k, (name, points) in enumerate(sweeps.items()):
        ax = fig.add_subplot(1, len(sweeps), k + 1)
        for i, solver_name in enumerate(SWEEP_SOLVERS["ours"]):
            for lib_name, style in (("ours", "-o"), ("diffrax", "--s")):
                if solver_name not in SWEEP_SOLVERS[lib_name]:
                    continue
                line = [
                    p
                    for p in points
                    if p["solver"] == solver_name
                    and p["library"] == lib_name
                    and p["success"]
                ]
                ax.loglog(
                    [p["time_s"] for p in line],
                    [max(p["abs_error"], 1e-300) for p in line],
                    style,
                    color=f"C{i}",
                    label=f"{lib_name} {solver_name}",
                    markersize=3,
                )
        ax.set_title(name)
        ax.set_xlabel("run time (s)")
        ax.set_ylabel("max abs error at t1")
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=120)


def _gmres_kvaerno5():
    """Our `Kvaerno5` with a Jacobian-free linear solver (GMRES on Jacobian-vector
    products, at each stage's guess: nothing kept across steps)."""
    import lineax as lx

    gmres = lx.GMRES(rtol=1e-8, atol=1e-10, max_steps=200, restart=40)
    finder = jd.with_stepsize_controller_tols(jd.VeryChord)(linear_solver=gmres)
    return jd.Kvaerno5(root_finder=finder)


def size_sweep(repeats):
    """`Kvaerno5` on the Brusselator over `SIZES`, ours (dense LU; and with
    GMRES, "ours_gmres") and Diffrax's: run time (median of `repeats` calls
    after compilation), steps, Jacobians and factorisations, and the time per
    step attempt."""
    rows = []
    variants = {"ours": (jd, None), "ours_gmres": (jd, _gmres_kvaerno5())}
    variants["diffrax"] = (diffrax, None)
    for n in SIZES:
        problem = brusselator_2d(n)
        row = {"grid": n, "states": 2 * n * n}
        for lib_name, (lib, solver) in variants.items():
            if lib_name == "diffrax" and n > DIFFRAX_MAX_SIZE:
                continue
            print(f"  sizes: {lib_name} N = {n}", file=sys.stderr, flush=True)
            fn = solve_fn(
                lib, problem, "Kvaerno5", problem.rtol, problem.atol, solver=solver
            )
            jax.block_until_ready(fn(problem.y0))
            samples = []
            for _ in range(repeats):
                start = time.perf_counter()
                out = jax.block_until_ready(fn(problem.y0))
                samples.append(time.perf_counter() - start)
            _, accepted, rejected, ok, jacobians, factorisations = out
            seconds = statistics.median(samples)
            row[lib_name] = {
                "time_s": seconds,
                "samples_s": samples,
                "accepted": int(accepted),
                "rejected": int(rejected),
                "success": bool(ok),
                "jacobians": int(jacobians),
                "factorisations": int(factorisations),
                "per_attempt_s": seconds / max(int(accepted) + int(rejected), 1),
            }
        rows.append(row)
    return rows


def report_sizes(rows):
    print(
        f"\n{'N':>3} {'states':>6} {'ours s':>8} {'Dfx s':>8} {'ratio':>6} "
        f"{'steps ours':>11} {'steps Dfx':>10} {'J/LU ours':>10} {'ours ms/att':>12} "
        f"{'growth':>7} {'GMRES s':>8}"
    )
    previous = None
    for row in rows:
        ours, dfx = row["ours"], row.get("diffrax")
        growth = "-"
        if previous is not None:
            growth = np.log(ours["per_attempt_s"] / previous[1]) / np.log(
                row["states"] / previous[0]
            )
            growth = f"{growth:.2f}"
        previous = (row["states"], ours["per_attempt_s"])
        dfx_s = "-" if dfx is None else f"{dfx['time_s']:.3f}"
        ratio_ = "-" if dfx is None else f"{ours['time_s'] / dfx['time_s']:.2f}"
        steps_dfx = "-" if dfx is None else f"{dfx['accepted']}/{dfx['rejected']}"
        print(
            f"{row['grid']:>3} {row['states']:>6} {ours['time_s']:8.3f} {dfx_s:>8} "
            f"{ratio_:>6} {ours['accepted']:>5}/{ours['rejected']:<5} {steps_dfx:>10} "
            f"{ours['jacobians']:>4}/{ours['factorisations']:<5} "
            f"{ours['per_attempt_s'] * 1e3:12.2f} {growth:>7} "
            f"{row['ours_gmres']['time_s']:8.3f}"
        )
    print(
        "growth: exponent of our time per step attempt in the number of states, "
        "between neighbouring sizes (dense LU: 3 once the factorisations dominate); "
        "GMRES: ours with a Jacobian-free linear solver"
    )


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--compile-worker":
        compile_worker(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--problems", default=",".join(NAMES))
    parser.add_argument("--plot", default=None, help="write the work-precision PNG")
    parser.add_argument(
        "--sizes", action="store_true", help="only the Brusselator size sweep"
    )
    args = parser.parse_args()
    if args.sizes:
        rows = size_sweep(repeats=3)
        report_sizes(rows)
        payload = {"meta": environment(), "sizes": rows}
        SIZES_PATH.write_text(json.dumps(payload, indent=1))
        print(f"wrote {SIZES_PATH}")
        return
    cfg = argparse.Namespace(
        repeats=3 if args.quick else 7,
        min_sample_s=0.02,
        compile_repeats=2 if args.quick else 7,
    )
    names = [n for n in args.problems.split(",") if n]
    results = {}
    for name in names:
        print(f"problem {name} ...", flush=True)
        results[name] = case(cfg, name)
    report(results)
    sweeps = {}
    if not args.quick or args.plot:
        for name in names:
            if PROBLEMS[name].reference_values is not None:
                print(f"sweep {name} ...", flush=True)
                sweeps[name] = sweep(cfg, name)
    if sweeps:
        report_sweeps(sweeps)
        for name, points in sweeps.items():
            results[name]["equal_accuracy"] = equal_accuracy(points)
    if args.plot:
        plot(args.plot, sweeps)
        print(f"wrote {args.plot}")
    if not args.quick:
        RESULTS_PATH.parent.mkdir(exist_ok=True)
        payload = {"meta": environment(), "cases": results, "sweeps": sweeps}
        RESULTS_PATH.write_text(json.dumps(payload, indent=1))
        print(f"wrote {RESULTS_PATH}")


if __name__ == "__main__":
    main()
